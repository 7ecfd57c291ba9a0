// Package oidc logs users in through an OpenID Connect provider (Keycloak, say): the
// authorization code flow with PKCE for browsers, and bearer JWTs signed by the same
// provider for scripts. It wraps coreos/go-oidc (discovery, keys, token checks) and
// golang.org/x/oauth2 (the code exchange).
package oidc

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/calipsoplus/calipso"
)

var (
	// ErrUnavailable: the provider could not be reached (discovery, keys, the token
	// endpoint), or answered with a server error.
	ErrUnavailable = calipso.NewError(calipso.EUNAVAILABLE, "the OpenID provider cannot be reached")
	// ErrRefused: the provider, or the checks of what it sent, refused the login or
	// the token (a bad signature, the wrong audience, expired, a replayed state).
	ErrRefused = calipso.NewError(calipso.EUNAUTHORIZED, "OpenID login refused")
)

// Config is a relying party's registration at its provider.
type Config struct {
	IssuerURL    string
	ClientID     string
	ClientSecret string
	RedirectURL  string   // this API's oidc/callback/, as registered at the provider
	Scopes       []string // default: openid profile email
	// UsernameClaim names the account (default preferred_username); GroupsClaim the
	// groups or roles (default groups). A dotted name reaches into an object:
	// Keycloak's realm roles are realm_access.roles.
	UsernameClaim, GroupsClaim string
	// Audience is what a bearer token's aud must hold (default: ClientID).
	Audience string
	// Timeout bounds each call to the provider (default 10s).
	Timeout time.Duration
	Logger  *slog.Logger
}

// Identity is who the provider vouched for.
type Identity struct {
	Subject  string
	Username string
	Email    string
	Groups   []string
	// IDToken is the raw ID token of a browser login: the hint of a logout at the
	// provider. Empty for bearer tokens. AccessToken is the login's access token (for
	// a catalogue that takes it: icat.openid_connect).
	IDToken     string
	AccessToken string
	Expiry      time.Time
}

// Pending is a login between Begin and Finish: the browser keeps it (sealed) and
// brings it back with the provider's answer.
type Pending struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"` // PKCE code verifier
}

// Provider is one OpenID provider. Discovery happens on first use, and again after
// a failure, so that Calipso starts while the provider is down.
type Provider struct {
	cfg  Config
	http *http.Client

	mu       sync.Mutex
	provider *oidc.Provider
	endSess  string // end_session_endpoint, if the provider has one
}

// New checks cfg; it does not contact the provider.
func New(cfg Config) (*Provider, error) {
	if cfg.IssuerURL == "" || cfg.ClientID == "" || cfg.RedirectURL == "" {
		return nil, errors.New("oidc: issuer, client id and redirect url are required")
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = []string{oidc.ScopeOpenID, "profile", "email"}
	}
	if !slices.Contains(cfg.Scopes, oidc.ScopeOpenID) {
		cfg.Scopes = append([]string{oidc.ScopeOpenID}, cfg.Scopes...)
	}
	if cfg.UsernameClaim == "" {
		cfg.UsernameClaim = "preferred_username"
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = "groups"
	}
	if cfg.Audience == "" {
		cfg.Audience = cfg.ClientID
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Provider{cfg: cfg, http: &http.Client{Timeout: cfg.Timeout}}, nil
}

// client puts the bounded HTTP client where go-oidc and oauth2 look for it.
func (p *Provider) client(ctx context.Context) context.Context {
	return context.WithValue(oidc.ClientContext(ctx, p.http), oauth2.HTTPClient, p.http)
}

// discover returns the provider's metadata, fetched once.
func (p *Provider) discover(ctx context.Context) (*oidc.Provider, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.provider != nil {
		return p.provider, nil
	}
	// go-oidc keeps this context's HTTP client (only that: not its deadline) for
	// fetching the provider's keys later.
	dctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	op, err := oidc.NewProvider(p.client(dctx), p.cfg.IssuerURL)
	if err != nil {
		return nil, fmt.Errorf("%w: discovery at %s: %w", ErrUnavailable, p.cfg.IssuerURL, err)
	}
	var extra struct {
		EndSession string `json:"end_session_endpoint"`
	}
	_ = op.Claims(&extra)
	p.provider, p.endSess = op, extra.EndSession
	return op, nil
}

// Ping checks that the provider's metadata can be had (for readiness).
func (p *Provider) Ping(ctx context.Context) error {
	_, err := p.discover(ctx)
	return err
}

func (p *Provider) oauth(op *oidc.Provider) *oauth2.Config {
	return &oauth2.Config{ClientID: p.cfg.ClientID, ClientSecret: p.cfg.ClientSecret, RedirectURL: p.cfg.RedirectURL,
		Endpoint: op.Endpoint(), Scopes: p.cfg.Scopes}
}

// Begin starts a browser login: the URL to send the browser to, and what to keep
// until it comes back.
func (p *Provider) Begin(ctx context.Context) (string, Pending, error) {
	op, err := p.discover(ctx)
	if err != nil {
		return "", Pending{}, err
	}
	pd := Pending{State: rand.Text(), Nonce: rand.Text(), Verifier: oauth2.GenerateVerifier()}
	return p.oauth(op).AuthCodeURL(pd.State, oauth2.S256ChallengeOption(pd.Verifier), oidc.Nonce(pd.Nonce)), pd, nil
}

// Finish ends a browser login: state and code are what the provider sent back
// (the callback's query), pd what Begin kept.
func (p *Provider) Finish(ctx context.Context, pd Pending, state, code string) (Identity, error) {
	if pd.State == "" || state != pd.State {
		return Identity{}, fmt.Errorf("%w: the login's state does not match (an old tab, or a forged callback)", ErrRefused)
	}
	if code == "" {
		return Identity{}, fmt.Errorf("%w: no code in the callback", ErrRefused)
	}
	op, err := p.discover(ctx)
	if err != nil {
		return Identity{}, err
	}
	ctx, cancel := context.WithTimeout(p.client(ctx), p.cfg.Timeout)
	defer cancel()
	tok, err := p.oauth(op).Exchange(ctx, code, oauth2.VerifierOption(pd.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
			return Identity{}, fmt.Errorf("%w: code exchange: %s %s", ErrRefused, re.ErrorCode, re.ErrorDescription)
		}
		return Identity{}, fmt.Errorf("%w: code exchange: %w", ErrUnavailable, err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return Identity{}, fmt.Errorf("%w: the token response has no id_token", ErrRefused)
	}
	idt, err := op.Verifier(&oidc.Config{ClientID: p.cfg.ClientID}).Verify(ctx, raw)
	if err != nil {
		return Identity{}, p.verifyError("id token", err)
	}
	if idt.Nonce != pd.Nonce {
		return Identity{}, fmt.Errorf("%w: the id token's nonce does not match", ErrRefused)
	}
	id, err := p.identity(idt)
	if err != nil {
		return Identity{}, err
	}
	id.IDToken, id.AccessToken = raw, tok.AccessToken
	return id, nil
}

// VerifyBearer checks a bearer JWT (an access token of this provider): signature,
// issuer, audience and expiry, and returns whom it names.
func (p *Provider) VerifyBearer(ctx context.Context, raw string) (Identity, error) {
	op, err := p.discover(ctx)
	if err != nil {
		return Identity{}, err
	}
	ctx, cancel := context.WithTimeout(p.client(ctx), p.cfg.Timeout)
	defer cancel()
	t, err := op.Verifier(&oidc.Config{ClientID: p.cfg.Audience}).Verify(ctx, raw)
	if err != nil {
		return Identity{}, p.verifyError("bearer token", err)
	}
	return p.identity(t)
}

// verifyError tells a token that is wrong from keys that could not be fetched.
func (p *Provider) verifyError(what string, err error) error {
	var te *oidc.TokenExpiredError
	switch {
	case errors.As(err, &te):
		return fmt.Errorf("%w: %s expired at %s", ErrRefused, what, te.Expiry.Format(time.RFC3339))
	case strings.Contains(err.Error(), "fetching keys"): // go-oidc has no error type for it
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
	default:
		return fmt.Errorf("%w: %s: %w", ErrRefused, what, err)
	}
}

func (p *Provider) identity(t *oidc.IDToken) (Identity, error) {
	var claims map[string]any
	if err := t.Claims(&claims); err != nil {
		return Identity{}, fmt.Errorf("%w: claims: %w", ErrRefused, err)
	}
	id := Identity{Subject: t.Subject, Expiry: t.Expiry}
	id.Username, _ = claim(claims, p.cfg.UsernameClaim).(string)
	id.Email, _ = claims["email"].(string)
	switch g := claim(claims, p.cfg.GroupsClaim).(type) {
	case []any:
		for _, v := range g {
			if s, ok := v.(string); ok {
				id.Groups = append(id.Groups, strings.TrimPrefix(s, "/")) // Keycloak's group paths
			}
		}
	case string:
		id.Groups = []string{strings.TrimPrefix(g, "/")}
	}
	if id.Username == "" {
		return Identity{}, fmt.Errorf("%w: the token has no %s claim", ErrRefused, p.cfg.UsernameClaim)
	}
	return id, nil
}

// claim reads a claim by a dotted name.
func claim(claims map[string]any, name string) any {
	var v any = claims
	for part := range strings.SplitSeq(name, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[part]
	}
	return v
}

// LogoutURL is where to send a browser to end its session at the provider too
// (RP-initiated logout), returning to returnTo; "" when the provider offers none
// or cannot be reached.
func (p *Provider) LogoutURL(ctx context.Context, idTokenHint, returnTo string) string {
	if _, err := p.discover(ctx); err != nil {
		return ""
	}
	p.mu.Lock()
	end := p.endSess
	p.mu.Unlock()
	if end == "" {
		return ""
	}
	u, err := url.Parse(end)
	if err != nil {
		return ""
	}
	q := u.Query()
	if idTokenHint != "" {
		q.Set("id_token_hint", idTokenHint)
	}
	q.Set("client_id", p.cfg.ClientID)
	if returnTo != "" {
		q.Set("post_logout_redirect_uri", returnTo)
	}
	u.RawQuery = q.Encode()
	return u.String()
}
