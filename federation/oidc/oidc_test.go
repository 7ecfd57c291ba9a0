package oidc

import (
	"context"
	"errors"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
)

func TestClaimByDottedName(t *testing.T) {
	claims := map[string]any{
		"preferred_username": "ana",
		"realm_access":       map[string]any{"roles": []any{"staff", "admin"}},
	}
	for _, tt := range []struct {
		name string
		want any
	}{
		{"preferred_username", "ana"},
		{"realm_access.roles", []any{"staff", "admin"}},
		{"realm_access.missing", nil},
		{"preferred_username.deeper", nil},
		{"absent", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := claim(claims, tt.name); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("claim(%q) = %v, want %v", tt.name, got, tt.want)
			}
		})
	}
}

func TestNewChecksAndDefaults(t *testing.T) {
	if _, err := New(Config{ClientID: "c", RedirectURL: "https://x/cb"}); err == nil {
		t.Error("no issuer accepted")
	}
	p, err := New(Config{IssuerURL: "https://idp", ClientID: "c", RedirectURL: "https://x/cb", Scopes: []string{"profile"}})
	if err != nil {
		t.Fatal(err)
	}
	if p.cfg.Scopes[0] != "openid" || p.cfg.UsernameClaim != "preferred_username" || p.cfg.Audience != "c" || p.cfg.Timeout != 10*time.Second {
		t.Errorf("defaults: %+v", p.cfg)
	}
}

// TestProviderDown: every call that needs the provider says it is unavailable (503),
// quickly, and a callback that does not match its login is refused (401) before the
// provider is even asked.
func TestProviderDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	p, err := New(Config{IssuerURL: "http://" + addr, ClientID: "c", RedirectURL: "https://x/cb", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, _, err := p.Begin(ctx); !errors.Is(err, ErrUnavailable) || calipso.ErrorCode(err) != calipso.EUNAVAILABLE {
		t.Errorf("Begin: %v, want unavailable", err)
	}
	if _, err := p.VerifyBearer(ctx, "a.b.c"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("VerifyBearer: %v, want unavailable", err)
	}
	if u := p.LogoutURL(ctx, "", "https://front/"); u != "" {
		t.Errorf("LogoutURL = %q, want none", u)
	}
	for _, tt := range []struct{ name, kept, got, code string }{
		{"state differs", "s1", "s2", "c"},
		{"no state kept", "", "", "c"},
		{"no code", "s1", "s1", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := p.Finish(ctx, Pending{State: tt.kept}, tt.got, tt.code)
			if !errors.Is(err, ErrRefused) || calipso.ErrorCode(err) != calipso.EUNAUTHORIZED {
				t.Errorf("Finish: %v, want refused", err)
			}
		})
	}
}
