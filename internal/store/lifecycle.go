package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/calipsoplus/calipso"
)

// SetExpiry sets when the lifetime of the resource of id ends (nil: never), and
// clears its warning: a new expiry deserves a new one.
func (s *Store) SetExpiry(ctx context.Context, id int64, at *time.Time) error {
	var v any
	if at != nil {
		v = at.UTC()
	}
	if _, err := s.exec(ctx, `UPDATE resources SET expires_at = ?, warned_at = NULL WHERE id = ?`, v, id); err != nil {
		return fmt.Errorf("resource %d: expiry: %w", id, s.wrap(err))
	}
	return nil
}

// SetIdleSince records since when the resource of id is idle (its latest activity;
// nil: it is active now). With clearWarning, its warning goes too: it was about this
// idleness, which activity has just moved.
func (s *Store) SetIdleSince(ctx context.Context, id int64, since *time.Time, clearWarning bool) error {
	var v any
	if since != nil {
		v = since.UTC()
	}
	q := `UPDATE resources SET idle_since = ? WHERE id = ?`
	if clearWarning {
		q = `UPDATE resources SET idle_since = ?, warned_at = NULL WHERE id = ?`
	}
	if _, err := s.exec(ctx, q, v, id); err != nil {
		return fmt.Errorf("resource %d: idle since: %w", id, s.wrap(err))
	}
	return nil
}

// SetWarned records that the resource's user was warned at.
func (s *Store) SetWarned(ctx context.Context, id int64, at time.Time) error {
	if _, err := s.exec(ctx, `UPDATE resources SET warned_at = ? WHERE id = ?`, at.UTC(), id); err != nil {
		return fmt.Errorf("resource %d: warned: %w", id, s.wrap(err))
	}
	return nil
}

const extensionColumns = `id, resource_id, requested_by, seconds, reason, state, decided_by, created_at, decided_at`

func scanExtension(row interface{ Scan(...any) error }) (calipso.Extension, error) {
	var (
		e       calipso.Extension
		seconds int64
		decided sql.NullTime
	)
	err := row.Scan(&e.ID, &e.ResourceID, &e.RequestedBy, &seconds, &e.Reason, &e.State, &e.DecidedBy, &e.Created, &decided)
	e.Duration, e.Created, e.Decided = time.Duration(seconds)*time.Second, e.Created.UTC(), nullTime(decided)
	return e, err
}

// maxReason bounds an extension's reason.
const maxReason = 1000

// RequestExtension records a request for d more lifetime of the resource of id, with
// reason, audited as actor. With grant, it is granted at once (decided by "policy")
// and the resource's expiry moves in the same transaction; otherwise it waits for
// DecideExtension.
func (s *Store) RequestExtension(ctx context.Context, actor string, id int64, d time.Duration, reason string, grant bool) (calipso.Extension, error) {
	reason = strings.TrimSpace(reason)
	switch {
	case reason == "" || len(reason) > maxReason:
		return calipso.Extension{}, fmt.Errorf("%w: an extension needs a reason, of at most %d bytes", ErrInvalid, maxReason)
	case d < time.Hour || d%time.Second != 0:
		return calipso.Extension{}, fmt.Errorf("%w: an extension is whole seconds, an hour at least", ErrInvalid)
	}
	state, decidedBy := calipso.ExtensionPending, ""
	if grant {
		state, decidedBy = calipso.ExtensionGranted, "policy"
	}
	var extID int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		now := s.now()
		var decided any
		if grant {
			decided = now
			if err := extendTx(ctx, tx, id, d); err != nil {
				return err
			}
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO extensions (resource_id, requested_by, seconds, reason, state, decided_by, created_at, decided_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, id, actor, int64(d/time.Second), reason, state, decidedBy, now, decided)
		if err != nil {
			return err
		}
		if extID, err = res.LastInsertId(); err != nil {
			return err
		}
		s.audit(ctx, tx, actor, "request_extension", "resource", fmt.Sprint(id), map[string]any{"extension": extID, "seconds": int64(d / time.Second), "reason": reason, "state": state})
		return nil
	})
	if err != nil {
		return calipso.Extension{}, fmt.Errorf("extension of resource %d: %w", id, s.wrap(err))
	}
	return s.Extension(ctx, extID)
}

// extendTx moves a live resource's expiry d later; ErrConflict when it has none
// (nothing to extend) or is no longer live.
func extendTx(ctx context.Context, tx *sql.Tx, id int64, d time.Duration) error {
	var expires sql.NullTime
	var state string
	if err := tx.QueryRowContext(ctx, `SELECT expires_at, state FROM resources WHERE id = ?`, id).Scan(&expires, &state); err != nil {
		if err == sql.ErrNoRows {
			return fmt.Errorf("resource %d: %w", id, ErrNotFound)
		}
		return err
	}
	if !calipso.State(state).Live() || !expires.Valid {
		return fmt.Errorf("%w: resource %d is %s, without an expiry to extend", ErrConflict, id, state)
	}
	_, err := tx.ExecContext(ctx, `UPDATE resources SET expires_at = ?, warned_at = NULL WHERE id = ?`, expires.Time.Add(d).UTC(), id)
	return err
}

// DecideExtension grants or refuses the pending extension of id, as actor (an
// admin), moving the resource's expiry when granted. ErrConflict when it is decided
// already.
func (s *Store) DecideExtension(ctx context.Context, actor string, id int64, grant bool) (calipso.Extension, error) {
	state := calipso.ExtensionRefused
	if grant {
		state = calipso.ExtensionGranted
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		e, err := scanExtension(tx.QueryRowContext(ctx, `SELECT `+extensionColumns+` FROM extensions WHERE id = ?`, id))
		if err == sql.ErrNoRows {
			return fmt.Errorf("extension %d: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if e.State != calipso.ExtensionPending {
			return fmt.Errorf("%w: extension %d is %s already", ErrConflict, id, e.State)
		}
		if grant {
			if err := extendTx(ctx, tx, e.ResourceID, e.Duration); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE extensions SET state = ?, decided_by = ?, decided_at = ? WHERE id = ?`, state, actor, s.now(), id); err != nil {
			return err
		}
		s.audit(ctx, tx, actor, "decide_extension", "resource", fmt.Sprint(e.ResourceID), map[string]any{"extension": id, "state": state})
		return nil
	})
	if err != nil {
		return calipso.Extension{}, s.wrap(err)
	}
	return s.Extension(ctx, id)
}

// Extension returns the extension of id.
func (s *Store) Extension(ctx context.Context, id int64) (calipso.Extension, error) {
	e, err := scanExtension(s.queryRow(ctx, `SELECT `+extensionColumns+` FROM extensions WHERE id = ?`, id))
	if err != nil {
		return calipso.Extension{}, fmt.Errorf("extension %d: %w", id, s.wrap(err))
	}
	return e, nil
}

// Extensions lists the extensions of the resource of resourceID (0: every resource's),
// in state (empty: any), oldest first.
func (s *Store) Extensions(ctx context.Context, resourceID int64, state string) ([]calipso.Extension, error) {
	var where []string
	var args []any
	if resourceID != 0 {
		where, args = append(where, `resource_id = ?`), append(args, resourceID)
	}
	if state != "" {
		where, args = append(where, `state = ?`), append(args, state)
	}
	q := `SELECT ` + extensionColumns + ` FROM extensions`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	rows, err := s.query(ctx, q+` ORDER BY id`, args...)
	if err != nil {
		return nil, s.wrap(err)
	}
	return collect(s, rows, scanExtension)
}

// RanBetween lists the resources that were running at some time between from and
// to (started before to, and not ended before from), for accounting.
func (s *Store) RanBetween(ctx context.Context, from, to time.Time) ([]calipso.Resource, error) {
	return s.resources(ctx, `SELECT `+resourceColumns+resourceFrom+` WHERE r.started_at IS NOT NULL AND r.started_at < ?
		AND (r.ended_at IS NULL OR r.ended_at > ?) ORDER BY r.id`, to.UTC(), from.UTC())
}
