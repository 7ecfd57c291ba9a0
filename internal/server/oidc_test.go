package server_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/federation/oidc"
	"github.com/calipsoplus/calipso/internal/testenv"
	"github.com/calipsoplus/calipso/settings"
)

// lateOpenID is the server's OpenID provider, set once the harness's URL (the
// callback's) is known and registered at the provider.
type lateOpenID struct {
	mu sync.Mutex
	p  *oidc.Provider
}

func (l *lateOpenID) get() *oidc.Provider { l.mu.Lock(); defer l.mu.Unlock(); return l.p }
func (l *lateOpenID) Begin(ctx context.Context) (string, oidc.Pending, error) {
	return l.get().Begin(ctx)
}
func (l *lateOpenID) Finish(ctx context.Context, p oidc.Pending, state, code string) (oidc.Identity, error) {
	return l.get().Finish(ctx, p, state, code)
}
func (l *lateOpenID) VerifyBearer(ctx context.Context, raw string) (oidc.Identity, error) {
	return l.get().VerifyBearer(ctx, raw)
}
func (l *lateOpenID) LogoutURL(ctx context.Context, hint, returnTo string) string {
	return l.get().LogoutURL(ctx, hint, returnTo)
}

// oidcSetup is a harness whose users log in through a real OpenID provider (hydra).
type oidcSetup struct {
	h        *harness
	op       *testenv.OIDCProvider
	clientID string
	secret   string
	callback string
}

func newOIDCSetup(t *testing.T, opts testenv.OIDCOptions, hopts ...harnessOption) *oidcSetup {
	t.Helper()
	op := testenv.StartOIDCProvider(t, opts)
	late := &lateOpenID{}
	h := newHarness(t, append([]harnessOption{withOpenID(late), withStaffGroup()}, hopts...)...)
	s := &oidcSetup{h: h, op: op, callback: h.api("oidc/callback/")}
	s.clientID, s.secret = op.NewClient(t, s.callback, h.srv.URL+"/")
	p, err := oidc.New(oidc.Config{IssuerURL: op.Issuer, ClientID: s.clientID, ClientSecret: s.secret, RedirectURL: s.callback,
		Scopes: []string{"openid", "profile", "email", "groups"}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	late.mu.Lock()
	late.p = p
	late.mu.Unlock()
	return s
}

// staffGroup is the provider's group that the OIDC tests map to the staff role.
const staffGroup = "beamline-staff"

func withStaffGroup() harnessOption {
	return withSettings(func(c *settings.Settings) {
		staff := c.Access.Policy.Roles[calipso.RoleStaff]
		staff.OIDCGroups = []string{staffGroup}
		c.Access.Policy.Roles[calipso.RoleStaff] = staff
	})
}

// tokenFor gets an access token for user the way a script would, through a browser
// sign-in with the given client (code flow with PKCE, x/oauth2).
func (s *oidcSetup) tokenFor(t *testing.T, clientID, secret, redirect, user, password string) *oauth2.Token {
	t.Helper()
	ctx := context.Background()
	cfg := &oauth2.Config{ClientID: clientID, ClientSecret: secret, RedirectURL: redirect, Scopes: []string{"openid", "profile", "email"},
		Endpoint: oauth2.Endpoint{AuthURL: s.op.Issuer + "/oauth2/auth", TokenURL: s.op.Issuer + "/oauth2/token"}}
	verifier, state := oauth2.GenerateVerifier(), testenv.RandomHex(8)
	back := testenv.SignIn(t, newJarClient(t), cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)), redirect, user, password, false)
	u, err := url.Parse(back)
	if err != nil || u.Query().Get("state") != state {
		t.Fatalf("redirect %q: %v", back, err)
	}
	tok, err := cfg.Exchange(ctx, u.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func newJarClient(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// TestOIDCBrowserLogin: the frontend's OpenID login through a real provider. The
// browser goes oidc/authenticate/ → the provider's sign-in → oidc/callback/ → the
// frontend, and is then logged in as the provider's preferred_username
// (authenticated/ answers it); a wrong password logs nobody in; a callback that is
// not this browser's login is refused; oidc/logout/ ends the session and goes
// through the provider's logout back to the frontend.
func TestOIDCBrowserLogin(t *testing.T) {
	s := newOIDCSetup(t, testenv.OIDCOptions{})
	s.op.AddUser("olga", "olga-secret", staffGroup)
	b := s.h.browser()

	landed := testenv.SignIn(t, b.c, s.h.api("oidc/authenticate/"), s.h.cfg.FrontendURL, "olga", "olga-secret", false)
	if landed != strings.TrimSuffix(s.h.cfg.FrontendURL, "/")+"/" {
		t.Errorf("after the callback the browser went to %s, want the frontend", landed)
	}
	a := b.do(http.MethodGet, "authenticated/", nil)
	wantStatus(t, a, http.StatusOK)
	if got := a.object(t); got["username"] != "olga" || got["authenticated"] != "true" {
		t.Fatalf("authenticated/ = %s", a.body)
	}
	wantStatus(t, b.do(http.MethodGet, "users/olga/", nil), http.StatusOK)
	// Her provider group made her staff: the right role, from the login.
	var me map[string]any
	b.do(http.MethodGet, "api/v2/me", nil).json(t, &me)
	if roles, _ := me["roles"].([]any); !slices.Contains(roles, any(calipso.RoleStaff)) {
		t.Errorf("olga's roles after the login = %v, want staff", me["roles"])
	}
	wantStatus(t, b.do(http.MethodGet, "login/type/", nil), http.StatusOK)

	// Logout: the session ends here, and the browser goes to the provider and back.
	resp, err := b.c.Get(s.h.api("oidc/logout/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, s.op.Issuer) ||
		!strings.Contains(loc, "id_token_hint=") {
		t.Errorf("oidc/logout/ = %d %q, want the provider's end_session with the id token hint", resp.StatusCode, loc)
	}
	wantStatus(t, b.do(http.MethodGet, "authenticated/", nil), http.StatusUnauthorized)

	t.Run("wrong password", func(t *testing.T) {
		b := s.h.browser()
		if got := testenv.SignIn(t, b.c, s.h.api("oidc/authenticate/"), s.h.cfg.FrontendURL, "olga", "guess", true); got != "" {
			t.Fatalf("logged in with a wrong password: %s", got)
		}
		wantStatus(t, b.do(http.MethodGet, "authenticated/", nil), http.StatusUnauthorized)
	})
	t.Run("callback of another browser's login", func(t *testing.T) {
		// The attacker's own login, up to the callback with its code: a victim's
		// browser sent there has no login under way, and is not logged in as the
		// attacker.
		attacker := s.h.browser()
		callback := testenv.SignIn(t, attacker.c, s.h.api("oidc/authenticate/"), s.callback, "olga", "olga-secret", false)
		victim := s.h.browser()
		resp, err := victim.c.Get(callback)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("a callback without this browser's login = %d, want 400", resp.StatusCode)
		}
		wantStatus(t, victim.do(http.MethodGet, "authenticated/", nil), http.StatusUnauthorized)
	})
	t.Run("provider refuses", func(t *testing.T) {
		b := s.h.browser()
		resp, err := b.c.Get(s.h.api("oidc/authenticate/")) // a login under way, then the provider's error
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		a := b.doURL(http.MethodGet, s.callback+"?error=access_denied&error_description=no", nil)
		wantError(t, a, http.StatusUnauthorized)
	})
}

// TestOIDCBearerTokens: on the v2 API an access token of the provider, issued to
// Calipso's client, authenticates its user (made on first use), with no cookie and no
// CSRF token; tampered, expired and other clients' (wrong audience) tokens are 401,
// and a token is no way onto the cookie API.
func TestOIDCBearerTokens(t *testing.T) {
	s := newOIDCSetup(t, testenv.OIDCOptions{AccessTokenTTL: 3 * time.Second})
	s.op.AddUser("olga", "olga-secret")
	tok := s.tokenFor(t, s.clientID, s.secret, s.callback, "olga", "olga-secret")

	otherRedirect := s.h.srv.URL + "/other-callback"
	otherID, otherSecret := s.op.NewClient(t, otherRedirect)
	other := s.tokenFor(t, otherID, otherSecret, otherRedirect, "olga", "olga-secret")

	parts := strings.Split(tok.AccessToken, ".")
	if len(parts) != 3 {
		t.Fatalf("the access token is not a JWT: %q", tok.AccessToken)
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[0] ^= 0xff
	tampered := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)

	call := func(token, method, path string, body any) answer {
		t.Helper()
		b := s.h.browser()
		b.origin = "" // a script, not a page
		b.header.Set("Authorization", "Bearer "+token)
		if method == http.MethodPost {
			b.header.Set("X-CSRFToken", "") // none: a token needs none
		}
		return b.do(method, path, body)
	}
	// The image list is not v2: a missing record is the cheapest v2 call that needs a user.
	a := call(tok.AccessToken, http.MethodGet, "api/v2/resources/999999", nil)
	wantError(t, a, http.StatusNotFound) // authenticated: the record is just not there
	if _, err := s.h.db.User(context.Background(), "olga"); err != nil {
		t.Errorf("the token's user has no account: %v", err)
	}
	a = call(tok.AccessToken, http.MethodPost, "api/v2/resources", map[string]string{"experiment": "nope~nope", "image": "nope"})
	if a.status == http.StatusForbidden || a.status == http.StatusUnauthorized {
		t.Errorf("POST with a bearer token and no CSRF token = %d %s, want it judged by the token", a.status, a.body)
	}
	for _, tt := range []struct{ name, token string }{
		{"tampered", tampered},
		{"another client's", other.AccessToken},
		{"not a JWT", "opaque-token"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := call(tt.token, http.MethodGet, "api/v2/resources/999999", nil)
			wantError(t, a, http.StatusUnauthorized)
			if !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate = %q", a.header.Get("WWW-Authenticate"))
			}
		})
	}
	t.Run("cookie API", func(t *testing.T) {
		wantStatus(t, call(tok.AccessToken, http.MethodGet, "users/olga/", nil), http.StatusUnauthorized)
	})
	t.Run("expired", func(t *testing.T) {
		time.Sleep(time.Until(tok.Expiry) + time.Second)
		wantError(t, call(tok.AccessToken, http.MethodGet, "api/v2/resources/999999", nil), http.StatusUnauthorized)
	})
}

// TestAccessJWT: the access matrix's v2 rows with the OpenID provider's access
// tokens. The provider's groups give the role at every call, so a group taken away
// is a role gone with the next token; a JWT (unlike an API token) may make tokens.
func TestAccessJWT(t *testing.T) {
	s := newOIDCSetup(t, testenv.OIDCOptions{})
	s.op.AddUser("olga", "olga-secret", staffGroup)
	s.op.AddUser("omar", "omar-secret")
	jwt := map[string]string{
		"olga": s.tokenFor(t, s.clientID, s.secret, s.callback, "olga", "olga-secret").AccessToken,
		"omar": s.tokenFor(t, s.clientID, s.secret, s.callback, "omar", "omar-secret").AccessToken,
	}
	for _, tt := range []struct {
		user, method, path string
		body               any
		want               int
	}{
		{"olga", http.MethodGet, "api/v2/me", nil, http.StatusOK},
		{"olga", http.MethodGet, "api/v2/resources?all=true", nil, http.StatusOK},
		{"omar", http.MethodGet, "api/v2/resources?all=true", nil, http.StatusForbidden},
		{"olga", http.MethodGet, "api/v2/users/omar/roles", nil, http.StatusForbidden},
		{"omar", http.MethodPut, "api/v2/users/omar/roles", map[string]any{"roles": []string{"admin"}}, http.StatusForbidden},
		{"omar", http.MethodGet, "api/v2/tokens?all=true", nil, http.StatusForbidden},
		{"omar", http.MethodPost, "api/v2/tokens", map[string]any{"name": "from a jwt"}, http.StatusCreated},
		{"omar", http.MethodPost, "api/v2/tokens", map[string]any{"name": "beyond", "scope": []string{"see_all_resources"}}, http.StatusForbidden},
		{"olga", http.MethodPost, "api/v2/tokens", map[string]any{"name": "support", "scope": []string{"support_access"}}, http.StatusCreated},
	} {
		t.Run(tt.user+" "+tt.method+" "+tt.path, func(t *testing.T) {
			a := bearerBrowser(s.h, jwt[tt.user]).in(t).do(tt.method, tt.path, tt.body)
			if a.status != tt.want {
				t.Fatalf("= %d %s, want %d", a.status, a.body, tt.want)
			}
		})
	}
	var me map[string]any
	bearerBrowser(s.h, jwt["olga"]).in(t).do(http.MethodGet, "api/v2/me", nil).json(t, &me)
	if roles, _ := me["roles"].([]any); !slices.Contains(roles, any(calipso.RoleStaff)) || me["via"] != "oidc" {
		t.Errorf("olga's JWT = %v, want staff by oidc", me)
	}

	t.Run("group taken away", func(t *testing.T) {
		s.op.AddUser("olga", "olga-secret") // no group now
		fresh := s.tokenFor(t, s.clientID, s.secret, s.callback, "olga", "olga-secret").AccessToken
		wantError(t, bearerBrowser(s.h, fresh).in(t).do(http.MethodGet, "api/v2/resources?all=true", nil), http.StatusForbidden)
		var me map[string]any
		bearerBrowser(s.h, fresh).in(t).do(http.MethodGet, "api/v2/me", nil).json(t, &me)
		if roles, _ := me["roles"].([]any); slices.Contains(roles, any(calipso.RoleStaff)) {
			t.Errorf("olga keeps staff without the group: %v", me["roles"])
		}
	})
}
