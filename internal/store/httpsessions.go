package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"log/slog"
	"time"

	"github.com/calipsoplus/calipso"
)

// HTTP sessions live server-side, so that logout really ends a session: the cookie
// carries a random token and the table holds only its SHA-256, so a copy of the
// database does not hand out live sessions.

func sessionKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// SessionUser is a live session with its user, read in one query: every
// authenticated request starts with it.
type SessionUser struct {
	Username string // "" while a federated login waits for its account
	Data     string
	Expires  time.Time
	// User is the account; nil when Username is empty or the account was removed.
	User *calipso.User
}

// HTTPSessionUser returns a live session and its account; ErrNotFound when the
// session is unknown or expired.
func (s *Store) HTTPSessionUser(ctx context.Context, token string) (SessionUser, error) {
	var (
		out       SessionUser
		expires   time.Time
		id        sql.NullInt64
		name      sql.NullString
		uuid      sql.NullString
		admin     sql.NullBool
		email     sql.NullString
		uid, gid  sql.NullInt64
		home      sql.NullString
		joined    sql.NullTime
		last, got sql.NullTime
		version   sql.NullInt64
		roles     sql.NullString
	)
	err := s.queryRow(ctx, `SELECT h.username, h.data, h.expires_at,
		u.id, u.username, u.uuid, u.is_admin, u.email, u.uid, u.gid, u.home, u.date_joined, u.last_login, u.experiments_fetched_at, u.experiments_version,
		(SELECT GROUP_CONCAT(DISTINCT role) FROM user_roles WHERE user_roles.user_id = u.id)
		FROM http_sessions h LEFT JOIN users u ON u.username = h.username AND h.username <> ''
		WHERE h.id = ?`, sessionKey(token)).
		Scan(&out.Username, &out.Data, &expires, &id, &name, &uuid, &admin, &email, &uid, &gid, &home, &joined, &last, &got, &version, &roles)
	if err != nil {
		return SessionUser{}, s.wrap(err)
	}
	if !expires.After(s.now()) {
		return SessionUser{}, ErrNotFound
	}
	out.Expires = expires.UTC()
	if id.Valid {
		out.User = &calipso.User{
			ID: id.Int64, Username: name.String, UUID: uuid.String, IsAdmin: admin.Bool, Email: email.String,
			UID: intPtr(uid), GID: intPtr(gid), Home: home.String, Joined: joined.Time.UTC(),
			LastLogin: nullTime(last), ExperimentsFetched: nullTime(got), ExperimentsVersion: version.Int64,
			Roles: splitRoles(roles.String),
		}
	}
	return out, nil
}

// SaveHTTPSession creates or replaces a session.
func (s *Store) SaveHTTPSession(ctx context.Context, token, username, data string, expires time.Time) error {
	key := sessionKey(token)
	res, err := s.exec(ctx, `UPDATE http_sessions SET username = ?, data = ?, expires_at = ? WHERE id = ?`, username, data, expires.UTC(), key)
	if err != nil {
		return fmt.Errorf("save session: %w", s.wrap(err))
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return nil
	}
	_, err = s.exec(ctx, `INSERT INTO http_sessions (id, username, data, expires_at) VALUES (?, ?, ?, ?)`, key, username, data, expires.UTC())
	if err != nil && isUnique(err) { // MySQL reports 0 rows when nothing changed
		return nil
	}
	if err != nil {
		return fmt.Errorf("save session: %w", s.wrap(err))
	}
	return nil
}

// CreateHTTPSession stores a session under a token that was never used: one write.
func (s *Store) CreateHTTPSession(ctx context.Context, token, username, data string, expires time.Time) error {
	_, err := s.exec(ctx, `INSERT INTO http_sessions (id, username, data, expires_at) VALUES (?, ?, ?, ?)`, sessionKey(token), username, data, expires.UTC())
	if err != nil {
		return fmt.Errorf("create session: %w", s.wrap(err))
	}
	return nil
}

// DeleteHTTPSession ends a session (unknown is fine).
func (s *Store) DeleteHTTPSession(ctx context.Context, token string) error {
	_, err := s.exec(ctx, `DELETE FROM http_sessions WHERE id = ?`, sessionKey(token))
	return s.wrap(err)
}

// PurgeHTTPSessions deletes expired sessions and says how many.
func (s *Store) PurgeHTTPSessions(ctx context.Context) (int64, error) {
	res, err := s.exec(ctx, `DELETE FROM http_sessions WHERE expires_at <= ?`, s.now())
	if err != nil {
		return 0, s.wrap(err)
	}
	return res.RowsAffected()
}

// PurgeLoop deletes expired sessions now and every interval until ctx ends.
func (s *Store) PurgeLoop(ctx context.Context, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, err := s.PurgeHTTPSessions(ctx); err != nil {
			log.Warn("purge sessions", "err", err)
		} else if n > 0 {
			log.Debug("expired sessions purged", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
