// Package guacamole tells Apache Guacamole about Calipso's desktops by writing rows
// into Guacamole's own database (the JDBC authentication schema of Guacamole 1.x, on
// MySQL/MariaDB or PostgreSQL). It never creates or migrates that schema.
//
// For every desktop Calipso makes one connection (at the root group) and one user
// that may READ it. Both carry a marker so that connections and users made by hand by
// a Guacamole administrator are never touched:
//
//   - the connection has the attribute AttrManagedUser (in guacamole_connection_attribute)
//     whose value is the name of the user made for it;
//   - the user has the attribute AttrManagedConnection (in guacamole_user_attribute)
//     whose value is the connection's name;
//   - and the connection's name starts with Options.NamePrefix.
//
// All work on one connection name is serialised by a named lock (GET_LOCK on MySQL,
// pg_advisory_xact_lock on PostgreSQL), because Guacamole's unique key on
// (connection_name, parent_id) does not hold at the root group, where parent_id is NULL.
package guacamole

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/calipsoplus/calipso"
)

// Errors the Store reports; check them with errors.Is.
var (
	// ErrUnavailable: the database cannot be reached (retry later).
	ErrUnavailable = calipso.NewError(calipso.EUNAVAILABLE, "guacamole database unavailable")
	// ErrInvalid: the connection asked for cannot be written (bad name, protocol...).
	ErrInvalid = calipso.NewError(calipso.EUNLAUNCHABLE, "invalid guacamole connection")
	// ErrConflict: a connection or user of that name exists and was not made by
	// Calipso for this connection; it is left alone.
	ErrConflict = calipso.NewError(calipso.ECONFLICT, "guacamole object exists and is not managed by calipso")
)

// Marker attributes (see the package comment).
const (
	AttrManagedUser       = "calipso-managed-user"
	AttrManagedConnection = "calipso-managed-connection"
)

// Dialect is the SQL dialect of Guacamole's database.
type Dialect string

const (
	MySQL    Dialect = "mysql"    // MySQL and MariaDB, driver github.com/go-sql-driver/mysql
	Postgres Dialect = "postgres" // PostgreSQL, driver github.com/jackc/pgx/v5/stdlib
)

// ParseDialect maps a driver or dialect name ("mysql", "mariadb", "pgx",
// "postgres", "postgresql") to its Dialect.
func ParseDialect(name string) (Dialect, error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "mysql", "mariadb":
		return MySQL, nil
	case "pgx", "postgres", "postgresql":
		return Postgres, nil
	}
	return "", fmt.Errorf("guacamole database driver %q: want mysql or postgres", name)
}

// DefaultConnectTimeout bounds connecting when the DSN sets no timeout, so that a
// database that is down is reported quickly.
const DefaultConnectTimeout = 5 * time.Second

// Open opens and pings Guacamole's database. driver is "mysql" (MySQL/MariaDB DSN,
// e.g. "guac:pw@tcp(db:3306)/guacamole_db") or "postgres"/"pgx" (libpq keyword or URL
// DSN). A DSN without a connect timeout gets DefaultConnectTimeout. An unreachable
// database yields an error wrapping ErrUnavailable.
func Open(ctx context.Context, driver, dsn string) (*sql.DB, error) {
	dialect, err := ParseDialect(driver)
	if err != nil {
		return nil, err
	}
	var db *sql.DB
	switch dialect {
	case MySQL:
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			return nil, fmt.Errorf("guacamole mysql dsn: %w", err)
		}
		if cfg.Timeout == 0 {
			cfg.Timeout = DefaultConnectTimeout
		}
		// One round trip per statement instead of prepare, execute and close (the
		// driver escapes safely, and refuses to for charsets where it could not).
		cfg.InterpolateParams = true
		// Guacamole's history dates are DATETIME in the server's zone, UTC as its
		// documentation sets it up; read them as times (Activity).
		cfg.ParseTime = true
		if cfg.Loc == nil {
			cfg.Loc = time.UTC
		}
		connector, err := mysql.NewConnector(cfg)
		if err != nil {
			return nil, fmt.Errorf("guacamole mysql dsn: %w", err)
		}
		db = sql.OpenDB(connector)
	case Postgres:
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			return nil, fmt.Errorf("guacamole postgres dsn: %w", err)
		}
		if cfg.ConnectTimeout == 0 {
			cfg.ConnectTimeout = DefaultConnectTimeout
		}
		db = stdlib.OpenDB(*cfg)
	}
	// Idle connections are dropped before a server or proxy times them out.
	db.SetConnMaxIdleTime(time.Minute)
	db.SetConnMaxLifetime(30 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open guacamole database: %w", classify(err))
	}
	return db, nil
}

// Options tune a Store. The zero value is usable.
type Options struct {
	// NamePrefix: every connection Calipso makes has a name starting with it
	// (e.g. "calipso-prod-"); Create refuses other names and List returns only these.
	// Default "calipso-".
	NamePrefix string
	// MaxAttempts: how often a transaction that hit a deadlock or lock wait timeout is
	// tried in all. Default 5.
	MaxAttempts int
	// LockTimeout: how long to wait for another operation on the same name. Default 10s.
	LockTimeout time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// DefaultNamePrefix is Options.NamePrefix when unset.
const DefaultNamePrefix = "calipso-"

// Store writes Calipso's connections into Guacamole's database. It is safe for
// concurrent use.
type Store struct {
	db      *sql.DB
	dialect Dialect
	opts    Options
	log     *slog.Logger
}

// New returns a Store over db (opened with Open or by the caller with the driver that
// matches dialect).
func New(db *sql.DB, dialect Dialect, opts Options) *Store {
	if opts.NamePrefix == "" {
		opts.NamePrefix = DefaultNamePrefix
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 5
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Store{db: db, dialect: dialect, opts: opts, log: opts.Logger.With("component", "guacamole")}
}

// Connection is one desktop as Guacamole sees it.
type Connection struct {
	Name     string            // unique, from the resource id, e.g. "calipso-prod-42"
	Protocol string            // "vnc" or "rdp" (also "ssh", "telnet", "kubernetes")
	Params   map[string]string // hostname, port, password, plus extras (RDP: security, ignore-cert)
	Username string            // Guacamole user made for this one connection
	Password string            // its password, in clear; only a salted hash is stored
}

// Guacamole's column sizes (varchar lengths count characters).
const (
	maxNameLen  = 128
	maxValueLen = 4096
)

var protocols = map[string]bool{"vnc": true, "rdp": true, "ssh": true, "telnet": true, "kubernetes": true}

// Validate reports why c cannot be written, wrapping ErrInvalid.
func (s *Store) Validate(c Connection) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Name == "":
		return bad("empty connection name")
	case !strings.HasPrefix(c.Name, s.opts.NamePrefix):
		return bad("connection name %q does not start with %q", c.Name, s.opts.NamePrefix)
	case !utf8.ValidString(c.Name) || !utf8.ValidString(c.Username):
		return bad("connection %q or username %q is not UTF-8", c.Name, c.Username)
	case runeLen(c.Name) > maxNameLen:
		return bad("connection name %q longer than %d characters", c.Name, maxNameLen)
	case !protocols[c.Protocol]:
		return bad("connection %s: unsupported protocol %q", c.Name, c.Protocol)
	case c.Username == "":
		return bad("connection %s: empty username", c.Name)
	case runeLen(c.Username) > maxNameLen:
		return bad("connection %s: username longer than %d characters", c.Name, maxNameLen)
	case c.Password == "":
		return bad("connection %s: empty password", c.Name)
	}
	for k, v := range c.Params {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return bad("connection %s: parameter %q is not UTF-8", c.Name, k)
		}
		if k == "" || runeLen(k) > maxNameLen {
			return bad("connection %s: parameter name %q empty or longer than %d characters", c.Name, k, maxNameLen)
		}
		if runeLen(v) > maxValueLen {
			return bad("connection %s: parameter %s longer than %d characters", c.Name, k, maxValueLen)
		}
	}
	return nil
}

func runeLen(s string) int { return utf8.RuneCountInString(s) }

// OpenStore opens Guacamole's database (see Open) and returns its Store; closing the
// returned *sql.DB is the caller's.
func OpenStore(ctx context.Context, driver, dsn string, opts Options) (*Store, *sql.DB, error) {
	dialect, err := ParseDialect(driver)
	if err != nil {
		return nil, nil, err
	}
	db, err := Open(ctx, driver, dsn)
	if err != nil {
		return nil, nil, err
	}
	return New(db, dialect, opts), db, nil
}
