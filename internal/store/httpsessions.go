package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"
)

// HTTP sessions live server-side, so that logout really ends a session: the cookie
// carries a random token and the table holds only its SHA-256, so a copy of the
// database does not hand out live sessions.

func sessionKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// HTTPSession returns a live session's owner and data; ErrNotFound when unknown or expired.
func (s *Store) HTTPSession(ctx context.Context, token string) (username, data string, err error) {
	var expires time.Time
	err = s.db.QueryRowContext(ctx, `SELECT username, data, expires_at FROM http_sessions WHERE id = ?`, sessionKey(token)).
		Scan(&username, &data, &expires)
	if err != nil {
		return "", "", s.wrap(err)
	}
	if !expires.After(s.now()) {
		return "", "", ErrNotFound
	}
	return username, data, nil
}

// SaveHTTPSession creates or replaces a session.
func (s *Store) SaveHTTPSession(ctx context.Context, token, username, data string, expires time.Time) error {
	key := sessionKey(token)
	res, err := s.db.ExecContext(ctx, `UPDATE http_sessions SET username = ?, data = ?, expires_at = ? WHERE id = ?`, username, data, expires.UTC(), key)
	if err != nil {
		return fmt.Errorf("save session: %w", s.wrap(err))
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return nil
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO http_sessions (id, username, data, expires_at) VALUES (?, ?, ?, ?)`, key, username, data, expires.UTC())
	if err != nil && isUnique(err) { // MySQL reports 0 rows when nothing changed
		return nil
	}
	if err != nil {
		return fmt.Errorf("save session: %w", s.wrap(err))
	}
	return nil
}

// DeleteHTTPSession ends a session (unknown is fine).
func (s *Store) DeleteHTTPSession(ctx context.Context, token string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM http_sessions WHERE id = ?`, sessionKey(token))
	return s.wrap(err)
}

// PurgeHTTPSessions deletes expired sessions and says how many.
func (s *Store) PurgeHTTPSessions(ctx context.Context) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM http_sessions WHERE expires_at <= ?`, s.now())
	if err != nil {
		return 0, s.wrap(err)
	}
	return res.RowsAffected()
}
