package guacamole

import (
	"context"
	"database/sql"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/calipsoplus/calipso/internal/testenv"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// testPrefix is the NamePrefix of the stores under test.
const testPrefix = "calipso-test-"

// backend is one database Guacamole can run on; every integration test runs on each.
type backend struct {
	name    string
	dialect Dialect
	// open returns a fresh, empty database and a DSN for it, dropped after the test.
	open func(t testing.TB) (*sql.DB, string)
}

var backends = []backend{
	{name: "mariadb", dialect: MySQL, open: testenv.MySQL},
	{name: "postgres", dialect: Postgres, open: postgresDB},
}

// forEachBackend runs f as a subtest on every backend.
func forEachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { f(t, b) })
	}
}

// postgresDB creates a fresh database on the PostgreSQL server named by
// CALIPSO_TEST_POSTGRES_DSN (an admin DSN, e.g.
// "host=/tmp/calipso-test/postgres user=postgres dbname=postgres") and drops it after
// the test.
func postgresDB(t testing.TB) (*sql.DB, string) {
	t.Helper()
	admin := os.Getenv("CALIPSO_TEST_POSTGRES_DSN")
	if admin == "" {
		testenv.Missing(t, "PostgreSQL", "CALIPSO_TEST_POSTGRES_DSN is not set")
	}
	cfg, err := pgx.ParseConfig(admin)
	if err != nil {
		t.Fatalf("CALIPSO_TEST_POSTGRES_DSN: %v", err)
	}
	adminDB := stdlib.OpenDB(*cfg)
	defer adminDB.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := adminDB.PingContext(ctx); err != nil {
		testenv.Missing(t, "PostgreSQL", err.Error())
	}
	name := "t_" + strings.ToLower(testenv.RandomHex(6))
	if _, err := adminDB.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		db := stdlib.OpenDB(*cfg)
		defer db.Close()
		_, _ = db.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
	})
	cfg.Database = name
	db := stdlib.OpenDB(*cfg)
	t.Cleanup(func() { db.Close() })
	return db, withDatabase(admin, name)
}

// loadSchema runs Guacamole's own 001-create-schema.sql and 002-create-admin-user.sql.
func loadSchema(t testing.TB, db *sql.DB, d Dialect) {
	t.Helper()
	testenv.LoadGuacamoleSchema(t, db, fixturesName(d))
}

// fixturesName is the dialect's folder in shared/fixtures/guacamole.
func fixturesName(d Dialect) string {
	return map[Dialect]string{MySQL: "mysql", Postgres: "postgresql"}[d]
}

// newStore returns a Store over a fresh database loaded with Guacamole's schema.
func newStore(t testing.TB, b backend) (*Store, *sql.DB) {
	t.Helper()
	fresh, dsn := b.open(t)
	loadSchema(t, fresh, b.dialect)
	// The Store runs on a pool made by Open, as in production.
	db, err := Open(context.Background(), string(b.dialect), dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return New(db, b.dialect, testOptions(testPrefix)), db
}

// testOptions are a Store's options in tests: quiet logs.
func testOptions(prefix string) Options {
	return Options{NamePrefix: prefix, Logger: slog.New(slog.DiscardHandler)}
}

// guacTables are the tables a Store writes to.
var guacTables = []string{
	"guacamole_entity", "guacamole_user", "guacamole_user_attribute",
	"guacamole_connection", "guacamole_connection_parameter",
	"guacamole_connection_attribute", "guacamole_connection_permission",
}

// counts returns the number of rows in each table a Store writes to.
func counts(t testing.TB, db *sql.DB) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, table := range guacTables {
		var n int
		if err := db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
			t.Fatalf("count %s: %v", table, err)
		}
		out[table] = n
	}
	return out
}

// plus returns base with each table's count raised by the per-connection rows: one
// entity, user, user attribute, connection, connection attribute and permission per
// connection, and params parameter rows in all.
func plus(base map[string]int, conns, params int) map[string]int {
	out := map[string]int{}
	for k, v := range base {
		out[k] = v + conns
	}
	out["guacamole_connection_parameter"] = base["guacamole_connection_parameter"] + params
	return out
}

// stored is a connection read back from the tables, the way Guacamole reads it.
type stored struct {
	protocol    string
	parentNull  bool
	params      map[string]string
	marker      string // AttrManagedUser value
	permissions map[string][]string
	entityType  string
	hash, salt  []byte
	disabled    bool
	userMarker  string // AttrManagedConnection value
	connections int    // connections of that name at root
}

// readBack reads connection name and user username from the database.
func readBack(t testing.TB, s *Store, db *sql.DB, name, username string) stored {
	t.Helper()
	var st stored
	var connID int64
	var parent sql.NullInt64
	rows, err := db.Query(s.q(`SELECT connection_id, protocol, parent_id FROM guacamole_connection WHERE connection_name = ?`), name)
	if err != nil {
		t.Fatalf("read connection: %v", err)
	}
	for rows.Next() {
		if err := rows.Scan(&connID, &st.protocol, &parent); err != nil {
			t.Fatalf("scan connection: %v", err)
		}
		st.connections++
	}
	rows.Close()
	st.parentNull = !parent.Valid
	st.params = map[string]string{}
	rows, err = db.Query(s.q(`SELECT parameter_name, parameter_value FROM guacamole_connection_parameter WHERE connection_id = ?`), connID)
	if err != nil {
		t.Fatalf("read parameters: %v", err)
	}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatalf("scan parameter: %v", err)
		}
		st.params[k] = v
	}
	rows.Close()
	_ = db.QueryRow(s.q(`SELECT attribute_value FROM guacamole_connection_attribute WHERE connection_id = ? AND attribute_name = ?`),
		connID, AttrManagedUser).Scan(&st.marker)
	st.permissions = map[string][]string{}
	rows, err = db.Query(s.q(`SELECT e.name, p.permission FROM guacamole_connection_permission p
		JOIN guacamole_entity e ON e.entity_id = p.entity_id WHERE p.connection_id = ? ORDER BY e.name, p.permission`), connID)
	if err != nil {
		t.Fatalf("read permissions: %v", err)
	}
	for rows.Next() {
		var who, perm string
		if err := rows.Scan(&who, &perm); err != nil {
			t.Fatalf("scan permission: %v", err)
		}
		st.permissions[who] = append(st.permissions[who], perm)
	}
	rows.Close()
	var userID int64
	err = db.QueryRow(s.q(`SELECT e.type, u.user_id, u.password_hash, u.password_salt, u.disabled FROM guacamole_entity e
		JOIN guacamole_user u ON u.entity_id = e.entity_id WHERE e.name = ?`), username).
		Scan(&st.entityType, &userID, &st.hash, &st.salt, &st.disabled)
	if err != nil && err != sql.ErrNoRows {
		t.Fatalf("read user %s: %v", username, err)
	}
	_ = db.QueryRow(s.q(`SELECT attribute_value FROM guacamole_user_attribute WHERE user_id = ? AND attribute_name = ?`),
		userID, AttrManagedConnection).Scan(&st.userMarker)
	return st
}

// withDatabase points a PostgreSQL DSN (URL or keyword/value) at database name.
func withDatabase(dsn, name string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + name
		return u.String()
	}
	return dsn + " dbname=" + name // the last value of a keyword wins
}
