package main

// Single logout through the whole application, with the in-process identity
// provider given a single logout service of its own (the tests against SimpleSAMLphp
// are in internal/server). The IdP's side checks what a real one checks: the query
// signature of the SP's messages, with the SP's certificate.

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
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crewjam/saml"
	dsig "github.com/russellhaering/goxmldsig"
)

// sloIdP is the single logout service of the test IdP: it records what the SP sent,
// and answers the SP's LogoutRequests with a signed LogoutResponse.
type sloIdP struct {
	t        *testing.T
	idp      *umbrellaIdP
	spSLO    string // the app's saml/slo URL
	mu       sync.Mutex
	requests []saml.LogoutRequest
	answers  []saml.LogoutResponse
}

func withSingleLogout(t *testing.T, idp *umbrellaIdP) *sloIdP {
	t.Helper()
	base, _ := url.Parse(idp.server.URL)
	idp.idp.LogoutURL = *base.JoinPath("idp/slo")
	s := &sloIdP{t: t, idp: idp}
	idp.server.Config.Handler.(*http.ServeMux).HandleFunc("/idp/slo", s.serve)
	return s
}

func (s *sloIdP) serve(w http.ResponseWriter, r *http.Request) {
	param := "SAMLRequest"
	if r.URL.Query().Has("SAMLResponse") {
		param = "SAMLResponse"
	}
	body, err := verifySPQuery(r.URL.RawQuery, param, umbrellaSPKey.Cert)
	if err != nil {
		s.t.Errorf("test idp: the SP's %s: %v", param, err)
		http.Error(w, "bad signature", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if param == "SAMLResponse" {
		var resp saml.LogoutResponse
		if err := xml.Unmarshal(body, &resp); err != nil {
			s.t.Errorf("test idp: LogoutResponse: %v", err)
		}
		s.answers = append(s.answers, resp)
		io.WriteString(w, "logged out at the IdP")
		return
	}
	var req saml.LogoutRequest
	if err := xml.Unmarshal(body, &req); err != nil {
		s.t.Errorf("test idp: LogoutRequest: %v", err)
	}
	s.requests = append(s.requests, req)
	answer := fmt.Sprintf(`<samlp:LogoutResponse xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="resp-%d" InResponseTo="%s" Version="2.0" IssueInstant="%s" Destination="%s"><saml:Issuer>%s</saml:Issuer><samlp:Status><samlp:StatusCode Value="%s"/></samlp:Status></samlp:LogoutResponse>`,
		len(s.requests), req.ID, time.Now().UTC().Format(time.RFC3339), s.spSLO, s.idp.idp.MetadataURL.String(), saml.StatusSuccess)
	http.Redirect(w, r, s.spSLO+"?"+signedIdPQuery(s.t, "SAMLResponse", answer, r.URL.Query().Get("RelayState")), http.StatusFound)
}

// logoutRequest is the IdP's own LogoutRequest (a logout at the IdP) for the SP.
func (s *sloIdP) logoutRequest(id, sessionIndex string) string {
	index := ""
	if sessionIndex != "" {
		index = "<samlp:SessionIndex>" + sessionIndex + "</samlp:SessionIndex>"
	}
	msg := fmt.Sprintf(`<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="%s" Version="2.0" IssueInstant="%s" Destination="%s"><saml:Issuer>%s</saml:Issuer><saml:NameID Format="urn:oasis:names:tc:SAML:2.0:nameid-format:transient">transient-4711</saml:NameID>%s</samlp:LogoutRequest>`,
		id, time.Now().UTC().Format(time.RFC3339), s.spSLO, s.idp.idp.MetadataURL.String(), index)
	return s.spSLO + "?" + signedIdPQuery(s.t, "SAMLRequest", msg, "idp-relay")
}

// signedIdPQuery is an HTTP-Redirect query carrying message, signed by the IdP.
func signedIdPQuery(t *testing.T, param, message, relayState string) string {
	var buf bytes.Buffer
	fw, _ := flate.NewWriter(&buf, flate.BestCompression)
	io.WriteString(fw, message)
	fw.Close()
	q := param + "=" + url.QueryEscape(base64.StdEncoding.EncodeToString(buf.Bytes()))
	if relayState != "" {
		q += "&RelayState=" + url.QueryEscape(relayState)
	}
	q += "&SigAlg=" + url.QueryEscape(dsig.RSASHA256SignatureMethod)
	sum := sha256.Sum256([]byte(q))
	sig, err := rsa.SignPKCS1v15(rand.Reader, umbrellaIdPKey.Key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return q + "&Signature=" + url.QueryEscape(base64.StdEncoding.EncodeToString(sig))
}

// verifySPQuery checks an HTTP-Redirect query's signature with cert and inflates its
// message, as an IdP does.
func verifySPQuery(rawQuery, param string, cert *x509.Certificate) ([]byte, error) {
	vals := map[string]string{}
	for _, part := range strings.Split(rawQuery, "&") {
		k, v, _ := strings.Cut(part, "=")
		vals[k] = v
	}
	signed := param + "=" + vals[param]
	if rs, ok := vals["RelayState"]; ok {
		signed += "&RelayState=" + rs
	}
	signed += "&SigAlg=" + vals["SigAlg"]
	sigText, _ := url.QueryUnescape(vals["Signature"])
	sig, err := base64.StdEncoding.DecodeString(sigText)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(signed))
	if err := rsa.VerifyPKCS1v15(cert.PublicKey.(*rsa.PublicKey), crypto.SHA256, sum[:], sig); err != nil {
		return nil, fmt.Errorf("query signature: %w", err)
	}
	text, _ := url.QueryUnescape(vals[param])
	raw, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(flate.NewReader(bytes.NewReader(raw)))
}

// loginThroughUmbrella is the frontend's whole Umbrella login: IdP, autologin's
// umbrella/logout/, session/ and wuo/.
func loginThroughUmbrella(t *testing.T, b *umbrellaBrowser, app *umbrellaApp, idp *umbrellaIdP) {
	t.Helper()
	b.federate(app, idp)
	wantJSON(t, b.get(app.base+"umbrella/logout/", nil), http.StatusOK, `"ok logout"`)
	hash, uid, ok := b.federatedSession(app)
	if !ok {
		t.Fatal("no federated session")
	}
	wantJSON(t, b.postJSON(app, "umbrella/wuo/", map[string]string{"EAAHash": hash, "uid": uid}), http.StatusOK, `"Login OK"`)
	if who := b.loggedInAs(app); who != "alice" {
		t.Fatalf("logged in as %q", who)
	}
}

// TestUmbrellaSingleLogout: native mode. The frontend's logout (umbrella/logout/,
// then Shibboleth.sso/Logout?return=) ends the login at the IdP too: the browser goes
// to the IdP with a signed LogoutRequest naming the login (NameID, SessionIndex), and
// the IdP's answer sends it back to the frontend. A logout the IdP starts ends the
// session it names, in every browser of that login, and is answered. A navigation to
// umbrella/logout/ goes the frontend's way.
func TestUmbrellaSingleLogout(t *testing.T) {
	idp := newUmbrellaIdP(t)
	slo := withSingleLogout(t, idp)
	app, _ := startSAMLAppWith(t, idp)
	slo.spSLO = app.base + "saml/slo"
	idp.logInAs(demoHash(t, "alice"))
	root := strings.TrimSuffix(app.base, "calipsoplus-services/")

	t.Run("SP-initiated", func(t *testing.T) {
		b := newUmbrellaBrowser(t)
		loginThroughUmbrella(t, b, app, idp)
		wantJSON(t, b.get(app.base+"umbrella/logout/", nil), http.StatusOK, `"ok logout"`)
		toIdP := b.redirect(root + "Shibboleth.sso/Logout?return=" + url.QueryEscape(umbrellaFrontend+"/login"))
		if !strings.HasPrefix(toIdP, idp.server.URL+"/idp/slo?SAMLRequest=") {
			t.Fatalf("Shibboleth.sso/Logout sent the browser to %s, want the IdP's single logout", toIdP)
		}
		back := b.redirect(toIdP)
		if !strings.HasPrefix(back, slo.spSLO+"?SAMLResponse=") {
			t.Fatalf("the IdP answered with %s", back)
		}
		if got := b.redirect(back); got != umbrellaFrontend+"/login" {
			t.Fatalf("after the IdP's answer the browser went to %s, want the frontend's return URL", got)
		}
		slo.mu.Lock()
		req := slo.requests[len(slo.requests)-1]
		slo.mu.Unlock()
		if req.NameID == nil || req.NameID.Value != "transient-4711" || req.SessionIndex == nil || req.SessionIndex.Value != "idx-1" {
			t.Errorf("the LogoutRequest does not name the login: %+v", req)
		}
		if who := b.loggedInAs(app); who != "" {
			t.Errorf("still logged in as %q", who)
		}
		// The IdP's answer is good once: a replayed one answers no logout under way.
		if a := b.get(back, nil); a.status != http.StatusBadRequest {
			t.Errorf("the IdP's answer replayed = %d %s", a.status, a.body)
		}
	})

	t.Run("IdP-initiated", func(t *testing.T) {
		b, other := newUmbrellaBrowser(t), newUmbrellaBrowser(t)
		loginThroughUmbrella(t, b, app, idp)
		loginThroughUmbrella(t, other, app, idp) // the same login at the IdP (its session index)
		u := slo.logoutRequest("idp-req-1", "idx-1")
		answer := b.redirect(u)
		if !strings.HasPrefix(answer, idp.server.URL+"/idp/slo?SAMLResponse=") {
			t.Fatalf("the SP answered the IdP's LogoutRequest with %s", answer)
		}
		if got := b.get(answer, nil); got.status != http.StatusOK {
			t.Fatalf("the IdP refused the SP's LogoutResponse: %d %s", got.status, got.body)
		}
		slo.mu.Lock()
		resp := slo.answers[len(slo.answers)-1]
		slo.mu.Unlock()
		if resp.InResponseTo != "idp-req-1" || resp.Status.StatusCode.Value != saml.StatusSuccess {
			t.Errorf("LogoutResponse = %+v", resp)
		}
		for name, br := range map[string]*umbrellaBrowser{"the browser": b, "another browser of the login": other} {
			if who := br.loggedInAs(app); who != "" {
				t.Errorf("%s is still logged in as %q", name, who)
			}
		}
		if a := b.get(u, nil); a.status != http.StatusBadRequest {
			t.Errorf("a replayed LogoutRequest = %d %s, want 400", a.status, a.body)
		}
		forged := strings.Replace(slo.logoutRequest("idp-req-2", ""), "Signature=", "Signature=AAAA", 1)
		if a := b.get(forged, nil); a.status != http.StatusBadRequest {
			t.Errorf("a LogoutRequest with a bad signature = %d %s, want 400", a.status, a.body)
		}
	})

	t.Run("navigation to umbrella/logout/", func(t *testing.T) {
		b := newUmbrellaBrowser(t)
		loginThroughUmbrella(t, b, app, idp)
		a := b.get(app.base+"umbrella/logout/", http.Header{"Sec-Fetch-Mode": {"navigate"}, "Sec-Fetch-Site": {"same-origin"}})
		want := "/Shibboleth.sso/Logout?return=" + url.QueryEscape(umbrellaFrontend+"/")
		if a.status != http.StatusFound || a.location != want {
			t.Fatalf("navigation to umbrella/logout/ = %d %q, want 302 to %s", a.status, a.location, want)
		}
		if who := b.loggedInAs(app); who != "" {
			t.Errorf("still logged in as %q", who)
		}
	})
}
