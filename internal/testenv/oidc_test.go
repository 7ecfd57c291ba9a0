package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// oidcFixture is a provider, a relying party registered with it, and the relying
// party's view of the provider through discovery.
type oidcFixture struct {
	p        *OIDCProvider
	rp       *httptest.Server
	hits     *atomic.Int32 // calls of the relying party's callback
	provider *oidc.Provider
	conf     oauth2.Config
	meta     struct {
		JWKSURI            string `json:"jwks_uri"`
		EndSessionEndpoint string `json:"end_session_endpoint"`
	}
}

func newOIDCFixture(t *testing.T, opts OIDCOptions) *oidcFixture {
	t.Helper()
	f := &oidcFixture{p: StartOIDCProvider(t, opts), hits: new(atomic.Int32)}
	f.p.AddUser("alice", "wonderland", "staff", "admins")
	f.p.AddUser("bob", "builder")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /callback", func(w http.ResponseWriter, r *http.Request) {
		f.hits.Add(1)
		io.WriteString(w, "callback")
	})
	mux.HandleFunc("GET /bye", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "bye") })
	f.rp = httptest.NewServer(mux)
	t.Cleanup(f.rp.Close)

	clientID, secret := f.p.NewClient(t, f.rp.URL+"/callback", f.rp.URL+"/bye")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	provider, err := oidc.NewProvider(ctx, f.p.Issuer)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	if err := provider.Claims(&f.meta); err != nil {
		t.Fatal(err)
	}
	f.provider = provider
	f.conf = oauth2.Config{
		ClientID:     clientID,
		ClientSecret: secret,
		Endpoint:     provider.Endpoint(),
		RedirectURL:  f.rp.URL + "/callback",
		Scopes:       []string{oidc.ScopeOpenID, "profile", "email", "groups"},
	}
	return f
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newBrowser is a browser: it keeps cookies and follows redirects.
func newBrowser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 30 * time.Second}
}

// browse sends req and returns the last response (after the redirects) and its body.
func browse(t *testing.T, b *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	res, err := b.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(body)
}

// authFlow is one authorization request's secrets, kept by the relying party.
type authFlow struct{ state, nonce, verifier string }

// authorize sends the browser to the authorization endpoint (code flow, PKCE S256, a
// nonce) and returns where it lands.
func (f *oidcFixture) authorize(t *testing.T, ctx context.Context, b *http.Client) (*http.Response, string, authFlow) {
	t.Helper()
	fl := authFlow{state: RandomHex(8), nonce: RandomHex(8), verifier: oauth2.GenerateVerifier()}
	u := f.conf.AuthCodeURL(fl.state, oauth2.S256ChallengeOption(fl.verifier), oidc.Nonce(fl.nonce))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, body := browse(t, b, req)
	return res, body, fl
}

var challengeField = regexp.MustCompile(`name="login_challenge" value="([^"]+)"`)

// isLoginForm tells whether the browser shows the login form.
func isLoginForm(res *http.Response, body string) bool {
	return res.StatusCode == http.StatusOK && res.Request.URL.Path == "/login" && challengeField.MatchString(body)
}

// signIn fills in and posts the login form that the browser shows.
func signIn(t *testing.T, ctx context.Context, b *http.Client, form *http.Response, body, username, password string) (*http.Response, string) {
	t.Helper()
	if !isLoginForm(form, body) {
		t.Fatalf("no login form at %s (%s):\n%s", form.Request.URL, form.Status, body)
	}
	values := url.Values{
		"login_challenge": {challengeField.FindStringSubmatch(body)[1]},
		"username":        {username},
		"password":        {password},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, form.Request.URL.String(), strings.NewReader(values.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return browse(t, b, req)
}

// code checks that the browser came back to the relying party's callback with the
// flow's state, and returns the authorization code.
func (f *oidcFixture) code(t *testing.T, res *http.Response, body string, fl authFlow) string {
	t.Helper()
	u := res.Request.URL
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(u.String(), f.rp.URL+"/callback") {
		t.Fatalf("browser at %s (%s), not at the callback:\n%s", u, res.Status, body)
	}
	q := u.Query()
	if q.Get("error") != "" {
		t.Fatalf("callback with error %s: %s", q.Get("error"), q.Get("error_description"))
	}
	if q.Get("state") != fl.state {
		t.Fatalf("state %q, want %q", q.Get("state"), fl.state)
	}
	if q.Get("code") == "" {
		t.Fatalf("no code in %s", u)
	}
	return q.Get("code")
}

// exchange redeems the code with the PKCE verifier and verifies the ID token (issuer,
// audience, expiry, signature, nonce).
func (f *oidcFixture) exchange(t *testing.T, ctx context.Context, code string, fl authFlow) (*oauth2.Token, *oidc.IDToken, string) {
	t.Helper()
	tok, err := f.conf.Exchange(ctx, code, oauth2.VerifierOption(fl.verifier))
	if err != nil {
		t.Fatalf("exchange the code: %v", err)
	}
	raw, ok := tok.Extra("id_token").(string)
	if !ok || raw == "" {
		t.Fatal("no id_token in the token response")
	}
	idt, err := f.provider.Verifier(&oidc.Config{ClientID: f.conf.ClientID}).Verify(ctx, raw)
	if err != nil {
		t.Fatalf("verify the ID token: %v", err)
	}
	if idt.Nonce != fl.nonce {
		t.Fatalf("ID token nonce %q, want %q", idt.Nonce, fl.nonce)
	}
	return tok, idt, raw
}

// login runs a whole authorization code flow for username in browser b.
func (f *oidcFixture) login(t *testing.T, ctx context.Context, b *http.Client, username, password string) (*oauth2.Token, *oidc.IDToken, string) {
	t.Helper()
	form, body, fl := f.authorize(t, ctx, b)
	res, body := signIn(t, ctx, b, form, body, username, password)
	return f.exchange(t, ctx, f.code(t, res, body, fl), fl)
}

type userClaims struct {
	Subject           string   `json:"sub"`
	PreferredUsername string   `json:"preferred_username"`
	Groups            []string `json:"groups"`
	Email             string   `json:"email"`
}

func checkUserClaims(t *testing.T, what string, got userClaims, username string, groups []string) {
	t.Helper()
	want := userClaims{Subject: username, PreferredUsername: username, Groups: groups, Email: username + "@example.org"}
	if got.Subject != want.Subject || got.PreferredUsername != want.PreferredUsername || got.Email != want.Email || !slices.Equal(got.Groups, want.Groups) {
		t.Errorf("%s claims %+v, want %+v", what, got, want)
	}
}

func logClaims(t *testing.T, what string, claims func(any) error) {
	t.Helper()
	var m map[string]any
	if err := claims(&m); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(m)
	t.Logf("%s claims: %s", what, b)
}

func TestOIDCProvider(t *testing.T) {
	f := newOIDCFixture(t, OIDCOptions{})

	t.Run("code flow with PKCE", func(t *testing.T) {
		ctx := testContext(t)
		for _, u := range []struct {
			name, password string
			groups         []string
		}{
			{"alice", "wonderland", []string{"staff", "admins"}},
			{"bob", "builder", []string{}},
		} {
			tok, idt, _ := f.login(t, ctx, newBrowser(t), u.name, u.password)
			var idc userClaims
			if err := idt.Claims(&idc); err != nil {
				t.Fatal(err)
			}
			checkUserClaims(t, "ID token", idc, u.name, u.groups)
			logClaims(t, "ID token", idt.Claims)

			// The access token is a JWT signed with a key of the provider's JWKS, and
			// carries the client in its aud.
			if strings.Count(tok.AccessToken, ".") != 2 {
				t.Fatalf("access token %q is not a JWT", tok.AccessToken)
			}
			if _, err := oidc.NewRemoteKeySet(ctx, f.meta.JWKSURI).VerifySignature(ctx, tok.AccessToken); err != nil {
				t.Fatalf("access token signature against %s: %v", f.meta.JWKSURI, err)
			}
			at, err := f.provider.Verifier(&oidc.Config{ClientID: f.conf.ClientID}).Verify(ctx, tok.AccessToken)
			if err != nil {
				t.Fatalf("verify the access token with aud %s: %v", f.conf.ClientID, err)
			}
			var atc struct {
				userClaims
				ClientID string     `json:"client_id"`
				Scope    []string   `json:"scp"`
				Ext      userClaims `json:"ext"`
			}
			if err := at.Claims(&atc); err != nil {
				t.Fatal(err)
			}
			logClaims(t, "access token", at.Claims)
			checkUserClaims(t, "access token", atc.userClaims, u.name, u.groups)
			atc.Ext.Subject = u.name
			checkUserClaims(t, "access token ext", atc.Ext, u.name, u.groups)
			if !slices.Equal(at.Audience, []string{f.conf.ClientID}) || atc.ClientID != f.conf.ClientID {
				t.Errorf("access token aud %v, client_id %q; want [%s]", at.Audience, atc.ClientID, f.conf.ClientID)
			}
			for _, s := range f.conf.Scopes {
				if !slices.Contains(atc.Scope, s) {
					t.Errorf("access token scp %v lacks %s", atc.Scope, s)
				}
			}

			// The userinfo endpoint takes it as a bearer token.
			info, err := f.provider.UserInfo(ctx, oauth2.StaticTokenSource(tok))
			if err != nil {
				t.Fatalf("userinfo: %v", err)
			}
			var uic userClaims
			if err := info.Claims(&uic); err != nil {
				t.Fatal(err)
			}
			checkUserClaims(t, "userinfo", uic, u.name, u.groups)
		}
	})

	t.Run("wrong credentials are refused", func(t *testing.T) {
		ctx := testContext(t)
		b := newBrowser(t)
		before := f.hits.Load()
		form, body, fl := f.authorize(t, ctx, b)
		for _, c := range []struct{ name, username, password string }{
			{"wrong password", "alice", "looking-glass"},
			{"empty password", "alice", ""},
			{"another user's password", "bob", "wonderland"},
			{"unknown user", "mallory", "wonderland"},
		} {
			res, page := signIn(t, ctx, b, form, body, c.username, c.password)
			if !isLoginForm(res, page) || !strings.Contains(page, WrongPasswordText) {
				t.Fatalf("%s: browser at %s (%s), want the login form again with %q:\n%s", c.name, res.Request.URL, res.Status, WrongPasswordText, page)
			}
			form, body = res, page
		}
		if n := f.hits.Load() - before; n != 0 {
			t.Fatalf("the callback was called %d times", n)
		}
		// The same login request then passes with the right password.
		res, page := signIn(t, ctx, b, form, body, "alice", "wonderland")
		f.exchange(t, ctx, f.code(t, res, page, fl), fl)
	})

	t.Run("every login asks for the password", func(t *testing.T) {
		ctx := testContext(t)
		b := newBrowser(t)
		f.login(t, ctx, b, "alice", "wonderland")
		res, body, _ := f.authorize(t, ctx, b)
		if !isLoginForm(res, body) {
			t.Fatalf("second login of the same browser: at %s (%s), want the login form", res.Request.URL, res.Status)
		}
	})

	t.Run("RP-initiated logout", func(t *testing.T) {
		ctx := testContext(t)
		b := newBrowser(t)
		_, _, rawID := f.login(t, ctx, b, "alice", "wonderland")
		if !strings.HasSuffix(f.meta.EndSessionEndpoint, "/oauth2/sessions/logout") {
			t.Errorf("end_session_endpoint %q", f.meta.EndSessionEndpoint)
		}
		for _, c := range []struct {
			name   string
			params url.Values
			want   string
		}{
			{"to the client's post-logout URI", url.Values{"id_token_hint": {rawID}, "post_logout_redirect_uri": {f.rp.URL + "/bye"}, "state": {"s1"}}, f.rp.URL + "/bye?state=s1"},
			{"without a hint", url.Values{}, f.p.LoggedOutURL},
		} {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.meta.EndSessionEndpoint+"?"+c.params.Encode(), nil)
			if err != nil {
				t.Fatal(err)
			}
			res, body := browse(t, b, req)
			if res.StatusCode != http.StatusOK || res.Request.URL.String() != c.want {
				t.Errorf("%s: browser at %s (%s), want %s:\n%s", c.name, res.Request.URL, res.Status, c.want, body)
			}
		}
	})
}

func TestOIDCRememberedLoginAndShortTokens(t *testing.T) {
	f := newOIDCFixture(t, OIDCOptions{AccessTokenTTL: 2 * time.Second, RememberLogin: true})
	ctx := testContext(t)
	b := newBrowser(t)
	tok, _, rawID := f.login(t, ctx, b, "alice", "wonderland")

	t.Run("access token expires", func(t *testing.T) {
		verifier := f.provider.Verifier(&oidc.Config{ClientID: f.conf.ClientID})
		at, err := verifier.Verify(ctx, tok.AccessToken)
		if err != nil {
			t.Fatalf("fresh access token: %v", err)
		}
		// exp is the issue time plus the TTL rounded to the second, iat is truncated.
		if ttl := at.Expiry.Sub(at.IssuedAt); ttl < 2*time.Second || ttl > 3*time.Second {
			t.Errorf("access token lives %v, want 2s", ttl)
		}
		time.Sleep(time.Until(at.Expiry) + time.Second)
		var expired *oidc.TokenExpiredError
		if _, err := verifier.Verify(ctx, tok.AccessToken); !errors.As(err, &expired) {
			t.Errorf("expired access token: err = %v, want a TokenExpiredError", err)
		}
		if _, err := f.provider.UserInfo(ctx, oauth2.StaticTokenSource(tok)); err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("userinfo with an expired access token: err = %v, want 401", err)
		}
	})

	t.Run("second login passes without the password", func(t *testing.T) {
		res, body, fl := f.authorize(t, ctx, b)
		f.exchange(t, ctx, f.code(t, res, body, fl), fl)
		// And another browser still has to sign in.
		if res, body, _ := f.authorize(t, ctx, newBrowser(t)); !isLoginForm(res, body) {
			t.Errorf("a new browser at %s (%s), want the login form", res.Request.URL, res.Status)
		}
	})

	t.Run("RP-initiated logout through the logout app", func(t *testing.T) {
		f.p.mu.Lock()
		before := f.p.logouts
		f.p.mu.Unlock()
		params := url.Values{"id_token_hint": {rawID}, "post_logout_redirect_uri": {f.rp.URL + "/bye"}, "state": {"s2"}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.meta.EndSessionEndpoint+"?"+params.Encode(), nil)
		if err != nil {
			t.Fatal(err)
		}
		res, body := browse(t, b, req)
		if want := f.rp.URL + "/bye?state=s2"; res.StatusCode != http.StatusOK || res.Request.URL.String() != want {
			t.Fatalf("browser at %s (%s), want %s:\n%s", res.Request.URL, res.Status, want, body)
		}
		f.p.mu.Lock()
		n := f.p.logouts - before
		f.p.mu.Unlock()
		if n != 1 {
			t.Errorf("the logout app accepted %d logouts, want 1", n)
		}
		// The session is gone: the next login asks for the password again.
		if res, body, _ := f.authorize(t, ctx, b); !isLoginForm(res, body) {
			t.Errorf("after logout: at %s (%s), want the login form", res.Request.URL, res.Status)
		}
	})
}
