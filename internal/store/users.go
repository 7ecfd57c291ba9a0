package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/calipsoplus/calipso"
)

// userColumns end with the account's roles, comma-separated (role names have no
// comma: ValidRoleName).
const userColumns = `id, username, uuid, is_admin, email, uid, gid, home, date_joined, last_login, experiments_fetched_at, experiments_version,
	(SELECT GROUP_CONCAT(DISTINCT role) FROM user_roles WHERE user_roles.user_id = users.id)`

func scanUser(row interface{ Scan(...any) error }) (calipso.User, error) {
	var (
		u             calipso.User
		uid, gid      sql.NullInt64
		last, fetched sql.NullTime
		joined        time.Time
		roles         sql.NullString
	)
	err := row.Scan(&u.ID, &u.Username, &u.UUID, &u.IsAdmin, &u.Email, &uid, &gid, &u.Home, &joined, &last, &fetched, &u.ExperimentsVersion, &roles)
	u.Roles = splitRoles(roles.String)
	u.UID, u.GID, u.Joined, u.LastLogin, u.ExperimentsFetched = intPtr(uid), intPtr(gid), joined.UTC(), nullTime(last), nullTime(fetched)
	return u, err
}

// splitRoles reads the roles column of userColumns, sorted.
func splitRoles(s string) []string {
	if s == "" {
		return nil
	}
	roles := strings.Split(s, ",")
	slices.Sort(roles)
	return roles
}

// ValidUsername says whether name can be an account name: what user offices use
// (letters, digits, . _ - @), 1 to 150 characters. It keeps odd path values out.
func ValidUsername(name string) bool {
	if name == "" || len(name) > 150 || name == "." || name == ".." {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-@+", r)) {
			return false
		}
	}
	return true
}

// User returns the account named username.
func (s *Store) User(ctx context.Context, username string) (calipso.User, error) {
	u, err := scanUser(s.queryRow(ctx, `SELECT `+userColumns+` FROM users WHERE username = ?`, username))
	if err != nil {
		return calipso.User{}, fmt.Errorf("user %q: %w", username, s.wrap(err))
	}
	return u, nil
}

// EnsureUser returns the account, creating it when it does not exist yet.
func (s *Store) EnsureUser(ctx context.Context, username string) (calipso.User, error) {
	if !ValidUsername(username) {
		return calipso.User{}, fmt.Errorf("%w: username %q", ErrInvalid, username)
	}
	u, err := s.User(ctx, username)
	if err == nil || !isNotFound(err) {
		return u, err
	}
	_, err = s.exec(ctx, `INSERT INTO users (username, uuid, is_admin, email, home, date_joined) VALUES (?, ?, FALSE, '', '', ?)`,
		username, uuid.NewString(), s.now())
	if err != nil && !isUnique(err) { // another request created it first: fine
		return calipso.User{}, fmt.Errorf("create user %q: %w", username, s.wrap(err))
	}
	if err == nil {
		s.audit(ctx, s.db, "system", "create", "user", username, nil)
	}
	return s.User(ctx, username)
}

// RecordLogin creates the account on its first login and stamps last_login.
func (s *Store) RecordLogin(ctx context.Context, username string) (calipso.User, error) {
	u, err := s.EnsureUser(ctx, username)
	if err != nil {
		return calipso.User{}, err
	}
	now := s.now()
	if _, err := s.exec(ctx, `UPDATE users SET last_login = ? WHERE id = ?`, now, u.ID); err != nil {
		return calipso.User{}, fmt.Errorf("login of %q: %w", username, s.wrap(err))
	}
	u.LastLogin = &now
	return u, nil
}

// UserQuery selects a page of users.
type UserQuery struct {
	Search   string // in username and email
	Ordering string // username, last_login, date_joined, is_superuser; leading - reverses
	Page     int    // from 1
	PageSize int
}

var userOrdering = map[string]string{
	"username": "username", "last_login": "last_login", "date_joined": "date_joined",
	"is_superuser": "is_admin", "id": "id",
	"user__username": "username", // the frontend's users table (Django's field path)
}

// Users returns one page of users and the total count.
func (s *Store) Users(ctx context.Context, q UserQuery) ([]calipso.User, int, error) {
	where, args := "", []any{}
	if terms := searchTerms(q.Search); len(terms) > 0 {
		var cond string
		cond, args = searchClause(terms, "CAST(id AS CHAR)", s.fold("username"), s.fold("email"))
		where = " WHERE " + cond
	}
	order := orderBy(q.Ordering, userOrdering, "id")
	var total int
	if err := s.queryRow(ctx, `SELECT COUNT(*) FROM users`+where, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count users: %w", s.wrap(err))
	}
	rows, err := s.query(ctx, `SELECT `+userColumns+` FROM users`+where+order+` LIMIT ? OFFSET ?`,
		append(args, q.PageSize, (q.Page-1)*q.PageSize)...)
	if err != nil {
		return nil, 0, fmt.Errorf("users: %w", s.wrap(err))
	}
	defer rows.Close()
	var out []calipso.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, 0, s.wrap(err)
		}
		out = append(out, u)
	}
	return out, total, s.wrap(rows.Err())
}

// orderBy builds an ORDER BY clause from a user's ordering value, allowed fields only,
// with id as the tie-break so that pages are stable. An unknown field gives the
// default order, as Django REST framework's OrderingFilter does: the frontend logs the
// user out on any error of these pages.
func orderBy(ordering string, allowed map[string]string, def string) string {
	desc := strings.HasPrefix(ordering, "-")
	col, ok := allowed[strings.TrimPrefix(ordering, "-")]
	if !ok {
		col, desc = allowed[def], false
	}
	dir := " ASC"
	if desc {
		dir = " DESC"
	}
	return " ORDER BY " + col + dir + ", id" + dir
}

// searchTerms splits a search text as Django REST framework's SearchFilter does: on
// whitespace and commas. A row matches when every term is found in one of the fields.
func searchTerms(text string) []string {
	return strings.Fields(strings.NewReplacer("\x00", "", ",", " ").Replace(text))
}

// searchClause is the SQL condition that every term appears, case-insensitively, in
// one of cols (lower-cased SQL expressions), and its arguments.
func searchClause(terms []string, cols ...string) (string, []any) {
	var (
		and  []string
		args []any
	)
	for _, t := range terms {
		p := "%" + likeEscape(strings.ToLower(t)) + "%"
		or := make([]string, len(cols))
		for i, c := range cols {
			or[i] = c + ` LIKE ? ESCAPE '!'`
			args = append(args, p)
		}
		and = append(and, "("+strings.Join(or, " OR ")+")")
	}
	return strings.Join(and, " AND "), args
}

// SetAdmin grants or revokes admin rights.
func (s *Store) SetAdmin(ctx context.Context, actor, username string, admin bool) error {
	res, err := s.exec(ctx, `UPDATE users SET is_admin = ? WHERE username = ?`, admin, username)
	if err != nil {
		return fmt.Errorf("set admin %q: %w", username, s.wrap(err))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := s.User(ctx, username); err != nil {
			return err
		}
	}
	s.audit(ctx, s.db, actor, "set_admin", "user", username, map[string]any{"is_admin": admin})
	return nil
}

// SetIdentity sets the uid/gid/home workloads of this user run with (CLI).
func (s *Store) SetIdentity(ctx context.Context, actor, username string, uid, gid *int, home string) error {
	res, err := s.exec(ctx, `UPDATE users SET uid = ?, gid = ?, home = ? WHERE username = ?`, nullInt(uid), nullInt(gid), home, username)
	if err != nil {
		return fmt.Errorf("set identity of %q: %w", username, s.wrap(err))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := s.User(ctx, username); err != nil {
			return err
		}
	}
	s.audit(ctx, s.db, actor, "set_identity", "user", username, map[string]any{"uid": uid, "gid": gid, "home": home})
	return nil
}

// SetProfile sets the account's e-mail address and UUID (an import keeps the ones
// the user had); empty values leave a field as it is.
func (s *Store) SetProfile(ctx context.Context, actor, username, email, id string) error {
	if id != "" {
		parsed, err := uuid.Parse(id)
		if err != nil {
			return fmt.Errorf("%w: uuid %q of %s", ErrInvalid, id, username)
		}
		id = parsed.String()
	}
	if len(email) > 254 {
		return fmt.Errorf("%w: e-mail address of %s longer than 254 characters", ErrInvalid, username)
	}
	cur, err := s.User(ctx, username)
	if err != nil {
		return err
	}
	if (email == "" || email == cur.Email) && (id == "" || id == cur.UUID) {
		return nil
	}
	if email == "" {
		email = cur.Email
	}
	if id == "" {
		id = cur.UUID
	}
	if _, err := s.exec(ctx, `UPDATE users SET email = ?, uuid = ? WHERE id = ?`, email, id, cur.ID); err != nil {
		return fmt.Errorf("set profile of %q: %w", username, s.wrap(err))
	}
	s.audit(ctx, s.db, actor, "set_profile", "user", username, map[string]any{"email": email, "uuid": id})
	return nil
}

// RemoveUser deletes an account with its links, quota and sessions. Its resources'
// records stay (history) unless live, which is refused.
func (s *Store) RemoveUser(ctx context.Context, actor, username string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var id int64
		if err := tx.QueryRowContext(ctx, `SELECT id FROM users WHERE username = ?`, username).Scan(&id); err != nil {
			return fmt.Errorf("user %q: %w", username, s.wrap(err))
		}
		var live int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM resources WHERE user_id = ? AND state IN (`+in(len(calipso.LiveStates))+`)`,
			append([]any{id}, liveArgs()...)...).Scan(&live); err != nil {
			return err
		}
		if live > 0 {
			return fmt.Errorf("%w: %q has %d live resources: remove them first", ErrConflict, username, live)
		}
		for _, q := range []string{
			`DELETE FROM http_sessions WHERE username = ?`,
		} {
			if _, err := tx.ExecContext(ctx, q, username); err != nil {
				return err
			}
		}
		for _, q := range []string{
			`DELETE FROM user_experiments WHERE user_id = ?`,
			`DELETE FROM quotas WHERE user_id = ?`,
			`DELETE FROM user_roles WHERE user_id = ?`,
			`DELETE FROM api_tokens WHERE user_id = ?`,
			`DELETE FROM resources WHERE user_id = ?`,
			`DELETE FROM users WHERE id = ?`,
		} {
			if _, err := tx.ExecContext(ctx, q, id); err != nil {
				return err
			}
		}
		s.audit(ctx, tx, actor, "remove", "user", username, nil)
		return nil
	})
}

// execer is what audit needs of a DB or a Tx.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// audit records a change. It never fails the change it records: a lost audit row is
// logged by the caller's database error handling at worst.
func (s *Store) audit(ctx context.Context, db execer, actor, action, objectType, objectID string, detail any) {
	b := []byte("{}")
	if detail != nil {
		if j, err := json.Marshal(detail); err == nil {
			b = j
		}
	}
	_, _ = db.ExecContext(ctx, `INSERT INTO audit_log (at, actor, action, object_type, object_id, detail) VALUES (?, ?, ?, ?, ?, ?)`,
		s.now(), actor, action, objectType, objectID, string(b))
}

// AuditEntry is one audit row.
type AuditEntry struct {
	At                                  time.Time
	Actor, Action, ObjectType, ObjectID string
	Detail                              string
}

// Audit returns the latest entries about an object (all objects when objectType is "").
func (s *Store) Audit(ctx context.Context, objectType, objectID string, limit int) ([]AuditEntry, error) {
	q, args := `SELECT at, actor, action, object_type, object_id, detail FROM audit_log`, []any{}
	if objectType != "" {
		q += ` WHERE object_type = ? AND object_id = ?`
		args = append(args, objectType, objectID)
	}
	rows, err := s.query(ctx, q+` ORDER BY id DESC LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, s.wrap(err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		if err := rows.Scan(&e.At, &e.Actor, &e.Action, &e.ObjectType, &e.ObjectID, &e.Detail); err != nil {
			return nil, s.wrap(err)
		}
		out = append(out, e)
	}
	return out, s.wrap(rows.Err())
}

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// EnsureAdmins makes each named account exist and be an admin (settings
// auth.admins), audited as actor.
func (s *Store) EnsureAdmins(ctx context.Context, actor string, names []string) error {
	for _, name := range names {
		if _, err := s.EnsureUser(ctx, name); err != nil {
			return err
		}
		if err := s.SetAdmin(ctx, actor, name, true); err != nil {
			return err
		}
	}
	return nil
}

// RecordAction audits an action that changes nothing stored (a support session on
// another user's desktop): who, what, on which object. Unlike the audit of a change,
// its failure is returned: an action that must be audited is refused without it.
func (s *Store) RecordAction(ctx context.Context, actor, action, objectType, objectID string, detail any) error {
	b, err := json.Marshal(detail)
	if err != nil {
		return fmt.Errorf("audit %s: %w", action, err)
	}
	if _, err := s.exec(ctx, `INSERT INTO audit_log (at, actor, action, object_type, object_id, detail) VALUES (?, ?, ?, ?, ?, ?)`,
		s.now(), actor, action, objectType, objectID, string(b)); err != nil {
		return fmt.Errorf("audit %s: %w", action, s.wrap(err))
	}
	return nil
}
