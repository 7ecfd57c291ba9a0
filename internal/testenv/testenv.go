// Package testenv gives integration tests the real parts they run against (MariaDB,
// the Docker engine). A part that is missing skips the test with a clear message on a
// developer's laptop and fails it when CI is set, so that CI never passes by skipping.
//
// deploy/test.sh starts the parts and exports the variables read here.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Missing skips t, or fails it under CI, because a part it needs is not there.
func Missing(t testing.TB, part, how string) {
	t.Helper()
	msg := fmt.Sprintf("%s is not available: %s (run `bash deploy/test.sh` to start it)", part, how)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// MySQLDSN creates a fresh, empty MariaDB database for this test, drops it when the
// test ends, and returns a DSN for it (parseTime on, multiStatements on).
func MySQLDSN(t testing.TB) string {
	t.Helper()
	admin := os.Getenv("CALIPSO_TEST_MYSQL_DSN")
	if admin == "" {
		Missing(t, "MariaDB", "CALIPSO_TEST_MYSQL_DSN is not set")
	}
	cfg, err := mysql.ParseDSN(admin)
	if err != nil {
		t.Fatalf("CALIPSO_TEST_MYSQL_DSN: %v", err)
	}
	cfg.DBName = ""
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatalf("open MariaDB: %v", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		Missing(t, "MariaDB", err.Error())
	}
	name := "t_" + strings.ToLower(RandomHex(6))
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name+" CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("mysql", cfg.FormatDSN())
		if err != nil {
			return
		}
		defer db.Close()
		_, _ = db.Exec("DROP DATABASE IF EXISTS " + name)
	})
	cfg.DBName = name
	cfg.ParseTime = true
	cfg.MultiStatements = true
	return cfg.FormatDSN()
}

// MySQL opens a fresh database (see MySQLDSN) and closes it when the test ends.
func MySQL(t testing.TB) (*sql.DB, string) {
	t.Helper()
	dsn := MySQLDSN(t)
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { db.Close() })
	return db, dsn
}

// RandomHex returns 2n random hex digits.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// LoadGuacamoleSchema runs Guacamole's own 001-create-schema.sql and
// 002-create-admin-user.sql for dialect ("mysql" or "postgresql") on db. The scripts
// are shared/fixtures/guacamole/<dialect>, found by walking up from the working
// directory (the repository sits beside shared/).
func LoadGuacamoleSchema(t testing.TB, db *sql.DB, dialect string) {
	t.Helper()
	dir := GuacamoleFixtures(t, dialect)
	for _, f := range []string{"001-create-schema.sql", "002-create-admin-user.sql"} {
		script, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("read Guacamole schema: %v", err)
		}
		if _, err := db.ExecContext(context.Background(), string(script)); err != nil {
			t.Fatalf("load %s: %v", f, err)
		}
	}
}

// GuacamoleFixtures returns the folder of Guacamole's schema scripts for dialect.
func GuacamoleFixtures(t testing.TB, dialect string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("working directory: %v", err)
	}
	for {
		candidate := filepath.Join(dir, "shared", "fixtures", "guacamole", dialect)
		if st, err := os.Stat(candidate); err == nil && st.IsDir() {
			return candidate
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			Missing(t, "Guacamole schema fixtures", "no shared/fixtures/guacamole/"+dialect+" above the working directory")
		}
		dir = parent
	}
}
