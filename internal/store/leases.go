package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/calipsoplus/calipso"
)

// Lease is a process's hold on a record it works on (a launch, a stop): the owner
// renews Expires by heartbeat, and no other process touches the record before it has
// passed. Owners are process identities (launch.ProcessID); "" is nobody.
type Lease struct {
	Owner   string
	Expires time.Time
}

// expiredClause is the SQL of "nobody holds the lease of r at ?": no owner, no expiry
// (records made before leases), or an expiry in the past.
const expiredClause = `(lease_owner = '' OR lease_expires IS NULL OR lease_expires < ?)`

// Renew moves the expiry of owner's leases on the records ids to expires, and returns
// how many it still held: a record another process took over is not renewed.
func (s *Store) Renew(ctx context.Context, owner string, ids []int64, expires time.Time) (int, error) {
	held := 0
	for chunk := range chunks(ids, 500) {
		args := []any{expires.UTC(), owner}
		for _, id := range chunk {
			args = append(args, id)
		}
		res, err := s.db.ExecContext(ctx, `UPDATE resources SET lease_expires = ? WHERE lease_owner = ? AND id IN (`+in(len(chunk))+`)`, args...)
		if err != nil {
			return held, fmt.Errorf("renew leases: %w", s.wrap(err))
		}
		n, _ := res.RowsAffected()
		held += int(n)
	}
	return held, nil
}

func chunks(ids []int64, size int) func(func([]int64) bool) {
	return func(yield func([]int64) bool) {
		for len(ids) > 0 {
			n := min(size, len(ids))
			if !yield(ids[:n]) {
				return
			}
			ids = ids[n:]
		}
	}
}

// Claim takes over record id in state st for l.Owner if nobody holds its lease, and
// reports whether it did. The reconciler claims a stop left unfinished before
// finishing it, so that two processes never finish one stop.
func (s *Store) Claim(ctx context.Context, id int64, st calipso.State, l Lease) (bool, error) {
	now := s.now()
	res, err := s.db.ExecContext(ctx, `UPDATE resources SET lease_owner = ?, lease_expires = ? WHERE id = ? AND state = ? AND `+
		expiredClause, l.Owner, l.Expires.UTC(), id, string(st), now)
	if err != nil {
		return false, fmt.Errorf("claim resource %d: %w", id, s.wrap(err))
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// ExpireLeasesOf makes every lease of owner expired at once: at start-up, for the
// leases of a process of this host that is known dead (its predecessor), so that its
// users' quota is not held for a lease's life.
func (s *Store) ExpireLeasesOf(ctx context.Context, owner string) (int, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE resources SET lease_expires = ? WHERE lease_owner = ?`, time.Unix(0, 0).UTC(), owner)
	if err != nil {
		return 0, fmt.Errorf("expire leases of %s: %w", owner, s.wrap(err))
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// LeaseOwners lists the owners of the leases on live records, expired or not.
func (s *Store) LeaseOwners(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT lease_owner FROM resources WHERE lease_owner <> '' AND state IN (`+in(len(calipso.LiveStates))+`)`, liveArgs()...)
	if err != nil {
		return nil, fmt.Errorf("lease owners: %w", s.wrap(err))
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var o string
		if err := rows.Scan(&o); err != nil {
			return nil, s.wrap(err)
		}
		out = append(out, o)
	}
	return out, s.wrap(rows.Err())
}

// MoveExpired is MoveFrom only if nobody holds the record's lease: the reconciler
// fails a launch whose process is gone, and never one that is still at work.
// ErrConflict when the record is not in from or its lease is held.
func (s *Store) MoveExpired(ctx context.Context, id int64, from, to calipso.State, u Update) (calipso.Resource, error) {
	if !calipso.CanMove(from, to) {
		return calipso.Resource{}, fmt.Errorf("%w: no transition from %s to %s", ErrInvalid, from, to)
	}
	return s.move(ctx, id, []calipso.State{from}, to, u, moveIf{expired: true})
}

// MoveHeld is Move only while owner holds the record's lease (expired or not, as long
// as nobody took it over): a launch or a stop that another process took over must
// not write over what that process decided. ErrConflict otherwise.
func (s *Store) MoveHeld(ctx context.Context, id int64, owner string, to calipso.State, u Update) (calipso.Resource, error) {
	from := calipso.Sources(to)
	if len(from) == 0 {
		return calipso.Resource{}, fmt.Errorf("%w: no transition to %s", ErrInvalid, to)
	}
	return s.move(ctx, id, from, to, u, moveIf{owner: owner})
}

// AcquireLease takes or renews the named lease for holder until expires, and reports
// whether holder has it: it does when nobody has, when holder had it, or when the
// previous holder's has expired.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, expires time.Time) (bool, error) {
	now := s.now()
	res, err := s.db.ExecContext(ctx, `UPDATE leases SET holder = ?, expires_at = ? WHERE name = ? AND (holder = ? OR expires_at < ?)`,
		holder, expires.UTC(), name, holder, now)
	if err != nil {
		return false, fmt.Errorf("lease %s: %w", name, s.wrap(err))
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return true, nil
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)`, name, holder, expires.UTC())
	switch {
	case err == nil:
		return true, nil
	case isUnique(err):
		return false, nil // held by another
	default:
		return false, fmt.Errorf("lease %s: %w", name, s.wrap(err))
	}
}

// ReleaseLease gives up the named lease if holder has it, so that another process
// need not wait for it to expire.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM leases WHERE name = ? AND holder = ?`, name, holder)
	if err != nil {
		return fmt.Errorf("release lease %s: %w", name, s.wrap(err))
	}
	return nil
}

// LeaseHolder says who holds the named lease, "" when nobody does.
func (s *Store) LeaseHolder(ctx context.Context, name string) (string, error) {
	var holder string
	err := s.db.QueryRowContext(ctx, `SELECT holder FROM leases WHERE name = ? AND expires_at >= ?`, name, s.now()).Scan(&holder)
	if err == sql.ErrNoRows {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("lease %s: %w", name, s.wrap(err))
	}
	return holder, nil
}

// Event is one step of a resource's life, in order (Seq counts from 1).
type Event struct {
	ResourceID int64
	Seq        int
	Stage      string
	Message    string
	Created    time.Time
}

// AddEvent appends a step to resource id's events.
func (s *Store) AddEvent(ctx context.Context, id int64, stage, message string) (Event, error) {
	e := Event{ResourceID: id, Stage: stage, Message: message, Created: s.now()}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) + 1 FROM resource_events WHERE resource_id = ?`, id).Scan(&e.Seq); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO resource_events (resource_id, seq, stage, message, created_at) VALUES (?, ?, ?, ?, ?)`,
			id, e.Seq, stage, message, e.Created)
		return err
	})
	if err != nil {
		return Event{}, fmt.Errorf("event of resource %d: %w", id, err)
	}
	return e, nil
}

// Events lists resource id's events after seq, in order.
func (s *Store) Events(ctx context.Context, id int64, after int) ([]Event, error) {
	rows, err := s.query(ctx, `SELECT seq, stage, message, created_at FROM resource_events WHERE resource_id = ? AND seq > ? ORDER BY seq`, id, after)
	if err != nil {
		return nil, fmt.Errorf("events of resource %d: %w", id, s.wrap(err))
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		e := Event{ResourceID: id}
		if err := rows.Scan(&e.Seq, &e.Stage, &e.Message, &e.Created); err != nil {
			return nil, s.wrap(err)
		}
		e.Created = e.Created.UTC()
		out = append(out, e)
	}
	return out, s.wrap(rows.Err())
}
