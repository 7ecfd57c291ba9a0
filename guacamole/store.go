package guacamole

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Ping checks that Guacamole's database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("ping guacamole database: %w", classify(err))
	}
	return nil
}

// Create writes c: its user (password salted and hashed), the connection with its
// parameters, and READ permission for the user, in one transaction. It is idempotent:
// whatever part of c is already there is brought to c (a new password replaces the
// old; a user previously made for this connection under another name is removed).
// A connection or user of the same name that Calipso did not make yields ErrConflict.
func (s *Store) Create(ctx context.Context, c Connection) error {
	if err := s.Validate(c); err != nil {
		return err
	}
	err := s.inTx(ctx, c.Name, func(ctx context.Context, tx *sql.Tx) error {
		return s.create(ctx, tx, c)
	})
	if err != nil {
		return fmt.Errorf("create guacamole connection %s: %w", c.Name, err)
	}
	s.log.InfoContext(ctx, "guacamole connection written", "connection", c.Name, "user", c.Username, "protocol", c.Protocol)
	return nil
}

// Delete removes the connection name (with its parameters, attributes and
// permissions) and the user made for it, in one transaction. Nothing there is success;
// a connection of that name that Calipso did not make is left alone.
func (s *Store) Delete(ctx context.Context, name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty connection name", ErrInvalid)
	}
	var deleted int
	err := s.inTx(ctx, name, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		deleted, err = s.delete(ctx, tx, name)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete guacamole connection %s: %w", name, err)
	}
	if deleted > 0 {
		s.log.InfoContext(ctx, "guacamole connection deleted", "connection", name)
	}
	return nil
}

// List returns, sorted, the names of the connections Calipso made (see the package
// comment for the marker), including names whose user is left without its connection.
func (s *Store) List(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`
		SELECT c.connection_name FROM guacamole_connection c
		JOIN guacamole_connection_attribute a ON a.connection_id = c.connection_id AND a.attribute_name = ?
		WHERE c.parent_id IS NULL
		UNION
		SELECT a.attribute_value FROM guacamole_user_attribute a WHERE a.attribute_name = ?`),
		AttrManagedUser, AttrManagedConnection)
	if err != nil {
		return nil, fmt.Errorf("list guacamole connections: %w", classify(err))
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("list guacamole connections: %w", classify(err))
		}
		if strings.HasPrefix(name, s.opts.NamePrefix) {
			names = append(names, name)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list guacamole connections: %w", classify(err))
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// connectionRow is a root-level connection of the wanted name; managedUser is empty
// when the connection has no marker (made by hand).
type connectionRow struct {
	id          int64
	managedUser string
	managed     bool
}

func (s *Store) connectionsNamed(ctx context.Context, tx *sql.Tx, name string) ([]connectionRow, error) {
	rows, err := tx.QueryContext(ctx, s.q(`
		SELECT c.connection_id, a.attribute_value FROM guacamole_connection c
		LEFT JOIN guacamole_connection_attribute a ON a.connection_id = c.connection_id AND a.attribute_name = ?
		WHERE c.connection_name = ? AND c.parent_id IS NULL
		ORDER BY c.connection_id`), AttrManagedUser, name)
	if err != nil {
		return nil, fmt.Errorf("find connection: %w", err)
	}
	defer rows.Close()
	var found []connectionRow
	for rows.Next() {
		var r connectionRow
		var user sql.NullString
		if err := rows.Scan(&r.id, &user); err != nil {
			return nil, fmt.Errorf("find connection: %w", err)
		}
		r.managedUser, r.managed = user.String, user.Valid
		found = append(found, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find connection: %w", err)
	}
	return found, nil
}

// managedUsers returns the entity ids of the users marked as made for connection name.
func (s *Store) managedUsers(ctx context.Context, tx *sql.Tx, name string) ([]int64, error) {
	rows, err := tx.QueryContext(ctx, s.q(`
		SELECT u.entity_id FROM guacamole_user u
		JOIN guacamole_user_attribute a ON a.user_id = u.user_id AND a.attribute_name = ?
		WHERE a.attribute_value = ?
		ORDER BY u.entity_id`), AttrManagedConnection, name)
	if err != nil {
		return nil, fmt.Errorf("find users: %w", err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("find users: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find users: %w", err)
	}
	return ids, nil
}

// userRow is the entity of a user name and, when present, its guacamole_user row and
// the connection it is marked for.
type userRow struct {
	entityID   int64
	userID     sql.NullInt64
	connection sql.NullString
}

func (s *Store) userNamed(ctx context.Context, tx *sql.Tx, username string) (userRow, bool, error) {
	var r userRow
	err := tx.QueryRowContext(ctx, s.q(`
		SELECT e.entity_id, u.user_id, a.attribute_value FROM guacamole_entity e
		LEFT JOIN guacamole_user u ON u.entity_id = e.entity_id
		LEFT JOIN guacamole_user_attribute a ON a.user_id = u.user_id AND a.attribute_name = ?
		WHERE e.type = 'USER' AND e.name = ?`), AttrManagedConnection, username).
		Scan(&r.entityID, &r.userID, &r.connection)
	if err == sql.ErrNoRows {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("find user %s: %w", username, err)
	}
	return r, true, nil
}

func (s *Store) create(ctx context.Context, tx *sql.Tx, c Connection) error {
	conns, err := s.connectionsNamed(ctx, tx, c.Name)
	if err != nil {
		return err
	}
	var connID int64
	for _, r := range conns {
		if !r.managed {
			return fmt.Errorf("%w: connection %s (id %d) was made by hand", ErrConflict, c.Name, r.id)
		}
	}
	for i, r := range conns {
		if i == 0 {
			connID = r.id
			continue
		}
		// A duplicate of ours (only possible if written outside this package): drop it.
		if err := s.exec(ctx, tx, "delete duplicate connection", `DELETE FROM guacamole_connection WHERE connection_id = ?`, r.id); err != nil {
			return err
		}
	}

	// Users made earlier for this connection under another name go.
	oldUsers, err := s.managedUsers(ctx, tx, c.Name)
	if err != nil {
		return err
	}
	user, userFound, err := s.userNamed(ctx, tx, c.Username)
	if err != nil {
		return err
	}
	for _, id := range oldUsers {
		if userFound && id == user.entityID {
			continue
		}
		if err := s.exec(ctx, tx, "delete previous user", `DELETE FROM guacamole_entity WHERE entity_id = ?`, id); err != nil {
			return err
		}
	}

	if userFound && user.userID.Valid && user.connection.String != c.Name {
		if user.connection.Valid {
			return fmt.Errorf("%w: user %s belongs to connection %s", ErrConflict, c.Username, user.connection.String)
		}
		return fmt.Errorf("%w: user %s was made by hand", ErrConflict, c.Username)
	}
	if !userFound {
		user.entityID, err = s.insertID(ctx, tx, "entity_id",
			`INSERT INTO guacamole_entity (name, type) VALUES (?, 'USER')`, c.Username)
		if err != nil {
			return fmt.Errorf("insert user entity %s: %w", c.Username, err)
		}
	}
	salt := newSalt()
	hash := HashPassword(c.Password, salt)
	if user.userID.Valid {
		err = s.exec(ctx, tx, "update user", `
			UPDATE guacamole_user SET password_hash = ?, password_salt = ?, password_date = CURRENT_TIMESTAMP,
				disabled = FALSE, expired = FALSE
			WHERE user_id = ?`, hash, salt, user.userID.Int64)
		if err != nil {
			return err
		}
	} else {
		id, err := s.insertID(ctx, tx, "user_id", `
			INSERT INTO guacamole_user (entity_id, password_hash, password_salt, password_date)
			VALUES (?, ?, ?, CURRENT_TIMESTAMP)`, user.entityID, hash, salt)
		if err != nil {
			return fmt.Errorf("insert user %s: %w", c.Username, err)
		}
		user.userID = sql.NullInt64{Int64: id, Valid: true}
		err = s.exec(ctx, tx, "mark user", `
			INSERT INTO guacamole_user_attribute (user_id, attribute_name, attribute_value) VALUES (?, ?, ?)`,
			id, AttrManagedConnection, c.Name)
		if err != nil {
			return err
		}
	}

	if connID == 0 {
		connID, err = s.insertID(ctx, tx, "connection_id", `
			INSERT INTO guacamole_connection (connection_name, parent_id, protocol) VALUES (?, NULL, ?)`,
			c.Name, c.Protocol)
		if err != nil {
			return fmt.Errorf("insert connection: %w", err)
		}
	} else {
		if err := s.exec(ctx, tx, "update connection", `UPDATE guacamole_connection SET protocol = ? WHERE connection_id = ?`, c.Protocol, connID); err != nil {
			return err
		}
		for _, q := range []string{
			`DELETE FROM guacamole_connection_parameter WHERE connection_id = ?`,
			`DELETE FROM guacamole_connection_attribute WHERE connection_id = ? AND attribute_name = ?`,
		} {
			args := []any{connID}
			if strings.Contains(q, "attribute_name") {
				args = append(args, AttrManagedUser)
			}
			if err := s.exec(ctx, tx, "clear connection", q, args...); err != nil {
				return err
			}
		}
	}
	if err := s.exec(ctx, tx, "mark connection", `
		INSERT INTO guacamole_connection_attribute (connection_id, attribute_name, attribute_value) VALUES (?, ?, ?)`,
		connID, AttrManagedUser, c.Username); err != nil {
		return err
	}
	if len(c.Params) > 0 {
		// One statement for all parameters, in a fixed order (stable lock order).
		names := make([]string, 0, len(c.Params))
		for k := range c.Params {
			names = append(names, k)
		}
		slices.Sort(names)
		var b strings.Builder
		args := make([]any, 0, 3*len(names))
		b.WriteString(`INSERT INTO guacamole_connection_parameter (connection_id, parameter_name, parameter_value) VALUES `)
		for i, k := range names {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?, ?)")
			args = append(args, connID, k, c.Params[k])
		}
		if err := s.exec(ctx, tx, "insert parameters", b.String(), args...); err != nil {
			return err
		}
	}
	if userFound {
		if err := s.exec(ctx, tx, "clear permissions", `
			DELETE FROM guacamole_connection_permission WHERE connection_id = ? AND entity_id = ?`,
			connID, user.entityID); err != nil {
			return err
		}
	}
	return s.exec(ctx, tx, "grant READ", `
		INSERT INTO guacamole_connection_permission (entity_id, connection_id, permission) VALUES (?, ?, 'READ')`,
		user.entityID, connID)
}

// delete removes what Calipso made for name and returns how many connections and
// users went.
func (s *Store) delete(ctx context.Context, tx *sql.Tx, name string) (int, error) {
	conns, err := s.connectionsNamed(ctx, tx, name)
	if err != nil {
		return 0, err
	}
	users, err := s.managedUsers(ctx, tx, name)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range conns {
		if !r.managed {
			s.log.WarnContext(ctx, "guacamole connection made by hand left alone", "connection", name, "id", r.id)
			continue
		}
		// Parameters, attributes and permissions go with it (ON DELETE CASCADE), as when
		// Guacamole deletes a connection; history rows keep their names (SET NULL).
		if err := s.exec(ctx, tx, "delete connection", `DELETE FROM guacamole_connection WHERE connection_id = ?`, r.id); err != nil {
			return n, err
		}
		n++
	}
	for _, id := range users {
		// The user row, its attributes and permissions cascade from the entity.
		if err := s.exec(ctx, tx, "delete user", `DELETE FROM guacamole_entity WHERE entity_id = ?`, id); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// Activity is the use of the connection name, from the history Guacamole writes of
// every session (guacamole_connection_history: a row per connection, its end_date
// NULL while it is open): whether a session is open now, and when the last one
// ended (zero: none ever did).
func (s *Store) Activity(ctx context.Context, name string) (open bool, lastEnd time.Time, err error) {
	var openCount int
	var last sql.NullTime
	err = s.db.QueryRowContext(ctx, s.q(`SELECT COUNT(CASE WHEN end_date IS NULL THEN 1 END), MAX(end_date)
		FROM guacamole_connection_history WHERE connection_name = ?`), name).Scan(&openCount, &last)
	if err != nil {
		return false, time.Time{}, fmt.Errorf("guacamole history of %s: %w", name, classify(err))
	}
	if last.Valid {
		lastEnd = last.Time.UTC()
	}
	return openCount > 0, lastEnd, nil
}
