package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/quotas"
)

func liveArgs() []any {
	out := make([]any, len(calipso.LiveStates))
	for i, s := range calipso.LiveStates {
		out[i] = string(s)
	}
	return out
}

const resourceColumns = `r.id, r.user_id, u.username, r.experiment, r.session_id, r.public_name, r.image, r.protocol, r.resource_type, r.state,
	r.cpu, r.memory_bytes, r.hdd_bytes, r.engine_name, r.engine_id, r.host_port, r.guacamole_username, r.guacamole_password,
	r.vnc_password, r.info, r.error, r.created_at, r.updated_at, i.id, r.expires_at, r.idle_since, r.warned_at, r.started_at, r.ended_at`

const resourceFrom = ` FROM resources r JOIN users u ON u.id = r.user_id LEFT JOIN images i ON i.public_name = r.public_name`

func scanResource(row interface{ Scan(...any) error }) (calipso.Resource, error) {
	var (
		r                                 calipso.Resource
		session                           sql.NullInt64
		imageID                           sql.NullInt64
		state                             string
		expires, idle, warned, start, end sql.NullTime
	)
	err := row.Scan(&r.ID, &r.UserID, &r.Username, &r.Experiment, &session, &r.PublicName, &r.Image, &r.Protocol, &r.ResourceType, &state,
		&r.CPU, &r.MemoryBytes, &r.DiskBytes, &r.EngineName, &r.EngineID, &r.HostPort, &r.GuacamoleUsername, &r.GuacamolePassword,
		&r.VNCPassword, &r.Info, &r.Error, &r.Created, &r.Updated, &imageID, &expires, &idle, &warned, &start, &end)
	r.ExpiresAt, r.IdleSince, r.WarnedAt, r.Started, r.Ended = nullTime(expires), nullTime(idle), nullTime(warned), nullTime(start), nullTime(end)
	if session.Valid {
		r.SessionID = &session.Int64
	}
	if imageID.Valid {
		r.ImageID = &imageID.Int64
	}
	r.State = calipso.State(state)
	r.Created, r.Updated = r.Created.UTC(), r.Updated.UTC()
	return r, err
}

// Launch is what Reserve needs to know of a launch.
type Launch struct {
	UserID        int64
	Experiment    string
	SessionID     *int64
	Image         calipso.Image
	Default       calipso.Quota // applies when the user has no quota of their own
	VNCPassword   string
	NameOf        func(id int64) string // engine name from the record id
	OnePerSession bool                  // refuse a second live resource for the session
	// Lease is the launching process's hold on the pending record.
	Lease Lease
	// ExpiresAt is when the record's lifetime ends (nil: never).
	ExpiresAt *time.Time
}

// InterruptedLaunch is the error of a launch whose process let its lease expire.
const InterruptedLaunch = "launch interrupted: try again"

// QuotaError says which limit a launch would pass.
type QuotaError struct{ Reason string }

func (e *QuotaError) Error() string { return e.Reason }

// Unwrap makes it an ErrConflict, for errors.Is and its error code.
func (e *QuotaError) Unwrap() error { return ErrConflict }

// Reserve checks the user's quota and records the launch as pending, in one
// transaction: the user's row is locked first, so concurrent launches of one user are
// serialised and can never exceed the quota together.
func (s *Store) Reserve(ctx context.Context, l Launch) (calipso.Resource, error) {
	share := quotas.ImageShare(l.Image)
	var id int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		lock := `SELECT id FROM users WHERE id = ?`
		if s.dialect == mysqlDialect {
			lock += ` FOR UPDATE` // SQLite's immediate transaction already holds the write lock
		}
		var uid int64
		if err := tx.QueryRowContext(ctx, lock, l.UserID).Scan(&uid); err != nil {
			return fmt.Errorf("user %d: %w", l.UserID, s.wrap(err))
		}
		// A launch whose process is gone holds no quota: its record fails here, in the
		// same transaction, rather than when the reconciler next passes (its workload,
		// if any, is an orphan the reconciler removes). Records without an owner (made
		// before leases, or by callers that hold none) are the reconciler's to judge.
		if _, err := tx.ExecContext(ctx, `UPDATE resources SET state = ?, error = ?, lease_owner = '', lease_expires = NULL, updated_at = ?
			WHERE user_id = ? AND state = ? AND lease_owner <> '' AND lease_expires < ?`,
			string(calipso.Failed), InterruptedLaunch, s.now(), l.UserID, string(calipso.Pending), s.now()); err != nil {
			return err
		}
		limit := l.Default
		var own calipso.Quota
		err := tx.QueryRowContext(ctx, `SELECT max_simultaneous, cpu, memory_bytes, hdd_bytes FROM quotas WHERE user_id = ?`, l.UserID).
			Scan(&own.MaxSimultaneous, &own.CPUs, &own.MemoryBytes, &own.DiskBytes)
		switch {
		case err == nil:
			limit = own
		case err != sql.ErrNoRows:
			return err
		}
		used, err := s.usage(ctx, tx, l.UserID)
		if err != nil {
			return err
		}
		if reason := limit.Exceeded(used, share); reason != "" {
			return &QuotaError{Reason: reason}
		}
		if l.OnePerSession {
			// The frontend ties a resource to its session row by the session number alone
			// (calipso_experiment), so two live ones with the same number can't be told apart.
			rows, err := tx.QueryContext(ctx, `SELECT experiment FROM resources WHERE user_id = ? AND state IN (`+in(len(calipso.LiveStates))+`)`,
				append([]any{l.UserID}, liveArgs()...)...)
			if err != nil {
				return err
			}
			defer rows.Close()
			want, _ := calipso.SplitExperiment(l.Experiment)
			for rows.Next() {
				var e string
				if err := rows.Scan(&e); err != nil {
					return err
				}
				if got, _ := calipso.SplitExperiment(e); got == want {
					return fmt.Errorf("%w: Resource already launched for %s", ErrConflict, want)
				}
			}
			if err := rows.Err(); err != nil {
				return err
			}
			rows.Close()
		}
		now := s.now()
		var leaseExpires any // NULL without an owner: free for any process to take over
		if l.Lease.Owner != "" {
			leaseExpires = l.Lease.Expires.UTC()
		}
		var expiresAt any
		if l.ExpiresAt != nil {
			expiresAt = l.ExpiresAt.UTC()
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO resources (user_id, experiment, session_id, public_name, image, protocol, resource_type, state,
			cpu, memory_bytes, hdd_bytes, vnc_password, info, error, created_at, updated_at, lease_owner, lease_expires, expires_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', '', ?, ?, ?, ?, ?)`,
			l.UserID, l.Experiment, l.SessionID, l.Image.PublicName, l.Image.Image, l.Image.Protocol, l.Image.ResourceType, string(calipso.Pending),
			share.CPUs, share.MemoryBytes, share.DiskBytes, l.VNCPassword, now, now, l.Lease.Owner, leaseExpires, expiresAt)
		if err != nil {
			return err
		}
		if id, err = res.LastInsertId(); err != nil {
			return err
		}
		if l.NameOf != nil {
			if _, err := tx.ExecContext(ctx, `UPDATE resources SET engine_name = ? WHERE id = ?`, l.NameOf(id), id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return calipso.Resource{}, err
	}
	return s.Resource(ctx, id)
}

func (s *Store) usage(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, userID int64) (calipso.Quota, error) {
	var (
		used calipso.Quota
		cpu  sql.NullFloat64
		mem  sql.NullInt64
		hdd  sql.NullInt64
	)
	err := q.QueryRowContext(ctx, `SELECT COUNT(*), SUM(cpu), SUM(memory_bytes), SUM(hdd_bytes) FROM resources WHERE user_id = ? AND state IN (`+in(len(calipso.LiveStates))+`)`,
		append([]any{userID}, liveArgs()...)...).Scan(&used.MaxSimultaneous, &cpu, &mem, &hdd)
	used.CPUs, used.MemoryBytes, used.DiskBytes = cpu.Float64, mem.Int64, hdd.Int64
	return used, err
}

// Usage sums the user's live resources.
func (s *Store) Usage(ctx context.Context, userID int64) (calipso.Quota, error) {
	u, err := s.usage(ctx, s.db, userID)
	return u, s.wrap(err)
}

// Resource returns one record.
func (s *Store) Resource(ctx context.Context, id int64) (calipso.Resource, error) {
	r, err := scanResource(s.queryRow(ctx, `SELECT `+resourceColumns+resourceFrom+` WHERE r.id = ?`, id))
	if err != nil {
		return calipso.Resource{}, fmt.Errorf("resource %d: %w", id, s.wrap(err))
	}
	return r, nil
}

// ResourceByName returns the record of an engine name.
func (s *Store) ResourceByName(ctx context.Context, name string) (calipso.Resource, error) {
	r, err := scanResource(s.queryRow(ctx, `SELECT `+resourceColumns+resourceFrom+` WHERE r.engine_name = ?`, name))
	if err != nil {
		return calipso.Resource{}, fmt.Errorf("resource %q: %w", name, s.wrap(err))
	}
	return r, nil
}

// ResourceFilter selects records.
type ResourceFilter struct {
	UserID int64           // 0: every user
	States []calipso.State // empty: every state
	Before time.Time
	// LeaseExpiredAt, when set, keeps the records nobody holds a lease on at that time.
	LeaseExpiredAt time.Time
	// EngineNames, when set, keeps the records of these workloads.
	EngineNames []string
}

// Resources lists records, newest first.
func (s *Store) Resources(ctx context.Context, f ResourceFilter) ([]calipso.Resource, error) {
	var (
		where []string
		args  []any
	)
	if f.UserID != 0 {
		where = append(where, `r.user_id = ?`)
		args = append(args, f.UserID)
	}
	if len(f.States) > 0 {
		where = append(where, `r.state IN (`+in(len(f.States))+`)`)
		for _, st := range f.States {
			args = append(args, string(st))
		}
	}
	if !f.Before.IsZero() {
		where = append(where, `r.updated_at < ?`)
		args = append(args, f.Before.UTC())
	}
	if !f.LeaseExpiredAt.IsZero() {
		where = append(where, expiredClause) // its columns are the resources table's alone
		args = append(args, f.LeaseExpiredAt.UTC())
	}
	if len(f.EngineNames) > 0 {
		where = append(where, `r.engine_name IN (`+in(len(f.EngineNames))+`)`)
		for _, n := range f.EngineNames {
			args = append(args, n)
		}
	}
	q := `SELECT ` + resourceColumns + resourceFrom
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	return s.resources(ctx, q+` ORDER BY r.id`, args...) // oldest first, as the original listed them
}

// resources runs a query of resourceColumns and returns its records.
func (s *Store) resources(ctx context.Context, query string, args ...any) ([]calipso.Resource, error) {
	rows, err := s.query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("resources: %w", s.wrap(err))
	}
	return collect(s, rows, scanResource)
}

// Update holds the fields a transition may set (nil: unchanged).
type Update struct {
	EngineID          *string
	HostPort          *string
	GuacamoleUsername *string
	GuacamolePassword *string
	Info              *string
	Error             *string
	// Lease, when set, is who holds the record in its new state. Without it a move to
	// a state nobody works on (running, stopped, failed, removed) drops the lease.
	Lease *Lease
}

// Move changes a resource's state if the transition is allowed from its current
// state, setting the given fields, and returns the record. ErrConflict when the
// resource is in a state the transition can't start from.
func (s *Store) Move(ctx context.Context, id int64, to calipso.State, u Update) (calipso.Resource, error) {
	from := calipso.Sources(to)
	if len(from) == 0 {
		return calipso.Resource{}, fmt.Errorf("%w: no transition to %s", ErrInvalid, to)
	}
	return s.move(ctx, id, from, to, u, moveIf{})
}

// moveIf are the conditions of a move beyond the record's state.
type moveIf struct {
	owner   string // the lease is still this owner's
	expired bool   // nobody holds the lease
}

// MoveFrom is Move only from the state the caller saw: a reconciler that found a
// resource running must not fail it if a Stop moved it on in the meantime.
// ErrConflict when the resource is no longer in from.
func (s *Store) MoveFrom(ctx context.Context, id int64, from, to calipso.State, u Update) (calipso.Resource, error) {
	if !calipso.CanMove(from, to) {
		return calipso.Resource{}, fmt.Errorf("%w: no transition from %s to %s", ErrInvalid, from, to)
	}
	return s.move(ctx, id, []calipso.State{from}, to, u, moveIf{})
}

func (s *Store) move(ctx context.Context, id int64, from []calipso.State, to calipso.State, u Update, cond moveIf) (calipso.Resource, error) {
	now := s.now()
	set := []string{`state = ?`, `updated_at = ?`}
	args := []any{string(to), now}
	switch {
	case to == calipso.Running:
		set = append(set, `started_at = COALESCE(started_at, ?)`)
		args = append(args, now)
	case !to.Live():
		set = append(set, `ended_at = COALESCE(ended_at, ?)`) // the first end counts: removing a stopped record is no second one
		args = append(args, now)
	}
	switch {
	case u.Lease != nil:
		set = append(set, `lease_owner = ?`, `lease_expires = ?`)
		args = append(args, u.Lease.Owner, u.Lease.Expires.UTC())
	case to != calipso.Pending && to != calipso.Stopping:
		set = append(set, `lease_owner = ''`, `lease_expires = NULL`)
	}
	for _, f := range []struct {
		col string
		v   *string
	}{{"engine_id", u.EngineID}, {"host_port", u.HostPort}, {"guacamole_username", u.GuacamoleUsername},
		{"guacamole_password", u.GuacamolePassword}, {"info", u.Info}, {"error", u.Error}} {
		if f.v != nil {
			set = append(set, f.col+` = ?`)
			args = append(args, *f.v)
		}
	}
	args = append(args, id)
	for _, st := range from {
		args = append(args, string(st))
	}
	where := ` WHERE id = ? AND state IN (` + in(len(from)) + `)`
	if cond.owner != "" {
		where += ` AND lease_owner = ?`
		args = append(args, cond.owner)
	}
	if cond.expired {
		where += ` AND ` + expiredClause
		args = append(args, now)
	}
	res, err := s.exec(ctx, `UPDATE resources SET `+strings.Join(set, ", ")+where, args...)
	if err != nil {
		return calipso.Resource{}, fmt.Errorf("resource %d to %s: %w", id, to, s.wrap(err))
	}
	r, err := s.Resource(ctx, id)
	if err != nil {
		return calipso.Resource{}, err
	}
	if n, _ := res.RowsAffected(); n == 0 && (r.State != to || cond.owner != "" || cond.expired) {
		if cond.owner != "" || cond.expired {
			return r, fmt.Errorf("%w: resource %d is %s and its lease is another process's, it can't become %s", ErrConflict, id, r.State, to)
		}
		return r, fmt.Errorf("%w: resource %d is %s, it can't become %s", ErrConflict, id, r.State, to)
	}
	return r, nil
}
