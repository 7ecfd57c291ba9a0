package federation

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/crewjam/saml"
	xrv "github.com/mattermost/xml-roundtrip-validator"
)

// maxMetadataBytes bounds a fetched metadata document; federation
// aggregates are large, a single IdP's metadata is a few KiB.
const maxMetadataBytes = 64 << 20

// parseIdPMetadata accepts an EntityDescriptor or an (aggregate, possibly
// nested) EntitiesDescriptor and returns the IdP's entity.
func parseIdPMetadata(data []byte, entityID string) (*saml.EntityDescriptor, error) {
	if err := xrv.Validate(bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("idp metadata: %w", err)
	}
	var candidates []saml.EntityDescriptor
	var single saml.EntityDescriptor
	if err := xml.Unmarshal(data, &single); err == nil {
		candidates = append(candidates, single)
	} else {
		var aggregate saml.EntitiesDescriptor
		if err2 := xml.Unmarshal(data, &aggregate); err2 != nil {
			return nil, fmt.Errorf("idp metadata: neither EntityDescriptor (%v) nor EntitiesDescriptor (%w)", err, err2)
		}
		candidates = flattenEntities(aggregate, candidates)
	}
	var found []saml.EntityDescriptor
	for _, e := range candidates {
		if len(e.IDPSSODescriptors) == 0 {
			continue
		}
		if entityID == "" || e.EntityID == entityID {
			found = append(found, e)
		}
	}
	switch {
	case len(found) == 1:
		return &found[0], nil
	case len(found) == 0 && entityID != "":
		return nil, fmt.Errorf("idp metadata: no identity provider %q", entityID)
	case len(found) == 0:
		return nil, errors.New("idp metadata: no identity provider (IDPSSODescriptor) found")
	default:
		return nil, fmt.Errorf("idp metadata: %d identity providers, set IdPEntityID", len(found))
	}
}

func flattenEntities(d saml.EntitiesDescriptor, into []saml.EntityDescriptor) []saml.EntityDescriptor {
	into = append(into, d.EntityDescriptors...)
	for _, nested := range d.EntitiesDescriptors {
		into = flattenEntities(nested, into)
	}
	return into
}

func fetchMetadata(ctx context.Context, client *http.Client, metadataURL string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metadataURL, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch idp metadata: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch idp metadata %s: %w", metadataURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch idp metadata %s: status %s", metadataURL, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxMetadataBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetch idp metadata %s: %w", metadataURL, err)
	}
	if len(data) > maxMetadataBytes {
		return nil, fmt.Errorf("fetch idp metadata %s: larger than %d bytes", metadataURL, maxMetadataBytes)
	}
	return data, nil
}

// checkSigningCerts fails early when the IdP metadata carries no usable
// signing certificate, instead of refusing every login later.
func checkSigningCerts(idp *saml.EntityDescriptor) error {
	_, err := idpSigningCerts(idp)
	if err != nil && !strings.HasPrefix(err.Error(), "idp metadata:") {
		err = fmt.Errorf("idp metadata: signing certificate: %w", err)
	}
	return err
}
