package store_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/store"
)

func TestRoles(t *testing.T) {
	backends(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		if _, err := s.EnsureUser(ctx, "ana"); err != nil {
			t.Fatal(err)
		}
		rolesOf := func() []string {
			t.Helper()
			u, err := s.User(ctx, "ana")
			if err != nil {
				t.Fatal(err)
			}
			return u.Roles
		}
		if got := rolesOf(); got != nil {
			t.Fatalf("a new account has roles %v", got)
		}
		steps := []struct {
			source string
			roles  []string
			want   []string
		}{
			{store.RoleGranted, []string{"staff"}, []string{"staff"}},
			{store.RoleOIDC, []string{"visitor", "staff"}, []string{"staff", "visitor"}},
			// A login that maps nothing any more drops only its own source's roles.
			{store.RoleOIDC, nil, []string{"staff"}},
			{store.RoleGranted, []string{}, nil},
		}
		for _, st := range steps {
			if _, err := s.SetRoles(ctx, "test", "ana", st.source, st.roles); err != nil {
				t.Fatalf("set %s roles %v: %v", st.source, st.roles, err)
			}
			if got := rolesOf(); !slices.Equal(got, st.want) {
				t.Fatalf("after %s = %v: roles %v, want %v", st.source, st.roles, got, st.want)
			}
		}
		for _, bad := range [][]string{{"Staff"}, {"a,b"}, {""}} {
			if _, err := s.SetRoles(ctx, "test", "ana", store.RoleGranted, bad); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("roles %q: %v, want ErrInvalid", bad, err)
			}
		}
		if _, err := s.SetRoles(ctx, "test", "nobody", store.RoleGranted, []string{"staff"}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("roles of an unknown account: %v, want ErrNotFound", err)
		}
	})
}

func TestTokens(t *testing.T) {
	backends(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		u, err := s.EnsureUser(ctx, "svc-backup")
		if err != nil {
			t.Fatal(err)
		}
		until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
		tok, secret, err := s.CreateToken(ctx, "admin", u.ID, "nightly", []calipso.Permission{calipso.PermLaunch, calipso.PermSeeAllResources}, until)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(secret, store.TokenPrefix) || len(secret) < len(store.TokenPrefix)+26 {
			t.Fatalf("secret %q", secret)
		}
		if tok.Username != "svc-backup" || tok.CreatedBy != "admin" || !tok.Expires.Equal(until) ||
			!slices.Equal(tok.Scope, []calipso.Permission{calipso.PermLaunch, calipso.PermSeeAllResources}) {
			t.Fatalf("token %+v", tok)
		}
		got, err := s.TokenBySecret(ctx, secret)
		if err != nil || got.ID != tok.ID {
			t.Fatalf("by secret: %+v, %v", got, err)
		}
		if _, err := s.TokenBySecret(ctx, secret+"x"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a wrong secret: %v, want ErrNotFound", err)
		}
		if got.LastUsed != nil {
			t.Fatalf("unused token has last use %v", got.LastUsed)
		}
		if err := s.TouchToken(ctx, tok.ID); err != nil {
			t.Fatal(err)
		}
		if got, _ = s.Token(ctx, tok.ID); got.LastUsed == nil {
			t.Fatal("use not recorded")
		}
		if list, err := s.Tokens(ctx, u.ID); err != nil || len(list) != 1 {
			t.Fatalf("list: %v, %v", list, err)
		}
		for range 2 { // revoking twice is success
			if err := s.RevokeToken(ctx, "admin", tok.ID); err != nil {
				t.Fatal(err)
			}
		}
		if got, _ = s.Token(ctx, tok.ID); got.Revoked == nil || got.Valid(time.Now()) {
			t.Fatalf("revoked token %+v", got)
		}
		if _, _, err := s.CreateToken(ctx, "admin", u.ID, "x", []calipso.Permission{"root"}, until); !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("unknown permission: %v, want ErrInvalid", err)
		}
		if err := s.RemoveUser(ctx, "admin", "svc-backup"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.TokenBySecret(ctx, secret); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("token of a removed account: %v", err)
		}
	})
}

// TestSessionsBySSO: the identity provider's single logout ends exactly the sessions
// of its login: by NameID and SessionIndex, or every one of the NameID.
func TestSessionsBySSO(t *testing.T) {
	backends(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		for _, u := range []string{"ana", "ben"} {
			if _, err := s.EnsureUser(ctx, u); err != nil {
				t.Fatal(err)
			}
		}
		until := time.Now().Add(time.Hour)
		for _, row := range []struct{ token, user, nameID, index string }{
			{"a1", "ana", "nid-ana", "idx-1"}, {"a2", "ana", "nid-ana", "idx-2"}, {"b1", "ben", "nid-ben", "idx-1"}, {"local", "ana", "", ""},
		} {
			if err := s.CreateHTTPSession(ctx, row.token, row.user, "{}", until); err != nil {
				t.Fatal(err)
			}
			if row.nameID != "" {
				if err := s.SetHTTPSessionSSO(ctx, row.token, store.SSOSubject(row.nameID), row.index); err != nil {
					t.Fatal(err)
				}
			}
		}
		alive := func(token string) bool {
			_, err := s.HTTPSessionUser(ctx, token)
			return err == nil
		}
		names, err := s.EndHTTPSessionsBySSO(ctx, store.SSOSubject("nid-ana"), "idx-1")
		if err != nil || len(names) != 1 || names[0] != "ana" {
			t.Fatalf("end ana's idx-1: %v %v", names, err)
		}
		if alive("a1") || !alive("a2") || !alive("b1") || !alive("local") {
			t.Fatal("ending one login's sessions ended others")
		}
		if _, err := s.EndHTTPSessionsBySSO(ctx, store.SSOSubject("nid-ana"), ""); err != nil {
			t.Fatal(err)
		}
		if alive("a2") || !alive("b1") || !alive("local") {
			t.Fatal("ending every session of a NameID: wrong sessions")
		}
		if names, err := s.EndHTTPSessionsBySSO(ctx, "", ""); err != nil || len(names) != 0 || !alive("local") {
			t.Fatalf("an empty subject ended sessions: %v %v", names, err)
		}
	})
}
