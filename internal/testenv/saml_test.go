package testenv

import (
	"encoding/json"
	"encoding/xml"
	"net/http"
	"net/http/httptest"
	"strings"
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

// headerEcho is a backend that answers the request headers it got, as JSON.
func headerEcho(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"path": r.URL.Path, "headers": r.Header})
	}))
	t.Cleanup(srv.Close)
	return srv
}

type samlPair struct {
	idp     *SAMLIdP
	sp      *ShibSP
	backend *httptest.Server
}

func startSAMLPair(t *testing.T) samlPair {
	backend := headerEcho(t)
	idp := StartSAMLIdP(t)
	sp := StartShibbolethSP(t, ShibSPOptions{IdPMetadataXML: idp.MetadataXML(t), Backend: backend.URL})
	idp.AddSP(t, sp.MetadataXML(t))
	idp.AddUser("alice", "alice-pw", map[string][]string{
		"uid":                  {"alice"},
		"mail":                 {"alice@example.org"},
		"eduPersonTargetedID":  {"hash-of-alice"},
		"eduPersonEntitlement": {"urn:x:a", "urn:x:b"},
		"displayName":          {"Alice Liddell"},
	})
	return samlPair{idp, sp, backend}
}

// echoed is what headerEcho answered.
func echoed(t *testing.T, body []byte) (path string, h http.Header) {
	t.Helper()
	var e struct {
		Path    string      `json:"path"`
		Headers http.Header `json:"headers"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("not the backend's answer: %v: %s", err, body)
	}
	return e.Path, e.Headers
}

func TestShibbolethSPLoginAndLogout(t *testing.T) {
	p := startSAMLPair(t)
	protected := p.sp.BaseURL + "calipsoplus-services/umbrella/frontend/"
	b := NewSAMLBrowser(t)
	if p.sp.SessionActive(t, b) {
		t.Fatal("a session before any login")
	}
	landed, asked := b.Browse(t, protected, "", "alice", "alice-pw")
	if landed != protected || b.LastStatus != 200 || !asked {
		t.Fatalf("login: landed at %s (%d, password asked %v): %s\ntrace:\n%s\n%s%s", landed, b.LastStatus, asked, b.LastBody, strings.Join(b.Trace, "\n"), p.idp.LogTail(), p.sp.LogTail())
	}
	path, h := echoed(t, b.LastBody)
	if path != "/calipsoplus-services/umbrella/frontend/" {
		t.Errorf("backend path %q", path)
	}
	for name, want := range map[string]string{"Eaahash": "hash-of-alice", "Uid": "alice", "Mail": "alice@example.org",
		"Entitlement": "urn:x:a;urn:x:b", "Displayname": "Alice Liddell"} {
		if got := h.Get(name); got != want {
			t.Errorf("backend header %s = %q; want %q (headers %v)", name, got, want, h)
		}
	}
	sess := p.sp.Session(t, b)
	if sess == nil {
		t.Fatal("no Shibboleth session after the login")
	}
	t.Logf("session: %+v", sess)

	// SP-initiated single logout.
	returnTo := p.backend.URL + "/logged-out"
	landed, _ = b.Browse(t, p.sp.LogoutURL(returnTo), returnTo, "", "")
	if landed != returnTo {
		t.Fatalf("logout landed at %s (%d): %s\ntrace:\n%s\n%s%s", landed, b.LastStatus, b.LastBody, strings.Join(b.Trace, "\n"), p.idp.LogTail(), p.sp.LogTail())
	}
	if p.sp.SessionActive(t, b) {
		t.Error("the Shibboleth session outlived the logout")
	}
	_, asked = b.Browse(t, protected, "", "alice", "alice-pw")
	if !asked {
		t.Errorf("the IdP session outlived the single logout: no password asked\ntrace:\n%s", strings.Join(b.Trace, "\n"))
	}
	if !p.sp.SessionActive(t, b) {
		t.Error("no session after the second login")
	}
	// A third visit: the SP session stands, no IdP round.
	_, asked = b.Browse(t, protected, "", "alice", "alice-pw")
	if asked {
		t.Error("password asked again while the session stands")
	}
}
