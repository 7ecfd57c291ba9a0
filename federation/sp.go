// Package federation is Calipso's SAML 2.0 service provider for Umbrella
// (the photon and neutron community's Shibboleth identity provider) and
// the "header mode" used behind Apache mod_shib. It is framework-free: the
// HTTP server owns routes and sessions and calls these handlers.
package federation

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/crewjam/saml"
	dsig "github.com/russellhaering/goxmldsig"
)

// maxRelayStateBytes keeps the request cookie well under browsers' 4 KiB.
const maxRelayStateBytes = 1024

// ServiceProvider is a SAML SP bound to one identity provider. It is safe
// for concurrent use.
type ServiceProvider struct {
	cfg         Config
	key         *rsa.PrivateKey
	cert        *x509.Certificate
	entityID    string
	metadataURL url.URL
	acsURL      url.URL
	sloURL      url.URL

	current atomic.Pointer[saml.ServiceProvider] // rebuilt whenever IdP metadata changes
	replay  *replayCache
	tracker requestTracker
	logouts requestTracker // the LogoutRequests this SP sent, answered at the SLO URL
	now     func() time.Time
	log     *slog.Logger
}

// New validates cfg, loads the SP key pair and the IdP metadata (fetching
// it with ctx when IdPMetadataURL is set).
func New(ctx context.Context, cfg Config) (*ServiceProvider, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	key, cert, err := parseKeyPair(cfg.KeyPEM, cfg.CertPEM)
	if err != nil {
		return nil, err
	}
	sp := &ServiceProvider{cfg: cfg, key: key, cert: cert, replay: newReplayCache(cfg.ReplayCacheSize), now: time.Now, log: cfg.Logger}
	if sp.log == nil {
		sp.log = slog.New(slog.DiscardHandler)
	}
	for _, e := range []struct {
		dst *url.URL
		rel string
	}{{&sp.metadataURL, cfg.MetadataPath}, {&sp.acsURL, cfg.ACSPath}, {&sp.sloURL, cfg.SLOPath}} {
		if *e.dst, err = cfg.resolve(e.rel); err != nil {
			return nil, err
		}
	}
	sp.entityID = cfg.EntityID
	if sp.entityID == "" {
		sp.entityID = sp.metadataURL.String()
	}
	sum := sha256.Sum256(append([]byte("calipso federation request cookie v1\x00"), x509.MarshalPKCS1PrivateKey(key)...))
	sp.tracker = requestTracker{key: sum[:], path: sp.acsURL.Path, secure: sp.acsURL.Scheme == "https", ttl: cfg.LoginTimeout}
	sp.logouts = requestTracker{prefix: logoutCookiePrefix, key: sum[:], path: sp.sloURL.Path, secure: sp.sloURL.Scheme == "https", ttl: logoutTimeout}

	data := cfg.IdPMetadataXML
	if len(data) == 0 {
		if data, err = sp.fetch(ctx); err != nil {
			return nil, err
		}
	}
	if err := sp.install(data); err != nil {
		return nil, err
	}
	return sp, nil
}

func parseKeyPair(keyPEM, certPEM []byte) (*rsa.PrivateKey, *x509.Certificate, error) {
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, nil, errors.New("federation: KeyPEM holds no PEM block")
	}
	var key *rsa.PrivateKey
	if k, err := x509.ParsePKCS1PrivateKey(kb.Bytes); err == nil {
		key = k
	} else if k8, err8 := x509.ParsePKCS8PrivateKey(kb.Bytes); err8 == nil {
		rk, ok := k8.(*rsa.PrivateKey)
		if !ok {
			return nil, nil, fmt.Errorf("federation: SP key is %T, need RSA (assertion decryption)", k8)
		}
		key = rk
	} else {
		return nil, nil, fmt.Errorf("federation: parse SP key: %w", err8)
	}
	cb, _ := pem.Decode(certPEM)
	if cb == nil {
		return nil, nil, errors.New("federation: CertPEM holds no PEM block")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("federation: parse SP certificate: %w", err)
	}
	if pub, ok := cert.PublicKey.(*rsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, nil, errors.New("federation: SP certificate does not match SP key")
	}
	return key, cert, nil
}

func (sp *ServiceProvider) fetch(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, sp.cfg.FetchTimeout)
	defer cancel()
	return fetchMetadata(ctx, sp.cfg.HTTPClient, sp.cfg.IdPMetadataURL)
}

// install parses IdP metadata and swaps in a fresh crewjam SP built on it.
func (sp *ServiceProvider) install(data []byte) error {
	idp, err := parseIdPMetadata(data, sp.cfg.IdPEntityID)
	if err != nil {
		return err
	}
	s := &saml.ServiceProvider{
		EntityID:          sp.entityID,
		Key:               sp.key,
		Certificate:       sp.cert,
		HTTPClient:        sp.cfg.HTTPClient,
		MetadataURL:       sp.metadataURL,
		AcsURL:            sp.acsURL,
		SloURL:            sp.sloURL,
		IDPMetadata:       idp,
		AuthnNameIDFormat: saml.UnspecifiedNameIDFormat, // let the IdP pick; the EAAHash comes as an attribute
		AllowIDPInitiated: sp.cfg.AllowIdPInitiated,
		SignatureMethod:   dsig.RSASHA256SignatureMethod,
		// The metadata publishes the SLO URL for both: IdPs send by either.
		LogoutBindings: []string{saml.HTTPRedirectBinding, saml.HTTPPostBinding},
		ValidateAudienceRestriction: func(a *saml.Assertion) error {
			return sp.checkAudience(a)
		},
	}
	if err := checkSigningCerts(idp); err != nil {
		return err
	}
	sp.current.Store(s)
	return nil
}

// Refresh re-fetches IdPMetadataURL. On failure the last good metadata
// stays in use and the error is returned. Without a URL it does nothing.
func (sp *ServiceProvider) Refresh(ctx context.Context) error {
	if sp.cfg.IdPMetadataURL == "" {
		return nil
	}
	data, err := sp.fetch(ctx)
	if err != nil {
		return err
	}
	return sp.install(data)
}

// RefreshLoop calls Refresh every RefreshInterval until ctx ends; run it in
// a goroutine. Failures are logged, the previous metadata keeps serving.
func (sp *ServiceProvider) RefreshLoop(ctx context.Context) {
	if sp.cfg.IdPMetadataURL == "" {
		return
	}
	t := time.NewTicker(sp.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := sp.Refresh(ctx); err != nil {
				sp.log.WarnContext(ctx, "idp metadata refresh failed, keeping previous copy", "url", sp.cfg.IdPMetadataURL, "err", err)
			}
		}
	}
}

// IdPEntityID is the entity ID of the identity provider in use.
func (sp *ServiceProvider) IdPEntityID() string { return sp.current.Load().IDPMetadata.EntityID }

// EntityID is this SP's entity ID.
func (sp *ServiceProvider) EntityID() string { return sp.entityID }

// ACSURL is where the IdP posts responses; route POSTs there to ConsumeAssertion.
func (sp *ServiceProvider) ACSURL() url.URL { return sp.acsURL }

// MetadataURL is where MetadataHandler should be routed.
func (sp *ServiceProvider) MetadataURL() url.URL { return sp.metadataURL }

// MetadataHandler serves the SP metadata to register with the IdP.
func (sp *ServiceProvider) MetadataHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		md := sp.current.Load().Metadata()
		for i := range md.SPSSODescriptors {
			d := &md.SPSSODescriptors[i]
			// Only HTTP-POST is consumed; do not advertise artifact resolution.
			acs := d.AssertionConsumerServices[:0]
			for _, e := range d.AssertionConsumerServices {
				if e.Binding == saml.HTTPPostBinding {
					acs = append(acs, e)
				}
			}
			d.AssertionConsumerServices = acs
		}
		buf, err := xml.MarshalIndent(md, "", "  ")
		if err != nil {
			sp.log.ErrorContext(r.Context(), "marshal sp metadata", "err", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/samlmetadata+xml")
		_, _ = w.Write(append([]byte(xml.Header), buf...))
	})
}

// StartLogin answers a 302 to the IdP with a signed AuthnRequest
// (HTTP-Redirect binding). The request ID and relayState are kept in a
// signed, HttpOnly cookie scoped to the ACS; ConsumeAssertion returns the
// relayState given here, never one taken from the IdP's post.
func (sp *ServiceProvider) StartLogin(w http.ResponseWriter, r *http.Request, relayState string) error {
	if len(relayState) > maxRelayStateBytes {
		return fmt.Errorf("start login: relay state longer than %d bytes", maxRelayStateBytes)
	}
	s := sp.current.Load()
	sso := s.GetSSOBindingLocation(saml.HTTPRedirectBinding)
	if sso == "" {
		return errors.New("start login: identity provider has no HTTP-Redirect SSO endpoint")
	}
	req, err := s.MakeAuthenticationRequest(sso, saml.HTTPRedirectBinding, saml.HTTPPostBinding)
	if err != nil {
		return fmt.Errorf("start login: make AuthnRequest: %w", err)
	}
	redirect, err := req.Redirect("", s)
	if err != nil {
		return fmt.Errorf("start login: sign AuthnRequest: %w", err)
	}
	now := sp.now()
	if err := sp.tracker.track(w, r, pendingLogin{ID: req.ID, RelayState: relayState, Expires: now.Add(sp.cfg.LoginTimeout).Unix()}, now); err != nil {
		return fmt.Errorf("start login: remember request: %w", err)
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, redirect.String(), http.StatusFound)
	return nil
}
