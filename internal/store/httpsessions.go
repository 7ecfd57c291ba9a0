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

// SSOSubject is how a session keeps the IdP's NameID: hashed, so that the table holds
// no identifier of the person beyond the username.
func SSOSubject(nameID string) string {
	sum := sha256.Sum256([]byte("calipso sso subject\x00" + nameID))
	return hex.EncodeToString(sum[:])
}

// SetHTTPSessionSSO records which login at the identity provider the session of token
// came from: subject (SSOSubject of the NameID) and the IdP's SessionIndex.
func (s *Store) SetHTTPSessionSSO(ctx context.Context, token, subject, sessionIndex string) error {
	if len(sessionIndex) > 255 {
		return fmt.Errorf("%w: session index longer than 255 bytes", ErrInvalid)
	}
	if _, err := s.exec(ctx, `UPDATE http_sessions SET sso_subject = ?, sso_session = ? WHERE id = ?`, subject, sessionIndex, sessionKey(token)); err != nil {
		return fmt.Errorf("session sso: %w", s.wrap(err))
	}
	return nil
}

// EndHTTPSessionsBySSO ends the sessions of the IdP's login subject: those of
// sessionIndex, or all of subject's when sessionIndex is "". It returns their
// usernames, for the caches to forget.
func (s *Store) EndHTTPSessionsBySSO(ctx context.Context, subject, sessionIndex string) ([]string, error) {
	if subject == "" {
		return nil, nil
	}
	where, args := `sso_subject = ?`, []any{subject}
	if sessionIndex != "" {
		where, args = where+` AND sso_session = ?`, append(args, sessionIndex)
	}
	var names []string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT DISTINCT username FROM http_sessions WHERE `+where, args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return err
			}
			names = append(names, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM http_sessions WHERE `+where, args...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("end sessions by sso: %w", s.wrap(err))
	}
	return names, nil
}
