package main

// Umbrella in header mode behind a real Apache with mod_shib (Debian's
// libapache2-mod-shib, shibd included), configured with federation/README.md's Apache
// snippet as written, and SimpleSAMLphp as the IdP.

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"encoding/json"
	"fmt"

	"github.com/calipsoplus/calipso/internal/testenv"
)

// readmeApacheSnippet is the Apache block of federation/README.md's header mode, with
// its example backend replaced by the harness's placeholder.
func readmeApacheSnippet(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("../../federation/README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(raw), "```apache\n")
	snippet, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("federation/README.md has no ```apache block")
	}
	const example = "http://10.0.0.20:8000"
	if !strings.Contains(snippet, example) {
		t.Fatalf("the README's snippet no longer proxies to %s: update the test", example)
	}
	return strings.ReplaceAll(snippet, example, "{{BACKEND}}")
}

func TestUmbrellaBehindModShib(t *testing.T) {
	idp := testenv.StartSAMLIdP(t)
	// Apache proxies to this address; the app behind it starts once the SP's address,
	// which its login_url names, is known.
	var app atomic.Pointer[http.Handler]
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := app.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		http.Error(w, "not yet", http.StatusServiceUnavailable)
	}))
	t.Cleanup(backend.Close)
	sp := testenv.StartShibbolethSP(t, testenv.ShibSPOptions{
		IdPMetadataXML: idp.MetadataXML(t),
		Backend:        backend.URL,
		Snippet:        readmeApacheSnippet(t),
		RedirectAllow:  []string{umbrellaFrontend + "/"},
	})
	idp.AddSP(t, sp.MetadataXML(t))
	idp.AddUser("alice-umbrella", "alice-idp-secret", map[string][]string{
		"eduPersonTargetedID":  {demoHash(t, "alice")},
		"uid":                  {"alice-umbrella"},
		"eduPersonEntitlement": {"urn:mace:facility.example:staff"},
	})
	calipso := startAppWith(t, func(string) string {
		return fmt.Sprintf(`[umbrella]
enabled = true
mode = "header"
login_url = %q

[access]
default_role = "user"
saml_attribute = "entitlement"
token_lifetime = "720h"
token_max_lifetime = "8760h"

[access.roles.staff]
saml_values = ["urn:mace:facility.example:staff"]
`, sp.HandlerURL+"/Login")
	}, `["127.0.0.1"]`)
	target, err := url.Parse(calipso.base)
	if err != nil {
		t.Fatal(err)
	}
	var proxy http.Handler = httputil.NewSingleHostReverseProxy(&url.URL{Scheme: target.Scheme, Host: target.Host})
	app.Store(&proxy)

	viaApache := &umbrellaApp{base: sp.BaseURL + "calipsoplus-services/"}
	b := testenv.NewSAMLBrowser(t)
	login := func(t *testing.T) (askedPassword bool) {
		t.Helper()
		landed, asked := b.Browse(t, viaApache.base+"umbrella/login/", umbrellaFrontend, "alice-umbrella", "alice-idp-secret")
		if landed != umbrellaFrontend+"/autologin" {
			t.Fatalf("the login ended at %s (%d %s), want the frontend's autologin\ntrace:\n%s\n%s\n%s", landed, b.LastStatus, b.LastBody,
				strings.Join(b.Trace, "\n"), sp.LogTail(), idp.LogTail())
		}
		frontendCalls(t, b, viaApache)
		if who := whoAmI(t, b, viaApache); who != "alice" {
			t.Fatalf("logged in as %q, want alice", who)
		}
		return asked
	}
	if !login(t) {
		t.Fatal("the first login did not ask for the password")
	}
	// One trip to the IdP (one AuthnRequest): only umbrella/frontend/ is protected.
	if n := len(slices.DeleteFunc(slices.Clone(b.Trace), func(s string) bool { return !strings.HasPrefix(s, "GET "+idp.SSOURL+"?SAMLRequest=") })); n != 1 {
		t.Errorf("the login went to the IdP %d times\n%s", n, strings.Join(b.Trace, "\n"))
	}
	t.Run("roles from the attribute header", func(t *testing.T) {
		_, body := b.Get(t, viaApache.base+"api/v2/me")
		var me struct{ Roles []string }
		if err := json.Unmarshal(body, &me); err != nil || !slices.Contains(me.Roles, "staff") {
			t.Errorf("api/v2/me = %s, want the staff role from the entitlement header", body)
		}
	})
	t.Run("logout", func(t *testing.T) {
		if resp, body := b.Get(t, viaApache.base+"umbrella/logout/"); resp.StatusCode != http.StatusOK {
			t.Fatalf("umbrella/logout/ = %d %s", resp.StatusCode, body)
		}
		if !sp.SessionActive(t, b) {
			t.Fatal("no Shibboleth session before the Shibboleth logout: the test proves nothing")
		}
		ret := umbrellaFrontend + "/login"
		landed, _ := b.Browse(t, sp.LogoutURL(ret), umbrellaFrontend, "", "")
		if landed != ret {
			t.Fatalf("the logout ended at %s (%d %s)\ntrace:\n%s\n%s", landed, b.LastStatus, b.LastBody, strings.Join(b.Trace, "\n"), sp.LogTail())
		}
		if sp.SessionActive(t, b) {
			t.Error("the Shibboleth session outlived the logout")
		}
		if who := whoAmI(t, b, viaApache); who != "" {
			t.Errorf("still logged in as %q", who)
		}
		if !login(t) {
			t.Error("the next login did not ask for the password: the IdP's session outlived the logout")
		}
	})
}
