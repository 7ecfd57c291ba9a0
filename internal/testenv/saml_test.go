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

// traced reports whether a step of the browser's last Browse starts with prefix and
// holds part.
func traced(b *SAMLBrowser, prefix, part string) bool {
	for _, step := range b.Trace {
		if strings.HasPrefix(step, prefix) && strings.Contains(step, part) {
			return true
		}
	}
	return false
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
	if sess.IdentityProv != p.idp.EntityID {
		t.Errorf("session's IdP %q; want %q", sess.IdentityProv, p.idp.EntityID)
	}

	// SP-initiated single logout.
	returnTo := p.backend.URL + "/logged-out"
	landed, _ = b.Browse(t, p.sp.LogoutURL(returnTo), returnTo, "", "")
	if landed != returnTo {
		t.Fatalf("logout landed at %s (%d): %s\ntrace:\n%s\n%s%s", landed, b.LastStatus, b.LastBody, strings.Join(b.Trace, "\n"), p.idp.LogTail(), p.sp.LogTail())
	}
	// A signed LogoutRequest went to the IdP, a signed LogoutResponse came back.
	if !traced(b, "GET "+p.idp.SLOURL+"?SAMLRequest=", "&Signature=") || !traced(b, "GET "+p.sp.HandlerURL+"/SLO/Redirect?SAMLResponse=", "&Signature=") {
		t.Errorf("no signed LogoutRequest to the IdP and LogoutResponse back:\n%s", strings.Join(b.Trace, "\n"))
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

func TestShibbolethSPIdPInitiatedLogout(t *testing.T) {
	p := startSAMLPair(t)
	protected := p.sp.BaseURL + "calipsoplus-services/umbrella/frontend/"
	b := NewSAMLBrowser(t)
	if _, asked := b.Browse(t, protected, "", "alice", "alice-pw"); !asked || b.LastStatus != 200 {
		t.Fatalf("login: %d (password asked %v): %s", b.LastStatus, asked, b.LastBody)
	}
	if !p.sp.SessionActive(t, b) {
		t.Fatal("no Shibboleth session after the login")
	}
	returnTo := p.backend.URL + "/idp-logged-out"
	landed, asked := b.Browse(t, p.idp.LogoutURL(returnTo), returnTo, "", "")
	if landed != returnTo || asked {
		t.Fatalf("IdP logout landed at %s (%d, password asked %v): %s\ntrace:\n%s%s%s", landed, b.LastStatus, asked, b.LastBody, strings.Join(b.Trace, "\n"), p.idp.LogTail(), p.sp.LogTail())
	}
	// The IdP sent the SP a signed LogoutRequest through the browser (HTTP-Redirect).
	if !traced(b, "GET "+p.sp.HandlerURL+"/SLO/Redirect?SAMLRequest=", "&Signature=") {
		t.Errorf("no signed LogoutRequest to the SP's SLO/Redirect:\n%s", strings.Join(b.Trace, "\n"))
	}
	if p.sp.SessionActive(t, b) {
		t.Error("the Shibboleth session outlived the IdP-initiated logout")
	}
	// An IdP-initiated login (unsolicited response) asks for the password again.
	landed, asked = b.Browse(t, p.idp.LoginURL(p.sp.EntityID, protected), "", "alice", "alice-pw")
	if !asked {
		t.Error("no password asked after the IdP-initiated logout")
	}
	if landed != protected || b.LastStatus != 200 || !p.sp.SessionActive(t, b) {
		t.Errorf("IdP-initiated login landed at %s (%d)\ntrace:\n%s", landed, b.LastStatus, strings.Join(b.Trace, "\n"))
	}
}

func TestSAMLIdPUserChanges(t *testing.T) {
	p := startSAMLPair(t)
	protected := p.sp.BaseURL + "calipsoplus-services/umbrella/frontend/"
	// A user added after the SP, with a URN-named and an unknown attribute.
	p.idp.AddUser("bob", "bob-pw", map[string][]string{AttrUID: {"bob"}, "eduPersonTargetedID": {"hash-of-bob"}, "office": {"42"}})
	b := NewSAMLBrowser(t)
	b.Browse(t, protected, "", "bob", "bob-pw")
	if _, h := echoed(t, b.LastBody); h.Get("Uid") != "bob" || h.Get("Eaahash") != "hash-of-bob" {
		t.Fatalf("bob's headers: %v", h)
	}
	// A changed attribute is seen at the next login.
	p.idp.AddUser("bob", "bob-pw", map[string][]string{"uid": {"bob"}, "eduPersonTargetedID": {"new-hash"}})
	returnTo := p.backend.URL + "/out"
	b.Browse(t, p.sp.LogoutURL(returnTo), returnTo, "", "")
	b.Browse(t, protected, "", "bob", "bob-pw")
	if _, h := echoed(t, b.LastBody); h.Get("Eaahash") != "new-hash" {
		t.Fatalf("bob's EAAHash after the change: %q", h.Get("Eaahash"))
	}
	// Headers a client sends never reach the backend: mod_shib's spoof check answers 500.
	c := NewSAMLBrowser(t)
	req, _ := http.NewRequest(http.MethodGet, p.sp.BaseURL+"calipsoplus-services/public/", nil)
	req.Header.Set("EAAHash", "forged")
	res, body := c.Do(t, req)
	if res.StatusCode == 200 {
		if _, h := echoed(t, body); h.Get("Eaahash") != "" {
			t.Errorf("a forged EAAHash reached the backend: %v", h)
		}
	} else if !strings.Contains(string(body), "spoof") {
		t.Errorf("forged EAAHash: %s %s", res.Status, body)
	}
	// Without it, the unprotected path is proxied without a session.
	res, body = c.Get(t, p.sp.BaseURL+"calipsoplus-services/public/")
	if _, h := echoed(t, body); res.StatusCode != 200 || h.Get("Eaahash") != "" || h.Get("Uid") != "" {
		t.Errorf("unprotected path without a session: %s %v", res.Status, h)
	}
}

func TestParseForms(t *testing.T) {
	page := `<html><body onload="document.forms[0].submit()">
<!-- <form action="/commented"><input name="SAMLResponse" value="x"></form> -->
<form method="post" action="http://sp.example/Shibboleth.sso/SAML2/POST">
<input type="hidden" name="RelayState" value="ss:mem:a&amp;b" />
<input type="hidden" name='SAMLResponse' value="PHNhbWw+" >
<noscript><input type="submit" value="Continue"/></noscript>
</form>
<FORM action="?" method="POST" name="f"><input id="username" type="text" name="username" value="">
<input type=password name=password><input type="checkbox" name="remember" value="Yes">
<input type="hidden" name="AuthState" value="_abc:http://x/?a=1&amp;b=2"></FORM></body></html>`
	forms := parseForms(page)
	if len(forms) != 2 {
		t.Fatalf("%d forms: %+v", len(forms), forms)
	}
	f := samlForm(forms)
	if f == nil || f.method != "POST" || f.action != "http://sp.example/Shibboleth.sso/SAML2/POST" ||
		f.fields.Get("SAMLResponse") != "PHNhbWw+" || f.fields.Get("RelayState") != "ss:mem:a&b" || len(f.fields) != 2 {
		t.Errorf("SAML form: %+v", f)
	}
	l := loginForm(forms)
	if l == nil || l.action != "?" || l.userField != "username" || l.passwordField != "password" ||
		l.fields.Get("AuthState") != "_abc:http://x/?a=1&b=2" || l.fields.Has("remember") {
		t.Errorf("login form: %+v", l)
	}
}
