package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/calipsoplus/calipso"
)

// TokenPrefix starts every personal API token, so that a leaked one is recognised
// (secret scanners) and told from an OpenID provider's JWT.
const TokenPrefix = "calipso_pat_"

// hashToken is what is stored of a token's secret. A token carries 130 random bits:
// a fast hash is enough, and a lookup by it leaks nothing through timing.
func hashToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

const tokenColumns = `api_tokens.id, api_tokens.user_id, users.username, api_tokens.name, api_tokens.scope, api_tokens.created_by,
	api_tokens.created_at, api_tokens.expires_at, api_tokens.last_used_at, api_tokens.revoked_at`

func scanToken(row interface{ Scan(...any) error }) (calipso.Token, error) {
	var (
		t              calipso.Token
		scope          string
		used, revoked  sql.NullTime
		created, until time.Time
	)
	if err := row.Scan(&t.ID, &t.UserID, &t.Username, &t.Name, &scope, &t.CreatedBy, &created, &until, &used, &revoked); err != nil {
		return calipso.Token{}, err
	}
	for _, p := range strings.Split(scope, ",") {
		if p != "" {
			t.Scope = append(t.Scope, calipso.Permission(p))
		}
	}
	t.Created, t.Expires, t.LastUsed, t.Revoked = created.UTC(), until.UTC(), nullTime(used), nullTime(revoked)
	return t, nil
}

// CreateToken makes a token for the user of userID and returns it with its secret,
// which is never stored and cannot be read again.
func (s *Store) CreateToken(ctx context.Context, actor string, userID int64, name string, scope []calipso.Permission, expires time.Time) (calipso.Token, string, error) {
	if name == "" || len(name) > 100 {
		return calipso.Token{}, "", fmt.Errorf("%w: a token's name is 1 to 100 characters", ErrInvalid)
	}
	parts := make([]string, len(scope))
	for i, p := range scope {
		if _, err := calipso.ParsePermission(string(p)); err != nil {
			return calipso.Token{}, "", fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		parts[i] = string(p)
	}
	secret := TokenPrefix + strings.ToLower(rand.Text())
	now := s.now()
	res, err := s.exec(ctx, `INSERT INTO api_tokens (user_id, name, secret_hash, scope, created_by, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		userID, name, hashToken(secret), strings.Join(parts, ","), actor, now, expires.UTC())
	if err != nil {
		return calipso.Token{}, "", fmt.Errorf("create token: %w", s.wrap(err))
	}
	id, err := res.LastInsertId()
	if err != nil {
		return calipso.Token{}, "", fmt.Errorf("create token: %w", s.wrap(err))
	}
	t, err := s.Token(ctx, id)
	if err != nil {
		return calipso.Token{}, "", err
	}
	s.audit(ctx, s.db, actor, "create_token", "user", t.Username, map[string]any{"token": id, "name": name, "scope": parts, "expires": t.Expires})
	return t, secret, nil
}

// Token returns the token of id.
func (s *Store) Token(ctx context.Context, id int64) (calipso.Token, error) {
	t, err := scanToken(s.queryRow(ctx, `SELECT `+tokenColumns+` FROM api_tokens JOIN users ON users.id = api_tokens.user_id WHERE api_tokens.id = ?`, id))
	if err != nil {
		return calipso.Token{}, fmt.Errorf("token %d: %w", id, s.wrap(err))
	}
	return t, nil
}

// TokenBySecret returns the token a secret belongs to, valid or not (the caller
// checks Valid), or ErrNotFound.
func (s *Store) TokenBySecret(ctx context.Context, secret string) (calipso.Token, error) {
	t, err := scanToken(s.queryRow(ctx, `SELECT `+tokenColumns+` FROM api_tokens JOIN users ON users.id = api_tokens.user_id WHERE api_tokens.secret_hash = ?`, hashToken(secret)))
	if err != nil {
		return calipso.Token{}, fmt.Errorf("token: %w", s.wrap(err))
	}
	return t, nil
}

// Tokens lists the tokens of the user of userID, or every user's when userID is 0,
// newest first.
func (s *Store) Tokens(ctx context.Context, userID int64) ([]calipso.Token, error) {
	where, args := "", []any{}
	if userID != 0 {
		where, args = ` WHERE api_tokens.user_id = ?`, []any{userID}
	}
	rows, err := s.query(ctx, `SELECT `+tokenColumns+` FROM api_tokens JOIN users ON users.id = api_tokens.user_id`+where+` ORDER BY api_tokens.id DESC`, args...)
	if err != nil {
		return nil, s.wrap(err)
	}
	return collect(s, rows, scanToken)
}

// RevokeToken ends the token of id for good. Revoking a revoked token is success.
func (s *Store) RevokeToken(ctx context.Context, actor string, id int64) error {
	t, err := s.Token(ctx, id)
	if err != nil {
		return err
	}
	if t.Revoked != nil {
		return nil
	}
	if _, err := s.exec(ctx, `UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL`, s.now(), id); err != nil {
		return fmt.Errorf("revoke token %d: %w", id, s.wrap(err))
	}
	s.audit(ctx, s.db, actor, "revoke_token", "user", t.Username, map[string]any{"token": id, "name": t.Name})
	return nil
}

// tokenUseResolution is how precisely last use is kept: a token used in a loop
// writes at most once a minute.
const tokenUseResolution = time.Minute

// TouchToken records that the token of id was used now.
func (s *Store) TouchToken(ctx context.Context, id int64) error {
	now := s.now()
	_, err := s.exec(ctx, `UPDATE api_tokens SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)`,
		now, id, now.Add(-tokenUseResolution))
	if err != nil {
		return fmt.Errorf("token %d: record use: %w", id, s.wrap(err))
	}
	return nil
}
