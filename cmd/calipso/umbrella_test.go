package main

// End-to-end tests of the Umbrella (federated) login through the whole application,
// built the way `serve` builds it from a settings file: a real crewjam/saml identity
// provider runs in-process, and a cookie-keeping client plays the browser step by step.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calipsoplus/calipso/federation/samltest"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
	"github.com/crewjam/saml/logger"
	dsig "github.com/russellhaering/goxmldsig"

	"github.com/calipsoplus/calipso/experiments/useroffice"
	"github.com/calipsoplus/calipso/federation"
	"github.com/calipsoplus/calipso/settings"
)

const (
	umbrellaFrontend = "http://frontend.test"
	umbrellaUID      = "alice-umbrella" // the IdP's username, unrelated to the local account
)

type umbrellaKeyPair = samltest.KeyPair

// RSA key generation is slow under -race: the tests share one key pair per role.
var (
	umbrellaKeysOnce              sync.Once
	umbrellaIdPKey, umbrellaSPKey umbrellaKeyPair
)

func umbrellaKeys(t *testing.T) {
	t.Helper()
	umbrellaKeysOnce.Do(func() {
		umbrellaIdPKey, umbrellaSPKey = newUmbrellaKeyPair(t, "test-idp"), newUmbrellaKeyPair(t, "calipso-sp")
	})
}

func newUmbrellaKeyPair(t *testing.T, cn string) umbrellaKeyPair {
	t.Helper()
	k, err := samltest.NewKeyPair(cn)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// demoHash is the eaa_hash the embedded user office's demo data gives username.
func demoHash(t *testing.T, username string) string {
	t.Helper()
	data, err := useroffice.Demo()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range data.Accounts {
		if a.Username == username && a.EAAHash != "" {
			return a.EAAHash
		}
	}
	t.Fatalf("demo data has no eaa_hash for %q", username)
	return ""
}

// umbrellaIdP is a crewjam IdentityProvider on httptest that answers like
// Shibboleth (signed response, encrypted assertion, EAAHash as eduPersonTargetedID).
type umbrellaIdP struct {
	t      *testing.T
	idp    *saml.IdentityProvider
	server *httptest.Server

	mu     sync.Mutex
	hash   string // the EAAHash of the user the IdP logs in next
	spMeta string // the app's saml/metadata URL, fetched over HTTP like a real IdP
}

func newUmbrellaIdP(t *testing.T) *umbrellaIdP {
	t.Helper()
	umbrellaKeys(t)
	f := &umbrellaIdP{t: t}
	mux := http.NewServeMux()
	f.server = httptest.NewServer(mux)
	t.Cleanup(f.server.Close)
	base, err := url.Parse(f.server.URL)
	if err != nil {
		t.Fatal(err)
	}
	f.idp = &saml.IdentityProvider{
		Key:                     umbrellaIdPKey.Key,
		Certificate:             umbrellaIdPKey.Cert,
		Logger:                  logger.DefaultLogger,
		MetadataURL:             *base.JoinPath("idp/metadata"),
		SSOURL:                  *base.JoinPath("idp/sso"),
		ServiceProviderProvider: f,
		SessionProvider:         f,
		SignatureMethod:         dsig.RSASHA256SignatureMethod,
	}
	mux.HandleFunc("/idp/sso", f.serveSSO)
	// A login the IdP starts (from its portal), for the SP named by ?sp=.
	mux.HandleFunc("/idp/unsolicited", func(w http.ResponseWriter, r *http.Request) {
		f.idp.ServeIDPInitiated(w, r, r.URL.Query().Get("sp"), "")
	})
	return f
}

func (f *umbrellaIdP) metadataFile(t *testing.T, dir string) string {
	t.Helper()
	buf, err := xml.Marshal(f.idp.Metadata())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "idp-metadata.xml")
	if err := os.WriteFile(path, buf, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (f *umbrellaIdP) logInAs(hash string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hash = hash
}

func (f *umbrellaIdP) setSPMetadataURL(u string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.spMeta = u
}

func (f *umbrellaIdP) GetServiceProvider(r *http.Request, id string) (*saml.EntityDescriptor, error) {
	f.mu.Lock()
	spMeta := f.spMeta
	f.mu.Unlock()
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, spMeta, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch sp metadata: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch sp metadata %s: %s: %s", spMeta, resp.Status, body)
	}
	var ed saml.EntityDescriptor
	if err := xml.Unmarshal(body, &ed); err != nil {
		return nil, fmt.Errorf("sp metadata: %w", err)
	}
	if ed.EntityID != id {
		return nil, os.ErrNotExist
	}
	return &ed, nil
}

// GetSession "logs in" the current Umbrella user with Umbrella's attributes.
func (f *umbrellaIdP) GetSession(_ http.ResponseWriter, r *http.Request, req *saml.IdpAuthnRequest) *saml.Session {
	f.mu.Lock()
	hash := f.hash
	f.mu.Unlock()
	sp := r.URL.Query().Get("sp") // an IdP-initiated login names its SP; crewjam looks it up after this
	if req.ServiceProviderMetadata != nil {
		sp = req.ServiceProviderMetadata.EntityID
	}
	return &saml.Session{
		ID: "session-1", CreateTime: time.Now(), ExpireTime: time.Now().Add(time.Hour), Index: "idx-1",
		NameID: "transient-4711", UserName: umbrellaUID, UserEmail: "alice@example.org", UserCommonName: "Alice",
		CustomAttributes: []saml.Attribute{{
			FriendlyName: "eduPersonTargetedID",
			Name:         federation.AttrEduPersonTargetedID,
			NameFormat:   "urn:oasis:names:tc:SAML:2.0:attrname-format:uri",
			Values: []saml.AttributeValue{{NameID: &saml.NameID{
				Format: "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent", NameQualifier: f.idp.MetadataURL.String(),
				SPNameQualifier: sp, Value: hash,
			}}},
		}},
	}
}

const umbrellaPostForm = `<html><form method="post" action="%s"><input type="hidden" name="SAMLResponse" value="%s" /><input type="hidden" name="RelayState" value="%s" /></form><script>document.forms[0].submit();</script></html>`

// serveSSO answers the AuthnRequest with the auto-submit form Shibboleth sends.
func (f *umbrellaIdP) serveSSO(w http.ResponseWriter, r *http.Request) {
	fail := func(what string, err error) {
		f.t.Errorf("test idp: %s: %v", what, err)
		http.Error(w, what, http.StatusBadRequest)
	}
	req, err := saml.NewIdpAuthnRequest(f.idp, r)
	if err == nil {
		err = req.Validate()
	}
	if err != nil {
		fail("bad AuthnRequest", err)
		return
	}
	req.Now = time.Now()
	if err := (saml.DefaultAssertionMaker{}).MakeAssertion(req, f.GetSession(w, r, req)); err != nil {
		fail("make assertion", err)
		return
	}
	req.Assertion.IssueInstant = req.Now
	encrypted, err := samltest.Encrypt(umbrellaSPKey.Cert, req.Assertion.Element())
	if err != nil {
		fail("encrypt", err)
		return
	}
	resp := &saml.Response{
		Destination: req.ACSEndpoint.Location, ID: fmt.Sprintf("id-resp-%d", time.Now().UnixNano()),
		InResponseTo: req.Request.ID, IssueInstant: req.Now, Version: "2.0",
		Issuer: &saml.Issuer{Format: "urn:oasis:names:tc:SAML:2.0:nameid-format:entity", Value: f.idp.MetadataURL.String()},
		Status: saml.Status{StatusCode: saml.StatusCode{Value: saml.StatusSuccess}},
	}
	respEl := resp.Element()
	respEl.AddChild(encrypted)
	signed, err := samltest.Sign(umbrellaIdPKey, respEl)
	if err != nil {
		fail("sign", err)
		return
	}
	// Like crewjam: the Signature goes right after the Issuer.
	resp.Signature = signed.ChildElements()[len(signed.ChildElements())-1]
	respEl = resp.Element()
	respEl.AddChild(encrypted)
	doc := etree.NewDocument()
	doc.SetRoot(respEl)
	raw, err := doc.WriteToBytes()
	if err != nil {
		fail("serialize", err)
		return
	}
	w.Header().Set("Content-Type", "text/html")
	fmt.Fprintf(w, umbrellaPostForm, html.EscapeString(req.ACSEndpoint.Location),
		base64.StdEncoding.EncodeToString(raw), html.EscapeString(req.RelayState))
}

// umbrellaApp is the whole Calipso application on httptest.
type umbrellaApp struct {
	base string // backend URL including the base path, e.g. http://127.0.0.1:4711/calipsoplus-services/
}

// startUmbrellaApp writes a local-profile settings file with the given [umbrella]
// section and trusted proxies, then builds and serves the app like `serve` does.
// The listener exists first: backend_url must name its address.
func startUmbrellaApp(t *testing.T, umbrella string, trustedProxies string) *umbrellaApp {
	t.Helper()
	return startAppWith(t, func(string) string { return umbrella }, trustedProxies)
}

// startAppWith runs the app in process with the local profile's settings, the
// [umbrella] table and all after it replaced by tail(base), where base is the app's
// API URL (known before it starts, for settings that name it).
func startAppWith(t *testing.T, tail func(base string) string, trustedProxies string) *umbrellaApp {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	path := settingsFile(t, dir)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	base := "http://" + srv.Listener.Addr().String() + "/calipsoplus-services/"
	for _, r := range []struct{ re, with string }{
		{`(?m)^backend_url = .*$`, `backend_url = "` + base + `"`},
		{`(?m)^frontend_url = .*$`, `frontend_url = "` + umbrellaFrontend + `"`},
		{`(?m)^trusted_proxies = .*$`, `trusted_proxies = ` + trustedProxies},
		{`(?s)\n\[umbrella\]\n.*$`, "\n" + tail(base)},
	} {
		re := regexp.MustCompile(r.re)
		if !re.MatchString(text) {
			t.Fatalf("local profile has no %s: the test's settings edit needs updating", r.re)
		}
		text = re.ReplaceAllLiteralString(text, r.with)
	}
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := settings.Load(path, func(string) string { return "" })
	if err != nil {
		t.Fatalf("settings:\n%s\n%v", text, err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	a, err := build(t.Context(), cfg, log)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	t.Cleanup(a.Close)
	h, err := a.handler()
	if err != nil {
		t.Fatalf("handler: %v", err)
	}
	srv.Config.Handler = h
	srv.Start()
	return &umbrellaApp{base: base}
}

// startSAMLApp runs the IdP and the app in SAML mode with keys and metadata in files.
func startSAMLApp(t *testing.T, umbrellaSettings ...string) (*umbrellaApp, *umbrellaIdP) {
	t.Helper()
	return startSAMLAppWith(t, newUmbrellaIdP(t), umbrellaSettings...)
}

// startSAMLAppWith is startSAMLApp with an IdP the caller made (and changed).
func startSAMLAppWith(t *testing.T, idp *umbrellaIdP, umbrellaSettings ...string) (*umbrellaApp, *umbrellaIdP) {
	t.Helper()
	dir := t.TempDir()
	keyFile, certFile := filepath.Join(dir, "sp.key"), filepath.Join(dir, "sp.crt")
	keyPEM, certPEM := umbrellaSPKey.PEM()
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	app := startUmbrellaApp(t, fmt.Sprintf("[umbrella]\nenabled = true\nmode = \"saml\"\nidp_metadata_file = %q\nsp_key_file = %q\nsp_cert_file = %q\n%s",
		idp.metadataFile(t, dir), keyFile, certFile, strings.Join(umbrellaSettings, "\n")), `["127.0.0.1"]`)
	idp.setSPMetadataURL(app.base + "saml/metadata")
	return app, idp
}

// umbrellaBrowser keeps cookies and never follows redirects on its own, so every
// step of the flow is checked; like a browser without JavaScript, the IdP's POST
// form is submitted explicitly.
type umbrellaBrowser struct {
	t      *testing.T
	client *http.Client
}

func newUmbrellaBrowser(t *testing.T) *umbrellaBrowser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &umbrellaBrowser{t: t, client: &http.Client{
		Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

type umbrellaAnswer struct {
	status   int
	location string
	body     []byte
}

func (b *umbrellaBrowser) do(req *http.Request) umbrellaAnswer {
	b.t.Helper()
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return umbrellaAnswer{status: resp.StatusCode, location: resp.Header.Get("Location"), body: body}
}

func (b *umbrellaBrowser) get(u string, header http.Header) umbrellaAnswer {
	b.t.Helper()
	req, err := http.NewRequestWithContext(b.t.Context(), http.MethodGet, u, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	return b.do(req)
}

// redirect GETs u and returns where its 302 points.
func (b *umbrellaBrowser) redirect(u string) string {
	b.t.Helper()
	a := b.get(u, nil)
	if a.status != http.StatusFound || a.location == "" {
		b.t.Fatalf("GET %s: want a 302, got %d %q: %s", u, a.status, a.location, a.body)
	}
	return a.location
}

// postJSON sends body as the frontend does: JSON with the csrftoken cookie echoed.
func (b *umbrellaBrowser) postJSON(app *umbrellaApp, path string, body any) umbrellaAnswer {
	b.t.Helper()
	u := app.base + path
	token := b.cookie(u, "csrftoken")
	if token == "" {
		// The first GET hands out the CSRF cookie, as when the frontend loads.
		b.get(app.base+"authenticated/", nil)
		if token = b.cookie(u, "csrftoken"); token == "" {
			b.t.Fatal("the app set no csrftoken cookie")
		}
	}
	buf, err := json.Marshal(body)
	if err != nil {
		b.t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(b.t.Context(), http.MethodPost, u, bytes.NewReader(buf))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-CSRFToken", token)
	return b.do(req)
}

func (b *umbrellaBrowser) cookie(u, name string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		b.t.Fatal(err)
	}
	for _, c := range b.client.Jar.Cookies(parsed) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

type samlPost struct {
	action, samlResponse, relayState string
}

var (
	umbrellaFormAction = regexp.MustCompile(`<form method="post" action="([^"]+)"`)
	umbrellaFormField  = regexp.MustCompile(`name="(SAMLResponse|RelayState)" value="([^"]*)"`)
)

// loginAtIdP runs umbrella/login/ → 302 to the IdP → the IdP's login page, and
// returns the auto-submit form the IdP answered.
func (b *umbrellaBrowser) loginAtIdP(app *umbrellaApp, idp *umbrellaIdP) samlPost {
	b.t.Helper()
	sso := b.redirect(app.base + "umbrella/login/")
	if !strings.HasPrefix(sso, idp.server.URL+"/idp/sso?SAMLRequest=") {
		b.t.Fatalf("umbrella/login/ sent the browser to %s, not the IdP's SSO", sso)
	}
	a := b.get(sso, nil)
	if a.status != http.StatusOK {
		b.t.Fatalf("IdP login: %d: %s", a.status, a.body)
	}
	m := umbrellaFormAction.FindSubmatch(a.body)
	if m == nil {
		b.t.Fatalf("no form in the IdP's answer: %s", a.body)
	}
	form := samlPost{action: html.UnescapeString(string(m[1]))}
	for _, fm := range umbrellaFormField.FindAllSubmatch(a.body, -1) {
		if v := html.UnescapeString(string(fm[2])); string(fm[1]) == "SAMLResponse" {
			form.samlResponse = v
		} else {
			form.relayState = v
		}
	}
	if form.samlResponse == "" {
		b.t.Fatalf("no SAMLResponse in the IdP's answer: %s", a.body)
	}
	if form.action != app.base+"saml/acs" {
		b.t.Fatalf("the IdP posts to %s, want the ACS under the base path %ssaml/acs", form.action, app.base)
	}
	return form
}

// submit posts the IdP's form to the ACS the way a browser's auto-submit does:
// cross-site, from the IdP's origin, with no CSRF token of the app's.
func (b *umbrellaBrowser) submit(form samlPost, idp *umbrellaIdP) umbrellaAnswer {
	b.t.Helper()
	values := url.Values{"SAMLResponse": {form.samlResponse}, "RelayState": {form.relayState}}
	req, err := http.NewRequestWithContext(b.t.Context(), http.MethodPost, form.action, strings.NewReader(values.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", idp.server.URL)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	return b.do(req)
}

// federate runs the SAML login up to the federated session: login → IdP → ACS →
// umbrella/frontend/ → <frontend>/autologin.
func (b *umbrellaBrowser) federate(app *umbrellaApp, idp *umbrellaIdP) {
	b.t.Helper()
	a := b.submit(b.loginAtIdP(app, idp), idp)
	if a.status != http.StatusFound || a.location != app.base+"umbrella/frontend/" {
		b.t.Fatalf("ACS: want 302 to %sumbrella/frontend/, got %d %q: %s", app.base, a.status, a.location, a.body)
	}
	if got := b.redirect(a.location); got != umbrellaFrontend+"/autologin" {
		b.t.Fatalf("umbrella/frontend/ sent the browser to %s, want %s/autologin", got, umbrellaFrontend)
	}
}

// federatedSession reads umbrella/session/; ok is false on its 404.
func (b *umbrellaBrowser) federatedSession(app *umbrellaApp) (hash, uid string, ok bool) {
	b.t.Helper()
	a := b.get(app.base+"umbrella/session/", nil)
	switch a.status {
	case http.StatusOK:
		var s struct{ EAAHash, UID string }
		if err := json.Unmarshal(a.body, &s); err != nil {
			b.t.Fatalf("umbrella/session/: %v: %s", err, a.body)
		}
		return s.EAAHash, s.UID, true
	case http.StatusNotFound:
		wantJSON(b.t, a, http.StatusNotFound, `{"msg":"session not found"}`)
		return "", "", false
	default:
		b.t.Fatalf("umbrella/session/: %d: %s", a.status, a.body)
		return "", "", false
	}
}

// loggedInAs is the local account authenticated/ reports, "" when none.
func (b *umbrellaBrowser) loggedInAs(app *umbrellaApp) string {
	b.t.Helper()
	a := b.get(app.base+"authenticated/", nil)
	var s struct{ Username, Authenticated string }
	if err := json.Unmarshal(a.body, &s); err != nil {
		b.t.Fatalf("authenticated/: %d %v: %s", a.status, err, a.body)
	}
	if (a.status == http.StatusOK) != (s.Authenticated == "true") {
		b.t.Fatalf("authenticated/ answered %d with %s", a.status, a.body)
	}
	return s.Username
}

func wantJSON(t *testing.T, a umbrellaAnswer, status int, body string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("want %d %s, got %d: %s", status, body, a.status, a.body)
	}
	var got, want any
	if err := json.Unmarshal(a.body, &got); err != nil {
		t.Fatalf("answer is not JSON: %v: %s", err, a.body)
	}
	if err := json.Unmarshal([]byte(body), &want); err != nil {
		t.Fatal(err)
	}
	if g, w := fmt.Sprint(got), fmt.Sprint(want); g != w {
		t.Fatalf("want %s, got %s", body, a.body)
	}
}

func TestUmbrellaSAMLLoginThroughTheApp(t *testing.T) {
	app, idp := startSAMLApp(t)
	alice := demoHash(t, "alice")
	idp.logInAs(alice)
	b := newUmbrellaBrowser(t)

	b.federate(app, idp)
	// The autologin page: umbrella/logout/ first, which must not forget the identity.
	wantJSON(t, b.get(app.base+"umbrella/logout/", nil), http.StatusOK, `"ok logout"`)
	hash, uid, ok := b.federatedSession(app)
	// uid is the account the user office maps the hash to, not the IdP's uid: the
	// frontend uses it as the username from then on.
	if !ok || hash != alice || uid != "alice" {
		t.Fatalf("umbrella/session/ = %q %q %v, want %q %q (not the IdP's %q)", hash, uid, ok, alice, "alice", umbrellaUID)
	}
	if who := b.loggedInAs(app); who != "" {
		t.Fatalf("logged in as %q before umbrella/wuo/", who)
	}
	// The posted uid must be that account: the user office's mapping of the federated
	// hash decides, and another uid is refused.
	if a := b.postJSON(app, "umbrella/wuo/", map[string]string{"EAAHash": hash, "uid": "bob"}); a.status != http.StatusForbidden {
		t.Fatalf("wuo with another uid: want 403, got %d: %s", a.status, a.body)
	}
	wantJSON(t, b.postJSON(app, "umbrella/wuo/", map[string]string{"EAAHash": hash, "uid": uid}), http.StatusOK, `"Login OK"`)
	wantJSON(t, b.get(app.base+"authenticated/", nil), http.StatusOK, `{"username":"alice","authenticated":"true"}`)
}

// TestUmbrellaLogout: the frontend's Umbrella logout, umbrella/logout/ then the
// browser to <host root>/Shibboleth.sso/Logout?return=<frontend>, which native mode
// answers in mod_shib's place: both sessions end and the browser returns to the
// frontend, never to another site.
func TestUmbrellaLogout(t *testing.T) {
	app, idp := startSAMLApp(t)
	idp.logInAs(demoHash(t, "alice"))
	root := strings.TrimSuffix(app.base, "calipsoplus-services/")
	for _, c := range []struct {
		ret, want string
		loggedIn  bool // logged in through umbrella/wuo/ (else only federated)
	}{
		{umbrellaFrontend + "/login", umbrellaFrontend + "/login", true},
		{umbrellaFrontend + "/login", umbrellaFrontend + "/login", false},
		{"https://evil.example/", umbrellaFrontend + "/", false},
		{"", umbrellaFrontend + "/", true},
	} {
		t.Run(fmt.Sprintf("%s logged in %v", c.ret, c.loggedIn), func(t *testing.T) {
			b := newUmbrellaBrowser(t)
			b.federate(app, idp)
			wantJSON(t, b.get(app.base+"umbrella/logout/", nil), http.StatusOK, `"ok logout"`)
			hash, uid, ok := b.federatedSession(app)
			if !ok {
				t.Fatal("no federated session after umbrella/logout/")
			}
			if c.loggedIn {
				wantJSON(t, b.postJSON(app, "umbrella/wuo/", map[string]string{"EAAHash": hash, "uid": uid}), http.StatusOK, `"Login OK"`)
				wantJSON(t, b.get(app.base+"umbrella/logout/", nil), http.StatusOK, `"ok logout"`)
			}
			target := root + "Shibboleth.sso/Logout"
			if c.ret != "" {
				target += "?return=" + url.QueryEscape(c.ret)
			}
			if got := b.redirect(target); got != c.want {
				t.Fatalf("Shibboleth.sso/Logout sent the browser to %q, want %q", got, c.want)
			}
			if who := b.loggedInAs(app); who != "" {
				t.Fatalf("still logged in as %q", who)
			}
			if _, _, ok := b.federatedSession(app); ok {
				t.Fatal("the federated identity outlived the logout")
			}
		})
	}
}

func TestUmbrellaSAMLRefusals(t *testing.T) {
	app, idp := startSAMLApp(t)
	alice, bob := demoHash(t, "alice"), demoHash(t, "bob")

	t.Run("session without a federated login", func(t *testing.T) {
		b := newUmbrellaBrowser(t)
		wantJSON(t, b.get(app.base+"umbrella/session/", nil), http.StatusNotFound, `{"msg":"session not found"}`)
	})

	t.Run("wuo without a federated login", func(t *testing.T) {
		b := newUmbrellaBrowser(t)
		if a := b.postJSON(app, "umbrella/wuo/", map[string]string{"EAAHash": alice, "uid": "alice"}); a.status != http.StatusForbidden {
			t.Fatalf("a posted hash without a federated session: want 403, got %d: %s", a.status, a.body)
		}
		if who := b.loggedInAs(app); who != "" {
			t.Fatalf("logged in as %q", who)
		}
	})

	t.Run("wuo with another hash than the federated one", func(t *testing.T) {
		idp.logInAs(alice)
		b := newUmbrellaBrowser(t)
		b.federate(app, idp)
		if a := b.postJSON(app, "umbrella/wuo/", map[string]string{"EAAHash": bob, "uid": "bob"}); a.status != http.StatusForbidden {
			t.Fatalf("want 403, got %d: %s", a.status, a.body)
		}
		if who := b.loggedInAs(app); who != "" {
			t.Fatalf("logged in as %q with someone else's hash", who)
		}
	})

	t.Run("hash the user office does not know", func(t *testing.T) {
		idp.logInAs("eaa-nobody-ffffffff")
		b := newUmbrellaBrowser(t)
		b.federate(app, idp)
		hash, _, ok := b.federatedSession(app)
		if !ok || hash != "eaa-nobody-ffffffff" {
			t.Fatalf("umbrella/session/ = %q %v", hash, ok)
		}
		wantJSON(t, b.postJSON(app, "umbrella/wuo/", map[string]string{"EAAHash": hash, "uid": "nobody"}), http.StatusNotFound, `{"msg":"user not found"}`)
		if who := b.loggedInAs(app); who != "" {
			t.Fatalf("logged in as %q", who)
		}
	})

	t.Run("missing fields", func(t *testing.T) {
		idp.logInAs(alice)
		b := newUmbrellaBrowser(t)
		b.federate(app, idp)
		for name, body := range map[string]map[string]string{
			"no uid":     {"EAAHash": alice},
			"no hash":    {"uid": "alice"},
			"empty hash": {"EAAHash": "", "uid": "alice"},
			"nothing":    {},
		} {
			t.Run(name, func(t *testing.T) {
				if a := b.postJSON(app, "umbrella/wuo/", body); a.status != http.StatusBadRequest {
					t.Fatalf("want 400, got %d: %s", a.status, a.body)
				}
			})
		}
		if who := b.loggedInAs(app); who != "" {
			t.Fatalf("logged in as %q", who)
		}
	})

	t.Run("tampered response", func(t *testing.T) {
		idp.logInAs(alice)
		b := newUmbrellaBrowser(t)
		form := b.loginAtIdP(app, idp)
		genuine := form.samlResponse
		form.samlResponse = tamper(t, genuine)
		if a := b.submit(form, idp); a.status != http.StatusForbidden {
			t.Fatalf("tampered SAMLResponse: want 403, got %d %q: %s", a.status, a.location, a.body)
		}
		if _, _, ok := b.federatedSession(app); ok {
			t.Fatal("a tampered response made a federated session")
		}
		// The same browser's genuine response still works: the tampering alone was refused.
		form.samlResponse = genuine
		if a := b.submit(form, idp); a.status != http.StatusFound {
			t.Fatalf("genuine SAMLResponse after the tampered one: want 302, got %d: %s", a.status, a.body)
		}
		if hash, _, ok := b.federatedSession(app); !ok || hash != alice {
			t.Fatalf("umbrella/session/ after the genuine response = %q %v", hash, ok)
		}
	})

	t.Run("replayed response", func(t *testing.T) {
		idp.logInAs(alice)
		b := newUmbrellaBrowser(t)
		form := b.loginAtIdP(app, idp)
		// An attacker who copied the browser's cookies too (the pending-login cookie
		// the ACS clears after use) can only be stopped by the assertion-ID cache.
		acs, err := url.Parse(form.action)
		if err != nil {
			t.Fatal(err)
		}
		thief := newUmbrellaBrowser(t)
		thief.client.Jar.SetCookies(acs, b.client.Jar.Cookies(acs))
		if a := b.submit(form, idp); a.status != http.StatusFound {
			t.Fatalf("first post: want 302, got %d: %s", a.status, a.body)
		}
		if a := b.submit(form, idp); a.status != http.StatusForbidden {
			t.Fatalf("replay from the same browser: want 403, got %d %q: %s", a.status, a.location, a.body)
		}
		if a := thief.submit(form, idp); a.status != http.StatusForbidden {
			t.Fatalf("replay with the copied cookies: want 403, got %d %q: %s", a.status, a.location, a.body)
		}
		if _, _, ok := thief.federatedSession(app); ok {
			t.Fatal("a replayed response made a federated session")
		}
	})
}

// tamper changes the signed Response's IssueInstant by a second: still a plausible
// time, so only the signature can catch it.
func tamper(t *testing.T, encoded string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		t.Fatal(err)
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(raw); err != nil {
		t.Fatal(err)
	}
	attr := doc.Root().SelectAttr("IssueInstant")
	if attr == nil {
		t.Fatalf("response has no IssueInstant: %s", raw)
	}
	at, err := time.Parse(time.RFC3339Nano, attr.Value)
	if err != nil {
		t.Fatal(err)
	}
	attr.Value = at.Add(time.Second).UTC().Format(time.RFC3339Nano)
	out, err := doc.WriteToBytes()
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(out)
}

func TestUmbrellaSPMetadata(t *testing.T) {
	app, _ := startSAMLApp(t)
	b := newUmbrellaBrowser(t)
	a := b.get(app.base+"saml/metadata", nil)
	if a.status != http.StatusOK {
		t.Fatalf("saml/metadata: %d: %s", a.status, a.body)
	}
	var md saml.EntityDescriptor
	if err := xml.Unmarshal(a.body, &md); err != nil {
		t.Fatalf("saml/metadata is not SAML metadata: %v: %s", err, a.body)
	}
	if len(md.SPSSODescriptors) != 1 {
		t.Fatalf("want one SPSSODescriptor: %s", a.body)
	}
	d := md.SPSSODescriptors[0]
	var acs []string
	for _, e := range d.AssertionConsumerServices {
		acs = append(acs, e.Binding+" "+e.Location)
	}
	if want := saml.HTTPPostBinding + " " + app.base + "saml/acs"; len(acs) != 1 || acs[0] != want {
		t.Fatalf("ACS endpoints %q, want [%q]", acs, want)
	}
	cert := base64.StdEncoding.EncodeToString(umbrellaSPKey.Cert.Raw)
	if !strings.Contains(string(a.body), cert) {
		t.Fatal("the metadata does not carry the SP certificate from sp_cert_file")
	}
}

func TestUmbrellaHeaderMode(t *testing.T) {
	alice := demoHash(t, "alice")
	const section = "[umbrella]\nenabled = true\nmode = \"header\"\n"
	headers := http.Header{}
	headers.Set("EAAHash", alice) // mod_shib's default header names
	headers.Set("uid", umbrellaUID)
	cases := []struct {
		name    string
		proxies string
		trusted bool
	}{
		{"from a trusted proxy", `["127.0.0.1"]`, true},
		{"from an untrusted address", `["10.9.9.9"]`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			app := startUmbrellaApp(t, section, tc.proxies)
			b := newUmbrellaBrowser(t)
			a := b.get(app.base+"umbrella/frontend/", headers)
			if a.status != http.StatusFound || a.location != umbrellaFrontend+"/autologin" {
				t.Fatalf("umbrella/frontend/: want 302 to %s/autologin, got %d %q: %s", umbrellaFrontend, a.status, a.location, a.body)
			}
			// The autologin page: umbrella/logout/, then umbrella/session/.
			wantJSON(t, b.get(app.base+"umbrella/logout/", nil), http.StatusOK, `"ok logout"`)
			hash, uid, ok := b.federatedSession(app)
			if !tc.trusted {
				if ok {
					t.Fatalf("headers from an untrusted address made a federated session for %q", hash)
				}
				if a := b.postJSON(app, "umbrella/wuo/", map[string]string{"EAAHash": alice, "uid": "alice"}); a.status != http.StatusForbidden {
					t.Fatalf("wuo without a federated session: want 403, got %d: %s", a.status, a.body)
				}
				if who := b.loggedInAs(app); who != "" {
					t.Fatalf("logged in as %q", who)
				}
				return
			}
			if !ok || hash != alice || uid != "alice" {
				t.Fatalf("umbrella/session/ = %q %q %v, want %q %q", hash, uid, ok, alice, "alice")
			}
			if a := b.postJSON(app, "umbrella/wuo/", map[string]string{"EAAHash": hash, "uid": "bob"}); a.status != http.StatusForbidden {
				t.Fatalf("wuo with another uid: want 403, got %d: %s", a.status, a.body)
			}
			wantJSON(t, b.postJSON(app, "umbrella/wuo/", map[string]string{"EAAHash": hash, "uid": uid}), http.StatusOK, `"Login OK"`)
			if who := b.loggedInAs(app); who != "alice" {
				t.Fatalf("logged in as %q, want alice", who)
			}
		})
	}
}

// TestUmbrellaIdPInitiatedLogin: a login the IdP starts is refused unless
// umbrella.allow_idp_initiated, and then lands on umbrella/frontend/.
func TestUmbrellaIdPInitiatedLogin(t *testing.T) {
	for _, allowed := range []bool{false, true} {
		t.Run(fmt.Sprint("allowed=", allowed), func(t *testing.T) {
			app, idp := startSAMLApp(t, fmt.Sprintf("allow_idp_initiated = %t", allowed))
			idp.logInAs(demoHash(t, "alice"))
			b := newUmbrellaBrowser(t)
			page := b.get(idp.server.URL+"/idp/unsolicited?sp="+url.QueryEscape(app.base+"saml/metadata"), nil)
			m := umbrellaFormAction.FindSubmatch(page.body)
			if page.status != http.StatusOK || m == nil {
				t.Fatalf("IdP-initiated login page: %d %s", page.status, page.body)
			}
			form := samlPost{action: html.UnescapeString(string(m[1]))}
			for _, fm := range umbrellaFormField.FindAllSubmatch(page.body, -1) {
				if string(fm[1]) == "SAMLResponse" {
					form.samlResponse = html.UnescapeString(string(fm[2]))
				}
			}
			a := b.submit(form, idp)
			switch {
			case !allowed && a.status != http.StatusForbidden:
				t.Fatalf("unsolicited response with allow_idp_initiated off: %d %q, want 403", a.status, a.location)
			case allowed && (a.status != http.StatusFound || a.location != app.base+"umbrella/frontend/"):
				t.Fatalf("unsolicited response allowed: %d %q %s, want 302 to umbrella/frontend/", a.status, a.location, a.body)
			}
		})
	}
}
