package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"

	"github.com/calipsoplus/calipso"
)

// The sources of a role: RoleGranted by an admin or the CLI; the others mapped at
// login from what the identity provider or the user office says.
const (
	RoleGranted = "granted"
	RoleOIDC    = "oidc"
	RoleSAML    = "saml"
	RoleOffice  = "office"
)

var roleSources = []string{RoleGranted, RoleOIDC, RoleSAML, RoleOffice}

// SetRoles makes the roles of source for username exactly roles, audited as actor
// when they change, and says whether they did. Mapping at every login calls it: an
// unchanged set writes nothing.
func (s *Store) SetRoles(ctx context.Context, actor, username, source string, roles []string) (changed bool, err error) {
	if !slices.Contains(roleSources, source) {
		return false, fmt.Errorf("%w: role source %q", ErrInvalid, source)
	}
	want := slices.Clone(roles)
	slices.Sort(want)
	want = slices.Compact(want)
	for _, r := range want {
		if !calipso.ValidRoleName(r) {
			return false, fmt.Errorf("%w: role name %q: want lowercase letters, digits, - and _", ErrInvalid, r)
		}
	}
	// Most logins and every bearer call map what is there already: a read says so
	// without a write transaction (SQLite's takes the database's write lock).
	if have, err := s.column(ctx, `SELECT role FROM user_roles JOIN users ON users.id = user_roles.user_id
		WHERE users.username = ? AND source = ? ORDER BY role`, username, source); err == nil && slices.Equal(have, want) {
		if len(have) == 0 { // no rows: is there such an account at all?
			if _, err := s.User(ctx, username); err != nil {
				return false, err
			}
		}
		return false, nil
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var id int64
		if err := tx.QueryRowContext(ctx, `SELECT id FROM users WHERE username = ?`, username).Scan(&id); err != nil {
			return fmt.Errorf("user %q: %w", username, s.wrap(err))
		}
		rows, err := tx.QueryContext(ctx, `SELECT role FROM user_roles WHERE user_id = ? AND source = ? ORDER BY role`, id, source)
		if err != nil {
			return err
		}
		var have []string
		for rows.Next() {
			var r string
			if err := rows.Scan(&r); err != nil {
				rows.Close()
				return err
			}
			have = append(have, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if slices.Equal(have, want) {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM user_roles WHERE user_id = ? AND source = ?`, id, source); err != nil {
			return err
		}
		for _, r := range want {
			if _, err := tx.ExecContext(ctx, `INSERT INTO user_roles (user_id, role, source) VALUES (?, ?, ?)`, id, r, source); err != nil {
				return err
			}
		}
		s.audit(ctx, tx, actor, "set_roles", "user", username, map[string]any{"source": source, "roles": want, "was": have})
		changed = true
		return nil
	})
	return changed, err
}

// GrantedRoles lists the roles granted to username (source RoleGranted).
func (s *Store) GrantedRoles(ctx context.Context, username string) ([]string, error) {
	return s.column(ctx, `SELECT role FROM user_roles JOIN users ON users.id = user_roles.user_id
		WHERE users.username = ? AND source = ? ORDER BY role`, username, RoleGranted)
}

// RolesHeld lists every role some account holds, from any source, sorted.
func (s *Store) RolesHeld(ctx context.Context) ([]string, error) {
	return s.column(ctx, `SELECT DISTINCT role FROM user_roles ORDER BY role`)
}

// column runs a query of one text column and returns its values.
func (s *Store) column(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := s.query(ctx, query, args...)
	if err != nil {
		return nil, s.wrap(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, s.wrap(err)
		}
		out = append(out, v)
	}
	return out, s.wrap(rows.Err())
}
