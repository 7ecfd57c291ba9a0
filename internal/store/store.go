// Package store is Calipso's application database: SQLite (modernc.org/sqlite, the
// embedded default, no cgo) or MySQL/MariaDB (production), with one set of embedded
// migrations for both. Every query is written once; the few places where the two
// dialects differ go through the dialect type.
package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing/fstest"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/pressly/goose/v3"
	"modernc.org/sqlite" // registers "sqlite"

	"github.com/calipsoplus/calipso"
)

// foldFunction is Go's Unicode lower-casing as an SQLite function: SQLite's built-in
// lower() folds ASCII only, MySQL's folds all of Unicode. It is registered under its
// own name (the driver's registry is process-wide) rather than replacing lower().
const foldFunction = "calipso_fold"

var registerFold = sync.OnceValue(func() error {
	return sqlite.RegisterDeterministicScalarFunction(foldFunction, 1, func(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
		switch v := args[0].(type) {
		case string:
			return strings.ToLower(v), nil
		case []byte:
			return strings.ToLower(string(v)), nil
		default:
			return v, nil
		}
	})
})

// fold is the SQL that lower-cases expr for case-insensitive search in every script.
func (s *Store) fold(expr string) string {
	if s.dialect == mysqlDialect {
		return "LOWER(" + expr + ")"
	}
	return foldFunction + "(" + expr + ")"
}

// Errors of the store, mapped to HTTP statuses by the server.
var (
	ErrNotFound  = calipso.NewError(calipso.ENOTFOUND, "not found")
	ErrForbidden = calipso.NewError(calipso.EFORBIDDEN, "forbidden")
	ErrConflict  = calipso.NewError(calipso.ECONFLICT, "conflict")
	ErrInvalid   = calipso.NewError(calipso.EINVALID, "invalid")
	// ErrUnavailable: the database cannot be reached.
	ErrUnavailable = calipso.NewError(calipso.EUNAVAILABLE, "database unavailable")
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is the application database.
type Store struct {
	db      *sql.DB
	dialect dialect
	now     func() time.Time
	stmts   stmtCache
}

// stmtCache keeps the statements of the hot read paths prepared: parsing a query
// costs more than running it on SQLite, and a round trip on MySQL. database/sql
// prepares a cached statement once per connection.
type stmtCache struct {
	mu sync.RWMutex
	m  map[string]*sql.Stmt
}

// maxCachedStmts bounds the cache; queries built from user input (orderings, filters)
// come in a few dozen shapes, and MySQL limits prepared statements per server.
const maxCachedStmts = 256

// prepared returns the cached statement for query, or nil when it cannot be prepared
// or the cache is full (the caller then runs the query directly).
func (s *Store) prepared(ctx context.Context, query string) *sql.Stmt {
	s.stmts.mu.RLock()
	st := s.stmts.m[query]
	s.stmts.mu.RUnlock()
	if st != nil {
		return st
	}
	s.stmts.mu.Lock()
	defer s.stmts.mu.Unlock()
	if st := s.stmts.m[query]; st != nil {
		return st
	}
	if len(s.stmts.m) >= maxCachedStmts {
		return nil
	}
	st, err := s.db.PrepareContext(ctx, query)
	if err != nil {
		return nil // the direct query will report the error
	}
	if s.stmts.m == nil {
		s.stmts.m = map[string]*sql.Stmt{}
	}
	s.stmts.m[query] = st
	return st
}

// queryRow runs a one-row read through the statement cache.
func (s *Store) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	if st := s.prepared(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return s.db.QueryRowContext(ctx, query, args...)
}

// query runs a read through the statement cache.
func (s *Store) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := s.prepared(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return s.db.QueryContext(ctx, query, args...)
}

// exec runs a write through the statement cache.
func (s *Store) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := s.prepared(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return s.db.ExecContext(ctx, query, args...)
}

type dialect string

const (
	sqliteDialect dialect = "sqlite"
	mysqlDialect  dialect = "mysql"
)

// Open connects to the database (driver "sqlite" or "mysql") and returns a Store. It
// does not migrate: call Migrate (the server does at start, `calipso migrate` too).
// For SQLite, dsn is a file path; the directory is created.
func Open(ctx context.Context, driver, dsn string) (*Store, error) {
	return OpenWith(ctx, driver, dsn, Options{})
}

// DefaultTimeout bounds each read and write on a MySQL connection when neither the
// DSN (readTimeout, writeTimeout) nor Options says otherwise.
const DefaultTimeout = 10 * time.Second

// Options tune Open.
type Options struct {
	// Timeout bounds every read and write on a MySQL connection (the DSN's own
	// readTimeout and writeTimeout win): a server that is frozen, not down, then
	// fails the query as unavailable instead of hanging it. 0: DefaultTimeout.
	Timeout time.Duration
}

// OpenWith is Open with options.
func OpenWith(ctx context.Context, driver, dsn string, opts Options) (*Store, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	var (
		db  *sql.DB
		err error
	)
	switch driver {
	case "sqlite":
		if err := registerFold(); err != nil {
			return nil, fmt.Errorf("sqlite: register %s: %w", foldFunction, err)
		}
		db, err = openSQLite(dsn)
	case "mysql":
		db, err = openMySQL(dsn, opts.Timeout)
	default:
		return nil, fmt.Errorf("database driver %q: want sqlite or mysql", driver)
	}
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, dialect: dialect(driver), now: func() time.Time { return time.Now().UTC() }}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		db.Close()
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, driver, err)
	}
	return s, nil
}

func openSQLite(path string) (*sql.DB, error) {
	if path == "" {
		return nil, errors.New("sqlite: empty database path")
	}
	path = strings.TrimPrefix(path, "file:")
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if path != ":memory:" {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
	}
	// WAL lets readers run beside the writer; immediate transactions take the write
	// lock at BEGIN, so that a quota check and its insert can't be interleaved and
	// two writers never deadlock upgrading a read lock; busy_timeout queues writers.
	dsn := "file:" + path + "?_txlock=immediate" +
		"&_pragma=busy_timeout(30000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)" +
		"&_pragma=foreign_keys(1)&_time_format=sqlite"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	db.SetConnMaxIdleTime(0)
	return db, nil
}

func openMySQL(dsn string, timeout time.Duration) (*sql.DB, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("mysql dsn: %w", err) // ParseDSN's errors carry no password
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	cfg.Params["time_zone"] = "'+00:00'"
	cfg.MultiStatements = true // migrations
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = timeout
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = timeout
	}
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return nil, fmt.Errorf("mysql: %w", err)
	}
	db.SetMaxOpenConns(50)
	db.SetMaxIdleConns(50)
	db.SetConnMaxLifetime(30 * time.Minute)
	return db, nil
}

// DB exposes the handle (tests, the CalipsoPlus importer).
func (s *Store) DB() *sql.DB { return s.db }

// Driver names the dialect: "sqlite" or "mysql".
func (s *Store) Driver() string { return string(s.dialect) }

// Close closes the database.
func (s *Store) Close() error {
	s.stmts.mu.Lock()
	for _, st := range s.stmts.m {
		st.Close()
	}
	s.stmts.m = nil
	s.stmts.mu.Unlock()
	return s.db.Close()
}

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// migrationsFS renders the embedded migrations for the dialect.
func (d dialect) migrationsFS() (fs.FS, error) {
	repl := map[dialect]*strings.Replacer{
		sqliteDialect: strings.NewReplacer(
			"{{id}}", "INTEGER PRIMARY KEY AUTOINCREMENT",
			"{{text}}", "TEXT",
			"{{time}}", "DATETIME",
			"{{table}}", "",
			"{{on resources}}", "", // DROP INDEX: SQLite's index names are per database
			"{{on http_sessions}}", ""),
		mysqlDialect: strings.NewReplacer(
			"{{id}}", "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
			"{{text}}", "LONGTEXT",
			"{{time}}", "DATETIME(6)",
			"{{table}}", " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
			"{{on resources}}", " ON resources",
			"{{on http_sessions}}", " ON http_sessions"),
	}[d]
	out := fstest.MapFS{}
	err := fs.WalkDir(migrations, "migrations", func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := fs.ReadFile(migrations, path)
		if err != nil {
			return err
		}
		out[e.Name()] = &fstest.MapFile{Data: []byte(repl.Replace(string(b))), Mode: 0o444}
		return nil
	})
	return out, err
}

// Migrate brings the schema up to date and reports what it applied.
func (s *Store) Migrate(ctx context.Context, log *slog.Logger) error {
	fsys, err := s.dialect.migrationsFS()
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	gd := goose.DialectSQLite3
	if s.dialect == mysqlDialect {
		gd = goose.DialectMySQL
	}
	p, err := goose.NewProvider(gd, s.db, fsys)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, r := range results {
		log.Info("migration applied", "version", r.Source.Version, "file", r.Source.Path, "took", r.Duration)
	}
	return nil
}

// MigrationStatus lists each migration and whether it is applied.
func (s *Store) MigrationStatus(ctx context.Context) ([]string, error) {
	fsys, err := s.dialect.migrationsFS()
	if err != nil {
		return nil, err
	}
	gd := goose.DialectSQLite3
	if s.dialect == mysqlDialect {
		gd = goose.DialectMySQL
	}
	p, err := goose.NewProvider(gd, s.db, fsys)
	if err != nil {
		return nil, err
	}
	st, err := p.Status(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range st {
		out = append(out, fmt.Sprintf("%05d %s %s", m.Source.Version, filepath.Base(m.Source.Path), m.State))
	}
	return out, nil
}

// tx runs fn in a transaction, committing when it returns nil. On MySQL the
// transaction reads committed rows, so a check made after a locking read sees what
// the previous lock holder wrote.
func (s *Store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	var opts *sql.TxOptions
	if s.dialect == mysqlDialect {
		opts = &sql.TxOptions{Isolation: sql.LevelReadCommitted}
	}
	for attempt := 0; ; attempt++ {
		tx, err := s.db.BeginTx(ctx, opts)
		if err != nil {
			return s.wrap(err)
		}
		err = fn(tx)
		if err == nil {
			err = tx.Commit()
		} else {
			_ = tx.Rollback()
		}
		if err != nil && attempt < 5 && s.retryable(err) {
			time.Sleep(time.Duration(attempt+1) * 10 * time.Millisecond)
			continue
		}
		if err != nil {
			return s.wrap(err)
		}
		return nil
	}
}

// retryable reports deadlocks and lock timeouts (MySQL) and busy databases (SQLite).
func (s *Store) retryable(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == 1213 || me.Number == 1205
	}
	msg := err.Error()
	return strings.Contains(msg, "SQLITE_BUSY") || strings.Contains(msg, "database is locked")
}

// wrap turns driver errors into the store's kinds where it can.
func (s *Store) wrap(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return ErrNotFound
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrForbidden), errors.Is(err, ErrConflict),
		errors.Is(err, ErrInvalid), errors.Is(err, ErrUnavailable),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case isUnique(err):
		return fmt.Errorf("%w: %w", ErrConflict, err)
	case unreachable(err):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// unreachable reports the errors of a database that cannot be reached or cannot
// serve now: whatever the network said (a refused or reset connection, a host name
// that no longer resolves, a timeout, a socket gone), a connection the driver gave up,
// and the server's own "not now" answers. Each is a 503 for the user, not a bug.
func unreachable(err error) bool {
	var (
		netErr net.Error
		me     *mysql.MySQLError
		se     *sqlite.Error
	)
	switch {
	case errors.As(err, &netErr), errors.Is(err, driver.ErrBadConn), errors.Is(err, mysql.ErrInvalidConn),
		errors.Is(err, sql.ErrConnDone), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return true
	case errors.As(err, &me):
		switch me.Number {
		case 1040, // too many connections
			1053,                   // server shutdown in progress
			1158, 1159, 1160, 1161, // network read or write errors
			1203, 1226, // the account's connection or resource limits
			1290, 1836, // read-only (--read-only, a replica during a failover)
			1927, // connection killed
			4031: // disconnected by the server for inactivity
			return true
		}
		return false
	case errors.As(err, &se):
		switch se.Code() & 0xff {
		case 10, 13, 14: // SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN
			return true
		}
		return false
	}
	// Errors that lost their type on the way.
	msg := err.Error()
	return strings.Contains(msg, "connection refused") || strings.Contains(msg, "no such file or directory") ||
		strings.Contains(msg, "i/o timeout")
}

func isUnique(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == 1062
	}
	return strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// in returns "?, ?, ?" for n placeholders.
func in(n int) string {
	if n <= 0 {
		return "NULL"
	}
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// likeEscape escapes LIKE wildcards in a user's search text (escape character !).
func likeEscape(s string) string {
	return strings.NewReplacer("!", "!!", "%", "!%", "_", "!_").Replace(s)
}

// nullTime converts a NULL-able time column.
func nullTime(t sql.NullTime) *time.Time {
	if !t.Valid {
		return nil
	}
	v := t.Time.UTC()
	return &v
}

func nullInt(v *int) sql.NullInt64 {
	if v == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: int64(*v), Valid: true}
}

func intPtr(v sql.NullInt64) *int {
	if !v.Valid {
		return nil
	}
	i := int(v.Int64)
	return &i
}

// collect scans every row of rows with scan (closing rows), as the listings do.
func collect[T any](s *Store, rows *sql.Rows, scan func(row interface{ Scan(...any) error }) (T, error)) ([]T, error) {
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, s.wrap(err)
		}
		out = append(out, v)
	}
	return out, s.wrap(rows.Err())
}
