package main

// Umbrella through a real identity provider: SimpleSAMLphp (Debian's package) in a
// private Apache, with the application in native SAML mode in front of the demo user
// office. What users depend on: after the frontend's logout the next login asks for
// the password again, and a logout at the IdP ends Calipso's session.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/calipsoplus/calipso/internal/testenv"
)

// frontendCalls makes the calls the frontend's autologin page makes after the IdP:
// umbrella/logout/, umbrella/session/, umbrella/wuo/.
func frontendCalls(t *testing.T, b *testenv.SAMLBrowser, app *umbrellaApp) {
	t.Helper()
	call := func(method, path string, body any) (int, []byte) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			raw, _ := json.Marshal(body)
			rd = bytes.NewReader(raw)
		}
		req, err := http.NewRequest(method, app.base+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", "application/json, text/plain, */*")
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-CSRFToken", "none")
		}
		resp, raw := b.Do(t, req)
		return resp.StatusCode, raw
	}
	if st, body := call(http.MethodGet, "umbrella/logout/", nil); st != http.StatusOK {
		t.Fatalf("umbrella/logout/ = %d %s", st, body)
	}
	st, body := call(http.MethodGet, "umbrella/session/", nil)
	var s struct{ EAAHash, UID string }
	if st != http.StatusOK || json.Unmarshal(body, &s) != nil {
		t.Fatalf("umbrella/session/ = %d %s", st, body)
	}
	if st, body := call(http.MethodPost, "umbrella/wuo/", map[string]string{"EAAHash": s.EAAHash, "uid": s.UID}); st != http.StatusOK {
		t.Fatalf("umbrella/wuo/ = %d %s", st, body)
	}
}

// whoAmI is the account authenticated/ names, "" when none.
func whoAmI(t *testing.T, b *testenv.SAMLBrowser, app *umbrellaApp) string {
	t.Helper()
	_, body := b.Get(t, app.base+"authenticated/")
	var s struct{ Username string }
	_ = json.Unmarshal(body, &s)
	return s.Username
}

func TestUmbrellaThroughSimpleSAMLphp(t *testing.T) {
	idp := testenv.StartSAMLIdP(t)
	umbrellaKeys(t)
	dir := t.TempDir()
	keyFile, certFile, mdFile := filepath.Join(dir, "sp.key"), filepath.Join(dir, "sp.crt"), filepath.Join(dir, "idp.xml")
	keyPEM, certPEM := umbrellaSPKey.PEM()
	for path, data := range map[string][]byte{keyFile: keyPEM, certFile: certPEM, mdFile: idp.MetadataXML(t)} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const entitlement = "urn:oid:1.3.6.1.4.1.5923.1.1.1.7"
	app := startAppWith(t, func(string) string {
		return fmt.Sprintf(`[umbrella]
enabled = true
mode = "saml"
idp_metadata_file = %q
sp_key_file = %q
sp_cert_file = %q

[access]
default_role = "user"
saml_attribute = %q
token_lifetime = "720h"
token_max_lifetime = "8760h"

[access.roles.staff]
saml_values = ["urn:mace:facility.example:staff"]
`, mdFile, keyFile, certFile, entitlement)
	}, `["127.0.0.1"]`)
	_, spMetadata := testenv.NewSAMLBrowser(t).Get(t, app.base+"saml/metadata")
	idp.AddSP(t, spMetadata)
	idp.AddUser("alice-umbrella", "alice-idp-secret", map[string][]string{
		"eduPersonUniqueId":    {demoHash(t, "alice")},
		"uid":                  {"alice-umbrella"},
		"eduPersonEntitlement": {"urn:mace:facility.example:staff", "urn:mace:facility.example:other"},
	})
	root := strings.TrimSuffix(app.base, "calipsoplus-services/")
	login := func(t *testing.T, b *testenv.SAMLBrowser) (askedPassword bool) {
		t.Helper()
		landed, asked := b.Browse(t, app.base+"umbrella/login/", umbrellaFrontend, "alice-umbrella", "alice-idp-secret")
		if landed != umbrellaFrontend+"/autologin" {
			t.Fatalf("the login ended at %s (%d %s), want the frontend's autologin\ntrace:\n%s\n%s", landed, b.LastStatus, b.LastBody,
				strings.Join(b.Trace, "\n"), idp.LogTail())
		}
		frontendCalls(t, b, app)
		if who := whoAmI(t, b, app); who != "alice" {
			t.Fatalf("logged in as %q, want alice", who)
		}
		return asked
	}

	b := testenv.NewSAMLBrowser(t)
	if !login(t, b) {
		t.Fatal("the first login did not ask for the password")
	}
	t.Run("roles from the SAML attribute", func(t *testing.T) {
		_, body := b.Get(t, app.base+"api/v2/me")
		var me struct{ Roles []string }
		if err := json.Unmarshal(body, &me); err != nil || !slices.Contains(me.Roles, "staff") {
			t.Errorf("api/v2/me = %s, want the staff role from eduPersonEntitlement", body)
		}
	})

	t.Run("SP-initiated logout", func(t *testing.T) {
		// The frontend's logout: umbrella/logout/, then the Shibboleth logout.
		resp, body := b.Get(t, app.base+"umbrella/logout/")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("umbrella/logout/ = %d %s", resp.StatusCode, body)
		}
		ret := umbrellaFrontend + "/login"
		landed, _ := b.Browse(t, root+"Shibboleth.sso/Logout?return="+url.QueryEscape(ret), umbrellaFrontend, "", "")
		if landed != ret {
			t.Fatalf("the logout ended at %s (%d %s), want %s\ntrace:\n%s\n%s", landed, b.LastStatus, b.LastBody, ret, strings.Join(b.Trace, "\n"), idp.LogTail())
		}
		if !slices.ContainsFunc(b.Trace, func(s string) bool { return strings.Contains(s, idp.SLOURL) }) {
			t.Errorf("the logout never went to the IdP:\n%s", strings.Join(b.Trace, "\n"))
		}
		if who := whoAmI(t, b, app); who != "" {
			t.Fatalf("still logged in as %q", who)
		}
		if !login(t, b) {
			t.Fatalf("the next login did not ask for the password: the IdP's session outlived the logout\ntrace:\n%s", strings.Join(b.Trace, "\n"))
		}
	})

	t.Run("IdP-initiated logout", func(t *testing.T) {
		done := root + "logged-out-at-the-idp"
		landed, _ := b.Browse(t, idp.LogoutURL(done), done, "", "")
		if landed != done {
			t.Fatalf("the IdP's logout ended at %s (%d %s)\ntrace:\n%s\n%s", landed, b.LastStatus, b.LastBody, strings.Join(b.Trace, "\n"), idp.LogTail())
		}
		if !slices.ContainsFunc(b.Trace, func(s string) bool { return strings.Contains(s, app.base+"saml/slo") }) {
			t.Errorf("the IdP never told Calipso:\n%s", strings.Join(b.Trace, "\n"))
		}
		if who := whoAmI(t, b, app); who != "" {
			t.Fatalf("still logged in as %q after the IdP's logout", who)
		}
		if !login(t, b) {
			t.Fatal("the login after the IdP's logout did not ask for the password")
		}
	})
}
