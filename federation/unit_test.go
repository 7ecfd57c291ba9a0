package federation

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crewjam/saml"
)

func TestReplayCache(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	t.Run("remembers until expiry", func(t *testing.T) {
		c := newReplayCache(10)
		if err := c.remember("a", now.Add(time.Minute), now); err != nil {
			t.Fatal(err)
		}
		if err := c.remember("a", now.Add(time.Minute), now.Add(59*time.Second)); !errors.Is(err, ErrReplay) {
			t.Fatalf("replay before expiry: %v", err)
		}
		if err := c.remember("a", now.Add(3*time.Minute), now.Add(time.Minute)); err != nil {
			t.Fatalf("after expiry the assertion is refused as expired anyway, id may be reused: %v", err)
		}
	})
	t.Run("bounded, fails closed, frees expired room", func(t *testing.T) {
		c := newReplayCache(3)
		for i := range 3 {
			if err := c.remember(fmt.Sprint(i), now.Add(time.Duration(i+1)*time.Minute), now); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.remember("x", now.Add(time.Hour), now); !errors.Is(err, ErrReplayCacheFull) {
			t.Fatalf("full cache: %v", err)
		}
		if err := c.remember("x", now.Add(time.Hour), now.Add(90*time.Second)); err != nil {
			t.Fatalf("after one expiry: %v", err)
		}
		if c.len() != 3 {
			t.Fatalf("len = %d", c.len())
		}
	})
	t.Run("concurrent: exactly one winner per id", func(t *testing.T) {
		c := newReplayCache(1000)
		var wins atomic.Int32
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				if c.remember("same", now.Add(time.Minute), now) == nil {
					wins.Add(1)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("%d goroutines accepted the same assertion", wins.Load())
		}
	})
}

func TestHeaderMode(t *testing.T) {
	h := HeaderMode{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.5/32"), netip.MustParsePrefix("::1/128")},
		ValuesHeader: "entitlement"}
	tests := []struct {
		name, remote string
		headers      map[string]string
		want         Identity
		ok           bool
	}{
		{"trusted proxy", "10.0.0.5:41000", map[string]string{"EAAHash": "h1", "uid": "jdoe", "mail": "a@b.c;d@e.f"},
			Identity{EAAHash: "h1", UID: "jdoe", Email: "a@b.c"}, true},
		{"role attribute's values", "10.0.0.5:41000", map[string]string{"EAAHash": "h1", "entitlement": "urn:b;urn:a;;urn:b"},
			Identity{EAAHash: "h1", Values: []string{"urn:a", "urn:b"}}, true},
		{"trusted ipv6 proxy", "[::1]:41000", map[string]string{"EAAHash": "h1"}, Identity{EAAHash: "h1"}, true},
		{"ipv4-mapped trusted proxy", "[::ffff:10.0.0.5]:41000", map[string]string{"EAAHash": "h1"}, Identity{EAAHash: "h1"}, true},
		{"untrusted client sends the headers", "203.0.113.7:5000", map[string]string{"EAAHash": "h1", "uid": "admin"}, Identity{}, false},
		{"neighbour of the proxy", "10.0.0.6:41000", map[string]string{"EAAHash": "h1"}, Identity{}, false},
		{"no hash", "10.0.0.5:41000", map[string]string{"uid": "jdoe"}, Identity{}, false},
		{"two hashes", "10.0.0.5:41000", map[string]string{"EAAHash": "h1;h2"}, Identity{}, false},
		{"escaped semicolon is one value", "10.0.0.5:41000", map[string]string{"EAAHash": `h1\;x`}, Identity{EAAHash: "h1;x"}, true},
		{"garbage remote address", "not-an-address", map[string]string{"EAAHash": "h1"}, Identity{}, false},
		{"markup in the hash", "10.0.0.5:41000", map[string]string{"EAAHash": "<script>alert(1)</script>"}, Identity{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/umbrella/session/", nil)
			r.RemoteAddr = tt.remote
			for k, v := range tt.headers {
				r.Header.Set(k, v)
			}
			got, ok := h.Identity(r)
			if ok != tt.ok || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Identity = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
	if _, ok := (HeaderMode{}).Identity(func() *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("EAAHash", "h1")
		return r
	}()); ok {
		t.Fatal("no trusted proxies configured, yet headers believed")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	testKeys(t)
	keyPEM, certPEM := spKeys.PEM()
	_, otherCert := bad.PEM()
	idp := newTestIdP(t, false)
	base, _ := url.Parse("https://calipso.example/calipsoplus-services/")
	good := func() Config {
		return Config{BaseURL: base, KeyPEM: keyPEM, CertPEM: certPEM, IdPMetadataXML: idp.metadataXML()}
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no base url", func(c *Config) { c.BaseURL = nil }, "BaseURL"},
		{"relative base url", func(c *Config) { c.BaseURL = &url.URL{Path: "/x/"} }, "BaseURL"},
		{"no key", func(c *Config) { c.KeyPEM = nil }, "KeyPEM"},
		{"garbage key", func(c *Config) { c.KeyPEM = []byte("nope") }, "PEM"},
		{"cert of another key", func(c *Config) { c.CertPEM = otherCert }, "does not match"},
		{"no idp metadata", func(c *Config) { c.IdPMetadataXML = nil }, "IdPMetadata"},
		{"metadata without idp", func(c *Config) {
			c.IdPMetadataXML = []byte(`<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" entityID="x"/>`)
		}, "no identity provider"},
		{"unreachable metadata url", func(c *Config) { c.IdPMetadataXML, c.IdPMetadataURL = nil, "http://127.0.0.1:1/md" }, "fetch idp metadata"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good()
			tt.change(&cfg)
			_, err := New(t.Context(), cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New error = %v, want it to mention %q", err, tt.want)
			}
		})
	}
	if _, err := New(t.Context(), good()); err != nil {
		t.Fatalf("good config refused: %v", err)
	}
}

func TestMetadataHandler(t *testing.T) {
	f := newFixture(t, nil)
	rec := httptest.NewRecorder()
	f.sp.MetadataHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/saml/metadata", nil))
	var md saml.EntityDescriptor
	if err := xml.Unmarshal(rec.Body.Bytes(), &md); err != nil {
		t.Fatalf("metadata does not parse: %v\n%s", err, rec.Body)
	}
	wantEntity := f.server.URL + testBasePath + "saml/metadata"
	if md.EntityID != wantEntity || f.sp.EntityID() != wantEntity {
		t.Errorf("entityID = %q, want %q", md.EntityID, wantEntity)
	}
	d := md.SPSSODescriptors[0]
	if len(d.AssertionConsumerServices) != 1 || d.AssertionConsumerServices[0].Binding != saml.HTTPPostBinding ||
		d.AssertionConsumerServices[0].Location != f.server.URL+testBasePath+"saml/acs" {
		t.Errorf("ACS endpoints = %+v", d.AssertionConsumerServices)
	}
	uses := map[string]bool{}
	for _, kd := range d.KeyDescriptors {
		uses[kd.Use] = len(kd.KeyInfo.X509Data.X509Certificates) == 1
	}
	if !uses["signing"] || !uses["encryption"] {
		t.Errorf("key descriptors = %+v", uses)
	}
	if d.AuthnRequestsSigned == nil || !*d.AuthnRequestsSigned || d.WantAssertionsSigned == nil || !*d.WantAssertionsSigned {
		t.Errorf("signing flags = %v %v", d.AuthnRequestsSigned, d.WantAssertionsSigned)
	}
}

func TestMetadataRefresh(t *testing.T) {
	idpA, idpB := newTestIdP(t, false), newTestIdP(t, false)
	var (
		mu     sync.Mutex
		status = http.StatusOK
		serve  = idpA.metadataXML()
	)
	mdServer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.WriteHeader(status)
		w.Write(serve)
	}))
	t.Cleanup(mdServer.Close)
	keyPEM, certPEM := spKeys.PEM()
	base, _ := url.Parse("https://calipso.example/")
	sp, err := New(t.Context(), Config{BaseURL: base, KeyPEM: keyPEM, CertPEM: certPEM, IdPMetadataURL: mdServer.URL})
	if err != nil {
		t.Fatal(err)
	}
	if sp.IdPEntityID() != idpA.metadataURL() {
		t.Fatalf("idp = %s", sp.IdPEntityID())
	}
	mu.Lock()
	status = http.StatusInternalServerError
	mu.Unlock()
	if err := sp.Refresh(t.Context()); err == nil {
		t.Fatal("failed refresh reported no error")
	}
	if sp.IdPEntityID() != idpA.metadataURL() {
		t.Fatalf("last good metadata dropped: %s", sp.IdPEntityID())
	}
	mu.Lock()
	status, serve = http.StatusOK, []byte("<garbage")
	mu.Unlock()
	if err := sp.Refresh(t.Context()); err == nil || sp.IdPEntityID() != idpA.metadataURL() {
		t.Fatalf("garbage metadata: err %v, idp %s", err, sp.IdPEntityID())
	}
	mu.Lock()
	serve = []byte(`<EntitiesDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata">` +
		`<EntitiesDescriptor>` + string(idpB.metadataXML()) + `</EntitiesDescriptor></EntitiesDescriptor>`)
	mu.Unlock()
	if err := sp.Refresh(t.Context()); err != nil {
		t.Fatalf("refresh from aggregate: %v", err)
	}
	if sp.IdPEntityID() != idpB.metadataURL() {
		t.Fatalf("new metadata not installed: %s", sp.IdPEntityID())
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { sp.RefreshLoop(ctx); close(done) }()
	cancel()
	<-done
}

func TestAggregateNeedsEntityID(t *testing.T) {
	a, b := newTestIdP(t, false), newTestIdP(t, false)
	agg := []byte(`<EntitiesDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata">` + string(a.metadataXML()) + string(b.metadataXML()) + `</EntitiesDescriptor>`)
	if _, err := parseIdPMetadata(agg, ""); err == nil || !strings.Contains(err.Error(), "IdPEntityID") {
		t.Fatalf("ambiguous aggregate: %v", err)
	}
	got, err := parseIdPMetadata(agg, b.metadataURL())
	if err != nil || got.EntityID != b.metadataURL() {
		t.Fatalf("select by entity id: %v %v", got, err)
	}
}

func TestConsumeAssertionBadRequests(t *testing.T) {
	f := newFixture(t, nil)
	tests := []struct {
		name   string
		method string
		body   string
	}{
		{"GET", http.MethodGet, ""},
		{"no SAMLResponse", http.MethodPost, "RelayState=x"},
		{"not base64", http.MethodPost, "SAMLResponse=%%%"},
		{"not xml", http.MethodPost, "SAMLResponse=bm90IHhtbA=="},
		{"oversized", http.MethodPost, "SAMLResponse=" + strings.Repeat("A", maxFormBytes+10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, f.server.URL+testBasePath+"saml/acs", strings.NewReader(tt.body))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			_, _, err := f.sp.ConsumeAssertion(httptest.NewRecorder(), r)
			if !errors.Is(err, ErrMalformed) || !errors.Is(err, ErrInvalidResponse) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestAttributeNamesOnly(t *testing.T) {
	def := DefaultAttributeNames()
	got := def.Only("urn:hash", "", "mail", "")
	if len(got.EAAHash) != 1 || got.EAAHash[0] != "urn:hash" || len(got.Email) != 1 || got.Email[0] != "mail" {
		t.Errorf("Only: %+v", got)
	}
	if fmt.Sprint(got.UID) != fmt.Sprint(def.UID) || fmt.Sprint(got.Name) != fmt.Sprint(def.Name) {
		t.Errorf("Only changed the attributes left empty: %+v", got)
	}
	if fmt.Sprint(DefaultAttributeNames().EAAHash) != fmt.Sprint(def.EAAHash) {
		t.Error("Only changed its receiver's defaults")
	}
}

func TestCheckHash(t *testing.T) {
	for _, tt := range []struct {
		hash string
		ok   bool
	}{
		{"b0744680-2aa3-4b12-8627-95d23e5e4af9", true},
		{"https://idp.example/idp!https://sp.example/sp!AbC+/=", true}, // eduPersonTargetedID
		{"jdoe42@facility.example", true},                              // eduPersonUniqueId
		{"<b>x</b>", false},
		{`h"onmouseover="x`, false},
		{"a'b", false},
		{"a&amp;b", false},
		{"line\nbreak", false},
		{"nul\x00", false},
	} {
		err := CheckHash(tt.hash)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrMarkupInHash)) {
			t.Errorf("CheckHash(%q) = %v, want ok %v", tt.hash, err, tt.ok)
		}
	}
}

// TestHeaderHashWithMarkupIsLogged: the refusal says why in the log, not only by
// ignoring the headers.
func TestHeaderHashWithMarkupIsLogged(t *testing.T) {
	var logs strings.Builder
	h := HeaderMode{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.5/32")}, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	r := httptest.NewRequest(http.MethodGet, "/umbrella/frontend/", nil)
	r.RemoteAddr = "10.0.0.5:41000"
	r.Header.Set("EAAHash", "x<svg onload=alert(1)>")
	if _, ok := h.Identity(r); ok {
		t.Fatal("hash with markup accepted")
	}
	if !strings.Contains(logs.String(), "markup") {
		t.Errorf("log does not say why: %q", logs.String())
	}
}
