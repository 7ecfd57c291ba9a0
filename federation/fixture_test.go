package federation

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
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
)

const (
	testEAAHash  = "b0744680-2aa3-4b12-8627-95d23e5e4af9"
	testUID      = "jdoe"
	testEmail    = "jane.doe@example.org"
	testName     = "Jane Doe"
	testRelay    = "/frontend/autologin"
	testBasePath = "/calipsoplus-services/"
)

type keyPair = samltest.KeyPair

// Generating RSA keys is slow; tests share a few.
var (
	keysOnce             sync.Once
	idpKeys, spKeys, bad keyPair
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		idpKeys, spKeys, bad = newKeyPair(t, "idp"), newKeyPair(t, "sp"), newKeyPair(t, "rogue")
	})
}

func newKeyPair(t testing.TB, cn string) keyPair {
	t.Helper()
	k, err := samltest.NewKeyPair(cn)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// idpBehaviour says how the test IdP builds its next response; the zero
// value is Shibboleth's default: signed response, encrypted unsigned assertion.
type idpBehaviour struct {
	clockShift      time.Duration
	plaintext       bool // do not encrypt the assertion
	signAssertion   bool
	unsignedResp    bool
	signer          *keyPair // sign with this instead of the IdP key
	session         *saml.Session
	mutateAssertion func(*saml.Assertion)
	mutateResponse  func(*saml.Response)
}

// testIdP is a real crewjam IdentityProvider on httptest, with the SSO
// endpoint rebuilt from crewjam's pieces so tests can make it misbehave.
type testIdP struct {
	t      testing.TB
	idp    *saml.IdentityProvider
	server *httptest.Server
	spMeta string // SP metadata URL, fetched over HTTP like a real IdP would

	mu        sync.Mutex
	behaviour idpBehaviour
}

func newTestIdP(t testing.TB, withSLO bool) *testIdP {
	t.Helper()
	testKeys(t)
	f := &testIdP{t: t}
	mux := http.NewServeMux()
	f.server = httptest.NewServer(mux)
	t.Cleanup(f.server.Close)
	base, _ := url.Parse(f.server.URL)
	f.idp = &saml.IdentityProvider{
		Key:                     idpKeys.Key,
		Certificate:             idpKeys.Cert,
		Logger:                  logger.DefaultLogger,
		MetadataURL:             *base.JoinPath("idp/metadata"),
		SSOURL:                  *base.JoinPath("idp/sso"),
		ServiceProviderProvider: f,
		SessionProvider:         f,
		SignatureMethod:         dsig.RSASHA256SignatureMethod,
	}
	if withSLO {
		f.idp.LogoutURL = *base.JoinPath("idp/slo")
	}
	mux.HandleFunc("/idp/metadata", f.idp.ServeMetadata)
	mux.HandleFunc("/idp/sso", f.serveSSO)
	return f
}

func (f *testIdP) metadataURL() string { return f.server.URL + "/idp/metadata" }

func (f *testIdP) metadataXML() []byte {
	buf, err := xml.Marshal(f.idp.Metadata())
	if err != nil {
		f.t.Fatal(err)
	}
	return buf
}

func (f *testIdP) set(b idpBehaviour) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.behaviour = b
}

func (f *testIdP) current() idpBehaviour {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.behaviour
}

func (f *testIdP) GetServiceProvider(_ *http.Request, id string) (*saml.EntityDescriptor, error) {
	resp, err := http.Get(f.spMeta)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var ed saml.EntityDescriptor
	if err := xml.Unmarshal(body, &ed); err != nil {
		return nil, err
	}
	if ed.EntityID != id {
		return nil, os.ErrNotExist
	}
	return &ed, nil
}

// GetSession "logs in" a fixed Umbrella user with Umbrella's attributes.
func (f *testIdP) GetSession(_ http.ResponseWriter, _ *http.Request, req *saml.IdpAuthnRequest) *saml.Session {
	if s := f.current().session; s != nil {
		return s
	}
	return &saml.Session{
		ID: "session-1", CreateTime: time.Now(), ExpireTime: time.Now().Add(time.Hour), Index: "idx-1",
		NameID: "transient-4711", UserName: testUID, UserEmail: testEmail, UserCommonName: testName,
		CustomAttributes: []saml.Attribute{{
			FriendlyName: "eduPersonTargetedID",
			Name:         AttrEduPersonTargetedID,
			NameFormat:   "urn:oasis:names:tc:SAML:2.0:attrname-format:uri",
			Values: []saml.AttributeValue{{NameID: &saml.NameID{
				Format: persistentNameIDFormat, NameQualifier: f.idp.MetadataURL.String(),
				SPNameQualifier: req.ServiceProviderMetadata.EntityID, Value: testEAAHash,
			}}},
		}},
	}
}

const postForm = `<html><form method="post" action="%s"><input type="hidden" name="SAMLResponse" value="%s" /><input type="hidden" name="RelayState" value="%s" /></form><script>document.forms[0].submit();</script></html>`

func (f *testIdP) serveSSO(w http.ResponseWriter, r *http.Request) {
	t := f.t
	req, err := saml.NewIdpAuthnRequest(f.idp, r)
	if err == nil {
		err = req.Validate()
	}
	if err != nil {
		t.Errorf("test idp: bad AuthnRequest: %v", err)
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	b := f.current()
	req.Now = time.Now().Add(b.clockShift)
	if err := (saml.DefaultAssertionMaker{}).MakeAssertion(req, f.GetSession(w, r, req)); err != nil {
		t.Fatalf("test idp: make assertion: %v", err)
	}
	req.Assertion.IssueInstant = req.Now
	if b.mutateAssertion != nil {
		b.mutateAssertion(req.Assertion)
	}
	signer := keyPair{Key: idpKeys.Key, Cert: idpKeys.Cert}
	if b.signer != nil {
		signer = *b.signer
	}
	assertionEl := req.Assertion.Element()
	if b.signAssertion {
		assertionEl = sign(t, signer, assertionEl)
	}
	var payload *etree.Element = assertionEl
	if !b.plaintext {
		payload = encryptFor(t, spKeys.Cert, assertionEl)
	}
	resp := &saml.Response{
		Destination: req.ACSEndpoint.Location, ID: fmt.Sprintf("id-resp-%d", time.Now().UnixNano()),
		InResponseTo: req.Request.ID, IssueInstant: req.Now, Version: "2.0",
		Issuer: &saml.Issuer{Format: "urn:oasis:names:tc:SAML:2.0:nameid-format:entity", Value: f.idp.MetadataURL.String()},
		Status: saml.Status{StatusCode: saml.StatusCode{Value: saml.StatusSuccess}},
	}
	if b.mutateResponse != nil {
		b.mutateResponse(resp)
	}
	respEl := resp.Element()
	respEl.AddChild(payload)
	if !b.unsignedResp {
		// Like crewjam: sign, then put the Signature right after the Issuer.
		signed := sign(t, signer, respEl)
		resp.Signature = signed.ChildElements()[len(signed.ChildElements())-1]
		respEl = resp.Element()
		respEl.AddChild(payload)
	}
	doc := etree.NewDocument()
	doc.SetRoot(respEl)
	raw, err := doc.WriteToBytes()
	if err != nil {
		t.Fatalf("test idp: serialize: %v", err)
	}
	w.Header().Set("Content-Type", "text/html")
	fmt.Fprintf(w, postForm, html.EscapeString(req.ACSEndpoint.Location),
		base64.StdEncoding.EncodeToString(raw), html.EscapeString(req.RelayState))
}

func sign(t testing.TB, k keyPair, el *etree.Element) *etree.Element {
	t.Helper()
	signed, err := samltest.Sign(k, el)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return signed
}

func encryptFor(t testing.TB, cert *x509.Certificate, assertionEl *etree.Element) *etree.Element {
	t.Helper()
	el, err := samltest.Encrypt(cert, assertionEl)
	if err != nil {
		t.Fatal(err)
	}
	return el
}

// acsResult is what the SP's ACS handler got from ConsumeAssertion.
type acsResult struct {
	id    Identity
	relay string
	err   error
}

// fixture: the test IdP plus the SP under test on its own httptest server,
// mounted under a base path like the real deployment.
type fixture struct {
	t       testing.TB
	idp     *testIdP
	sp      *ServiceProvider
	server  *httptest.Server
	results chan acsResult
}

func newFixture(t testing.TB, adjust func(*Config)) *fixture {
	t.Helper()
	f := &fixture{t: t, idp: newTestIdP(t, false), results: make(chan acsResult, 4)}
	mux := http.NewServeMux()
	f.server = httptest.NewServer(mux)
	t.Cleanup(f.server.Close)
	base, _ := url.Parse(f.server.URL + testBasePath)
	keyPEM, certPEM := spKeys.PEM()
	cfg := Config{BaseURL: base, KeyPEM: keyPEM, CertPEM: certPEM, IdPMetadataURL: f.idp.metadataURL()}
	if adjust != nil {
		adjust(&cfg)
	}
	sp, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.sp = sp
	metaURL := sp.MetadataURL()
	f.idp.spMeta = metaURL.String()
	mux.HandleFunc(testBasePath+"umbrella/login/", func(w http.ResponseWriter, r *http.Request) {
		if err := sp.StartLogin(w, r, testRelay); err != nil {
			t.Errorf("StartLogin: %v", err)
			http.Error(w, "login failed", http.StatusInternalServerError)
		}
	})
	mux.Handle(testBasePath+"saml/metadata", sp.MetadataHandler())
	mux.HandleFunc(testBasePath+"saml/acs", func(w http.ResponseWriter, r *http.Request) {
		id, relay, err := sp.ConsumeAssertion(w, r)
		f.results <- acsResult{id, relay, err}
		if err != nil {
			http.Error(w, "login failed", http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return f
}

// browser is an http.Client with cookies that follows redirects but, like
// a browser without JavaScript, needs the IdP's POST form submitted for it.
type browser struct {
	t      testing.TB
	client *http.Client
}

func newBrowser(t testing.TB) *browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, client: &http.Client{Jar: jar, Timeout: 30 * time.Second}}
}

type samlForm struct {
	action, samlResponse, relayState string
}

var formField = regexp.MustCompile(`name="(SAMLResponse|RelayState)" value="([^"]*)"`)
var formAction = regexp.MustCompile(`<form method="post" action="([^"]+)"`)

// startLogin visits the SP's login route and returns the IdP's auto-submit form.
func (b *browser) startLogin(f *fixture) samlForm {
	b.t.Helper()
	resp, err := b.client.Get(f.server.URL + testBasePath + "umbrella/login/")
	if err != nil {
		b.t.Fatalf("login: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Request.URL.String(), f.idp.server.URL+"/idp/sso?SAMLRequest=") {
		b.t.Fatalf("login ended at %s with %s: %s", resp.Request.URL, resp.Status, body)
	}
	q := resp.Request.URL.Query()
	if q.Get("SigAlg") != dsig.RSASHA256SignatureMethod || q.Get("Signature") == "" {
		b.t.Errorf("AuthnRequest not signed: %v", q)
	}
	m := formAction.FindSubmatch(body)
	if m == nil {
		b.t.Fatalf("no form in IdP answer: %s", body)
	}
	form := samlForm{action: html.UnescapeString(string(m[1]))}
	for _, fm := range formField.FindAllSubmatch(body, -1) {
		v := html.UnescapeString(string(fm[2]))
		if string(fm[1]) == "SAMLResponse" {
			form.samlResponse = v
		} else {
			form.relayState = v
		}
	}
	if form.samlResponse == "" {
		b.t.Fatalf("no SAMLResponse in IdP answer: %s", body)
	}
	return form
}

// post submits form to the ACS as the browser would and returns what the
// SP's ConsumeAssertion answered.
func (b *browser) post(f *fixture, form samlForm) acsResult {
	b.t.Helper()
	resp, err := b.client.PostForm(form.action, url.Values{"SAMLResponse": {form.samlResponse}, "RelayState": {form.relayState}})
	if err != nil {
		b.t.Fatalf("post to ACS: %v", err)
	}
	resp.Body.Close()
	select {
	case r := <-f.results:
		return r
	case <-time.After(10 * time.Second):
		b.t.Fatal("ACS handler never ran")
		return acsResult{}
	}
}

func (b *browser) pendingCookies(f *fixture) []*http.Cookie {
	acs := f.sp.ACSURL()
	var out []*http.Cookie
	for _, c := range b.client.Jar.Cookies(&acs) {
		if strings.HasPrefix(c.Name, requestCookiePrefix) {
			out = append(out, c)
		}
	}
	return out
}

// xmlOf / encode convert between the form value and an editable document.
func xmlOf(t testing.TB, encoded string) *etree.Document {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		t.Fatal(err)
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(raw); err != nil {
		t.Fatal(err)
	}
	return doc
}

func encode(t testing.TB, doc *etree.Document) string {
	t.Helper()
	raw, err := doc.WriteToBytes()
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(raw)
}
