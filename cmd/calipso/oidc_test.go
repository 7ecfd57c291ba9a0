package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/calipsoplus/calipso/internal/testenv"
)

// TestOIDCLoginThroughTheApp: the [oidc] settings as an operator writes them (the
// client secret from the environment's file form, the callback derived from
// backend_url) give a working OpenID login against a real provider: the browser lands
// on the frontend and authenticated/ answers the provider's username.
func TestOIDCLoginThroughTheApp(t *testing.T) {
	op := testenv.StartOIDCProvider(t, testenv.OIDCOptions{})
	op.AddUser("olga", "olga-secret")
	var clientID string
	app := startAppWith(t, func(base string) string {
		id, secret := op.NewClient(t, base+"oidc/callback/")
		clientID = id
		return fmt.Sprintf("[umbrella]\nenabled = false\n\n[oidc]\nenabled = true\nissuer_url = %q\nclient_id = %q\nclient_secret = %q\nlogin_redirect = %q\n",
			op.Issuer, id, secret, umbrellaFrontend+"/navigation")
	}, `["127.0.0.1"]`)
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Jar: jar, Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	landed := testenv.SignIn(t, c, app.base+"oidc/authenticate/", umbrellaFrontend, "olga", "olga-secret", false)
	if landed != umbrellaFrontend+"/navigation" {
		t.Errorf("landed on %s, want oidc.login_redirect", landed)
	}
	resp, err := c.Get(app.base + "authenticated/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"username":"olga"`) {
		t.Fatalf("authenticated/ = %d %s (client %s)", resp.StatusCode, body, clientID)
	}
}
