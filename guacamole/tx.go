package guacamole

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/calipsoplus/calipso"
)

// errLockBusy: another operation on the same name held the lock for LockTimeout.
var errLockBusy = calipso.NewError(calipso.EUNAVAILABLE, "another operation on this connection is still running")

// inTx runs fn in a READ COMMITTED transaction holding the lock for name, and runs it
// again (with backoff) when the database chose it as a deadlock victim or the
// connection was lost.
func (s *Store) inTx(ctx context.Context, name string, fn func(context.Context, *sql.Tx) error) error {
	backoff := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := s.tryTx(ctx, name, fn)
		if err == nil {
			return nil
		}
		// A connection lost on the way is tried once more on a fresh one (a pooled
		// connection may have died while idle); Create and Delete are idempotent, so
		// this is safe even when a commit's outcome is unknown.
		lost := attempt == 1 && unreachable(err)
		if !(lost || retryable(err)) || attempt >= s.opts.MaxAttempts {
			return classify(err)
		}
		s.log.DebugContext(ctx, "guacamole transaction retried", "connection", name, "attempt", attempt, "err", err)
		wait := backoff + rand.N(backoff) // jitter keeps two victims from meeting again
		backoff *= 2
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (after %v)", ctx.Err(), err)
		case <-time.After(wait):
		}
	}
}

func (s *Store) tryTx(ctx context.Context, name string, fn func(context.Context, *sql.Tx) error) (err error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	if s.dialect == MySQL {
		// GET_LOCK belongs to the session, not the transaction: take it on this
		// connection and release it after the transaction, whatever happened.
		unlock, err := s.lockMySQL(ctx, conn, name)
		if err != nil {
			return err
		}
		defer unlock()
	}
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if s.dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, lockKey(name)); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
	}
	if err := fn(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// lockKey names the per-connection lock; it is hashed to fit GET_LOCK's 64 characters.
func lockKey(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "guac:" + hex.EncodeToString(sum[:])[:40]
}

func (s *Store) lockMySQL(ctx context.Context, conn *sql.Conn, name string) (unlock func(), err error) {
	wait := s.opts.LockTimeout
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
		wait = time.Until(deadline)
	}
	seconds := max(1, int(wait.Round(time.Second)/time.Second))
	// GET_LOCK is server-wide: the database name keeps two Guacamole databases on one
	// server apart.
	key := `CONCAT(?, '/', IFNULL(DATABASE(), ''))`
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(`+key+`, ?)`, lockKey(name), seconds).Scan(&got); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if !got.Valid || got.Int64 != 1 {
		return nil, fmt.Errorf("lock: %w (waited %ds)", errLockBusy, seconds)
	}
	return func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.ExecContext(rctx, `DO RELEASE_LOCK(`+key+`)`, lockKey(name)); err != nil {
			// A connection that may still hold the lock must not go back to the pool;
			// closing it ends the session, which releases the lock.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}, nil
}

// q rewrites ? placeholders for the dialect. The queries here have no ? in literals.
func (s *Store) q(query string) string {
	if s.dialect != Postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (s *Store) exec(ctx context.Context, tx *sql.Tx, what, query string, args ...any) error {
	if _, err := tx.ExecContext(ctx, s.q(query), args...); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// insertID runs an INSERT and returns the generated idColumn.
func (s *Store) insertID(ctx context.Context, tx *sql.Tx, idColumn, query string, args ...any) (int64, error) {
	if s.dialect == Postgres {
		var id int64
		err := tx.QueryRowContext(ctx, s.q(query)+" RETURNING "+idColumn, args...).Scan(&id)
		return id, err
	}
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}

// retryable: the transaction was rolled back by the database to break a deadlock or a
// lock wait, and running it again can succeed.
func retryable(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == 1213 || me.Number == 1205 // ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "40P01" || pe.Code == "40001" || pe.Code == "55P03"
	}
	return false
}

// classify wraps err with ErrUnavailable when it says the database cannot be reached.
func classify(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) || !unreachable(err) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

func unreachable(err error) bool {
	var netErr net.Error
	var connectErr *pgconn.ConnectError
	var pe *pgconn.PgError
	var me *mysql.MySQLError
	switch {
	case errors.As(err, &pe):
		// Class 08 connection exception; 57P01..03 shutdown, crash, starting up. Others
		// (wrong password, missing database) are not cured by waiting.
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03"
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, mysql.ErrInvalidConn),
		errors.Is(err, pgconn.ErrConnClosed),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.EPIPE):
		return true
	case errors.As(err, &connectErr), errors.As(err, &netErr):
		return true
	case errors.As(err, &me):
		return me.Number == 1040 || me.Number == 1053 // too many connections, server shutdown
	}
	return false
}
