package testenv

import (
	"encoding/xml"
	"testing"
)

// samlMetadata is what the tests read of a SAML 2.0 EntityDescriptor.
type samlMetadata struct {
	XMLName  xml.Name `xml:"urn:oasis:names:tc:SAML:2.0:metadata EntityDescriptor"`
	EntityID string   `xml:"entityID,attr"`
	IdP      []struct {
		SSO []samlEndpoint `xml:"SingleSignOnService"`
		SLO []samlEndpoint `xml:"SingleLogoutService"`
	} `xml:"IDPSSODescriptor"`
	SP []struct {
		ACS []samlEndpoint `xml:"AssertionConsumerService"`
		SLO []samlEndpoint `xml:"SingleLogoutService"`
	} `xml:"SPSSODescriptor"`
}

type samlEndpoint struct {
	Binding  string `xml:"Binding,attr"`
	Location string `xml:"Location,attr"`
}

func TestSAMLIdPMetadata(t *testing.T) {
	idp := StartSAMLIdP(t)
	var md samlMetadata
	raw := idp.MetadataXML(t)
	if err := xml.Unmarshal(raw, &md); err != nil {
		t.Fatalf("IdP metadata: %v\n%s", err, raw)
	}
	if md.EntityID != idp.EntityID {
		t.Errorf("entityID %q; want %q", md.EntityID, idp.EntityID)
	}
	if len(md.IdP) != 1 || len(md.IdP[0].SSO) == 0 || len(md.IdP[0].SLO) == 0 {
		t.Fatalf("no IDPSSODescriptor with SingleSignOnService and SingleLogoutService:\n%s", raw)
	}
	t.Logf("%s", raw)
}
