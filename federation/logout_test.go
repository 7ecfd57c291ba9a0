package federation

import (
	"bytes"
	"compress/flate"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
	dsig "github.com/russellhaering/goxmldsig"
)

const transientFormat = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"

// idpRedirect is the IdP's HTTP-Redirect message to dest, signed over the query with
// k (or unsigned when k is nil), as SimpleSAMLphp and Shibboleth send them.
func idpRedirect(t *testing.T, k *keyPair, dest, param, message, relayState, sigAlg string) string {
	t.Helper()
	doc := etree.NewDocument()
	if err := doc.ReadFromString(message); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dest)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := deflate(doc)
	if err != nil {
		t.Fatal(err)
	}
	q := param + "=" + url.QueryEscape(base64.StdEncoding.EncodeToString(raw))
	if relayState != "" {
		q += "&RelayState=" + url.QueryEscape(relayState)
	}
	if k != nil {
		q += "&SigAlg=" + url.QueryEscape(sigAlg)
		sum := sha256.Sum256([]byte(q))
		sig, err := rsa.SignPKCS1v15(rand.Reader, k.Key, crypto.SHA256, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		q += "&Signature=" + url.QueryEscape(base64.StdEncoding.EncodeToString(sig))
	}
	u.RawQuery = q
	return u.String()
}

func deflate(doc *etree.Document) ([]byte, error) {
	var b bytes.Buffer
	w, err := flate.NewWriter(&b, flate.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := doc.WriteTo(w); err != nil {
		return nil, err
	}
	err = w.Close()
	return b.Bytes(), err
}

func logoutRequestXML(id, issuer, destination string, at time.Time) string {
	return fmt.Sprintf(`<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="%s" Version="2.0" IssueInstant="%s" Destination="%s"><saml:Issuer>%s</saml:Issuer><saml:NameID Format="%s">transient-4711</saml:NameID><samlp:SessionIndex>idx-1</samlp:SessionIndex></samlp:LogoutRequest>`,
		id, at.UTC().Format(time.RFC3339), destination, issuer, transientFormat)
}

func logoutResponseXML(id, inResponseTo, issuer, destination string, at time.Time) string {
	return fmt.Sprintf(`<samlp:LogoutResponse xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="%s" InResponseTo="%s" Version="2.0" IssueInstant="%s" Destination="%s"><saml:Issuer>%s</saml:Issuer><samlp:Status><samlp:StatusCode Value="%s"/></samlp:Status></samlp:LogoutResponse>`,
		id, inResponseTo, at.UTC().Format(time.RFC3339), destination, issuer, saml.StatusSuccess)
}

// TestSingleLogout: the SP's LogoutRequest to the IdP (SP-initiated) is signed over
// the query and names the session; the IdP's answer is accepted only for a logout
// this browser started; the IdP's own LogoutRequests (IdP-initiated) are accepted
// only signed by the IdP, fresh, for this SP and once; the SP's LogoutResponse is
// signed and answers the request.
func TestSingleLogout(t *testing.T) {
	testKeys(t)
	idp := newTestIdP(t, true)
	keyPEM, certPEM := spKeys.PEM()
	base, _ := url.Parse("https://calipso.example/calipsoplus-services/")
	sp, err := New(t.Context(), Config{BaseURL: base, KeyPEM: keyPEM, CertPEM: certPEM, IdPMetadataXML: idp.metadataXML()})
	if err != nil {
		t.Fatal(err)
	}
	issuer := idp.idp.MetadataURL.String()
	slo := sp.SLOURL()
	spCerts := []*x509.Certificate{spKeys.Cert}

	// The SP publishes its SLO URL for both bindings.
	rec := httptest.NewRecorder()
	sp.MetadataHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if md := rec.Body.String(); strings.Count(md, `<SingleLogoutService `) != 2 || !strings.Contains(md, ` Location="`+slo.String()+`"`) {
		t.Errorf("metadata does not publish the SLO URL for HTTP-Redirect and HTTP-POST:\n%s", md)
	}

	rec = httptest.NewRecorder()
	err = sp.StartLogout(rec, httptest.NewRequest(http.MethodGet, "https://calipso.example/Shibboleth.sso/Logout", nil),
		Session{NameID: "transient-4711", NameIDFormat: transientFormat, SessionIndex: "idx-1"}, "https://frontend.example/")
	if err != nil {
		t.Fatal(err)
	}
	loc, _ := url.Parse(rec.Header().Get("Location"))
	if rec.Code != http.StatusFound || loc.Host != idp.idp.LogoutURL.Host || loc.Path != "/idp/slo" {
		t.Fatalf("StartLogout = %d %s", rec.Code, loc)
	}
	body, relay, err := verifyRedirect(loc.RawQuery, spCerts)
	if err != nil {
		t.Fatalf("the LogoutRequest's query signature: %v", err)
	}
	if relay != "" {
		t.Errorf("the relay state %q went to the IdP: it stays in the SP's cookie", relay)
	}
	var sent saml.LogoutRequest
	if err := xml.Unmarshal(body, &sent); err != nil {
		t.Fatal(err)
	}
	if sent.NameID == nil || sent.NameID.Value != "transient-4711" || sent.NameID.Format != transientFormat ||
		sent.SessionIndex == nil || sent.SessionIndex.Value != "idx-1" || sent.Issuer.Value != sp.EntityID() || sent.Destination != idp.idp.LogoutURL.String() {
		t.Errorf("LogoutRequest = %s", body)
	}
	pending := rec.Result().Cookies()
	if len(pending) != 1 || pending[0].Path != slo.Path || !pending[0].HttpOnly {
		t.Fatalf("pending logout cookie = %+v", pending)
	}

	consume := func(target string, cookies []*http.Cookie) (LogoutMessage, *httptest.ResponseRecorder, error) {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		for _, c := range cookies {
			r.AddCookie(c)
		}
		rec := httptest.NewRecorder()
		m, err := sp.ConsumeLogout(rec, r)
		return m, rec, err
	}
	t.Run("the IdP's answer", func(t *testing.T) {
		answer := idpRedirect(t, &idpKeys, slo.String(), "SAMLResponse", logoutResponseXML("r1", sent.ID, issuer, slo.String(), time.Now()), "", dsig.RSASHA256SignatureMethod)
		if _, _, err := consume(answer, nil); !errors.Is(err, ErrNoPendingLogout) {
			t.Errorf("an answer to a logout another browser started: %v", err)
		}
		m, rec, err := consume(answer, pending)
		if err != nil {
			t.Fatal(err)
		}
		if m.Request || m.RelayState != "https://frontend.example/" || m.Status != saml.StatusSuccess {
			t.Errorf("message = %+v", m)
		}
		if c := rec.Result().Cookies(); len(c) != 1 || c[0].MaxAge >= 0 {
			t.Errorf("the pending logout is not forgotten: %+v", c)
		}
		forged := idpRedirect(t, &bad, slo.String(), "SAMLResponse", logoutResponseXML("r2", sent.ID, issuer, slo.String(), time.Now()), "", dsig.RSASHA256SignatureMethod)
		if _, _, err := consume(forged, pending); !errors.Is(err, ErrSignature) {
			t.Errorf("an answer signed by another key: %v", err)
		}
	})

	now := time.Now()
	request := func(id string) string { return logoutRequestXML(id, issuer, slo.String(), now) }
	postOf := func(t *testing.T, k *keyPair, message string) *http.Request {
		doc := etree.NewDocument()
		if err := doc.ReadFromString(message); err != nil {
			t.Fatal(err)
		}
		el := doc.Root()
		if k != nil {
			el = sign(t, *k, el)
		}
		out := etree.NewDocument()
		out.SetRoot(el)
		form := url.Values{"SAMLRequest": {encode(t, out)}, "RelayState": {"idp-state"}}
		r := httptest.NewRequest(http.MethodPost, slo.String(), strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return r
	}
	tampered := func() string {
		u := idpRedirect(t, &idpKeys, slo.String(), "SAMLRequest", request("tampered"), "", dsig.RSASHA256SignatureMethod)
		other := idpRedirect(t, nil, slo.String(), "SAMLRequest", logoutRequestXML("tampered", issuer, slo.String(), now.Add(time.Second)), "", "")
		parsed, _ := url.Parse(u)
		o, _ := url.Parse(other)
		msg, _, _ := strings.Cut(o.RawQuery, "&")
		_, rest, _ := strings.Cut(parsed.RawQuery, "&")
		parsed.RawQuery = msg + "&" + rest
		return parsed.String()
	}()
	for _, tt := range []struct {
		name string
		req  func(t *testing.T) *http.Request
		want error // nil: accepted
	}{
		{"redirect, signed by the IdP", func(t *testing.T) *http.Request {
			return httptest.NewRequest(http.MethodGet, idpRedirect(t, &idpKeys, slo.String(), "SAMLRequest", request("q1"), "idp-state", dsig.RSASHA256SignatureMethod), nil)
		}, nil},
		{"replayed", func(t *testing.T) *http.Request {
			return httptest.NewRequest(http.MethodGet, idpRedirect(t, &idpKeys, slo.String(), "SAMLRequest", request("q1"), "idp-state", dsig.RSASHA256SignatureMethod), nil)
		}, ErrReplay},
		{"POST, signed by the IdP", func(t *testing.T) *http.Request { return postOf(t, &idpKeys, request("q2")) }, nil},
		{"POST, unsigned", func(t *testing.T) *http.Request { return postOf(t, nil, request("q3")) }, ErrUnsigned},
		{"POST, signed by another key", func(t *testing.T) *http.Request { return postOf(t, &bad, request("q4")) }, ErrSignature},
		{"redirect, unsigned", func(t *testing.T) *http.Request {
			return httptest.NewRequest(http.MethodGet, idpRedirect(t, nil, slo.String(), "SAMLRequest", request("q5"), "", ""), nil)
		}, ErrUnsigned},
		{"redirect, signed by another key", func(t *testing.T) *http.Request {
			return httptest.NewRequest(http.MethodGet, idpRedirect(t, &bad, slo.String(), "SAMLRequest", request("q6"), "", dsig.RSASHA256SignatureMethod), nil)
		}, ErrSignature},
		{"redirect, message changed after signing", func(t *testing.T) *http.Request { return httptest.NewRequest(http.MethodGet, tampered, nil) }, ErrSignature},
		{"redirect, SHA-1", func(t *testing.T) *http.Request {
			return httptest.NewRequest(http.MethodGet, idpRedirect(t, &idpKeys, slo.String(), "SAMLRequest", request("q7"), "", dsig.RSASHA1SignatureMethod), nil)
		}, ErrSignature},
		{"another issuer", func(t *testing.T) *http.Request {
			return httptest.NewRequest(http.MethodGet, idpRedirect(t, &idpKeys, slo.String(), "SAMLRequest", logoutRequestXML("q8", "https://rogue.example/", slo.String(), now), "", dsig.RSASHA256SignatureMethod), nil)
		}, ErrIssuer},
		{"for another SP", func(t *testing.T) *http.Request {
			return httptest.NewRequest(http.MethodGet, idpRedirect(t, &idpKeys, slo.String(), "SAMLRequest", logoutRequestXML("q9", issuer, "https://other.example/slo", now), "", dsig.RSASHA256SignatureMethod), nil)
		}, ErrDestination},
		{"old", func(t *testing.T) *http.Request {
			return httptest.NewRequest(http.MethodGet, idpRedirect(t, &idpKeys, slo.String(), "SAMLRequest", logoutRequestXML("q10", issuer, slo.String(), now.Add(-time.Hour)), "", dsig.RSASHA256SignatureMethod), nil)
		}, ErrExpired},
		{"not a SAML message, signed", func(t *testing.T) *http.Request {
			q := "SAMLRequest=" + url.QueryEscape(base64.StdEncoding.EncodeToString([]byte("not deflated"))) + "&SigAlg=" + url.QueryEscape(dsig.RSASHA256SignatureMethod)
			sum := sha256.Sum256([]byte(q))
			sig, err := rsa.SignPKCS1v15(rand.Reader, idpKeys.Key, crypto.SHA256, sum[:])
			if err != nil {
				t.Fatal(err)
			}
			return httptest.NewRequest(http.MethodGet, slo.String()+"?"+q+"&Signature="+url.QueryEscape(base64.StdEncoding.EncodeToString(sig)), nil)
		}, ErrMalformed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := sp.ConsumeLogout(httptest.NewRecorder(), tt.req(t))
			if tt.want != nil {
				if !errors.Is(err, tt.want) || !errors.Is(err, ErrInvalidResponse) {
					t.Fatalf("err = %v, want %v", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !m.Request || m.NameID != "transient-4711" || m.SessionIndex != "idx-1" || m.RelayState != "idp-state" {
				t.Errorf("message = %+v", m)
			}
		})
	}

	t.Run("the SP's answer", func(t *testing.T) {
		rec := httptest.NewRecorder()
		if err := sp.RespondLogout(rec, httptest.NewRequest(http.MethodGet, slo.String(), nil), "q1", "idp-state"); err != nil {
			t.Fatal(err)
		}
		loc, _ := url.Parse(rec.Header().Get("Location"))
		body, relay, err := verifyRedirect(loc.RawQuery, spCerts)
		if err != nil {
			t.Fatal(err)
		}
		var resp saml.LogoutResponse
		if err := xml.Unmarshal(body, &resp); err != nil {
			t.Fatal(err)
		}
		if loc.Path != "/idp/slo" || relay != "idp-state" || resp.InResponseTo != "q1" || resp.Status.StatusCode.Value != saml.StatusSuccess {
			t.Errorf("LogoutResponse to %s (relay %q): %s", loc, relay, body)
		}
	})

	t.Run("no single logout at the IdP", func(t *testing.T) {
		without := newTestIdP(t, false)
		sp2, err := New(t.Context(), Config{BaseURL: base, KeyPEM: keyPEM, CertPEM: certPEM, IdPMetadataXML: without.metadataXML()})
		if err != nil {
			t.Fatal(err)
		}
		if err := sp2.StartLogout(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil), Session{NameID: "x"}, ""); !errors.Is(err, ErrNoSingleLogout) {
			t.Fatalf("no SLO endpoint: %v", err)
		}
	})
}
