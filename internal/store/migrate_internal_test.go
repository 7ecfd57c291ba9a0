package store

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/calipsoplus/calipso"
)

// migratedTo opens a fresh SQLite store migrated up to version, and the migration
// provider to go on with.
func migratedTo(t *testing.T, version int64) (*Store, *goose.Provider) {
	t.Helper()
	s, err := Open(context.Background(), "sqlite", filepath.Join(t.TempDir(), "calipso.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	fsys, err := s.dialect.migrationsFS()
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, s.db, fsys)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(context.Background(), version); err != nil {
		t.Fatal(err)
	}
	return s, p
}

// TestFailedStateMigrated: records failed before migration 3 (state "error") read
// back as calipso.Failed after it.
func TestFailedStateMigrated(t *testing.T) {
	ctx := context.Background()
	s, _ := migratedTo(t, 2)
	now := time.Now()
	// Raw SQL: today's queries read tables that version 2 does not have yet.
	res, err := s.db.ExecContext(ctx, `INSERT INTO users (username, uuid, is_admin, email, home, date_joined) VALUES ('alice', 'u-1', FALSE, '', '', ?)`, now)
	if err != nil {
		t.Fatal(err)
	}
	var u struct{ ID int64 }
	if u.ID, err = res.LastInsertId(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO resources (user_id, experiment, public_name, image, protocol, resource_type, state, cpu, memory_bytes, hdd_bytes,
		vnc_password, info, error, created_at, updated_at) VALUES (?, 'p~s', 'x', 'x', 'vnc', 'docker', 'error', 0, 0, 0, '', '', 'old', ?, ?)`, u.ID, now, now); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	rs, err := s.Resources(ctx, ResourceFilter{States: []calipso.State{calipso.Failed}})
	if err != nil || len(rs) != 1 || rs[0].State != calipso.Failed {
		t.Fatalf("failed records after migrating: %+v %v", rs, err)
	}
}

// TestImagesPidsLimitMigrated: images stored before migration 4 read back with no pids
// limit of their own (the settings' applies), and migration 4 goes down again.
func TestImagesPidsLimitMigrated(t *testing.T) {
	ctx := context.Background()
	s, p := migratedTo(t, 3)
	if _, err := s.db.ExecContext(ctx, `INSERT INTO images (public_name, image, protocol, cpu, memory, hdd, resource_type, log_regex)
		VALUES ('old', 'x', 'vnc', 1, '1G', '1G', 'docker', '')`); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	im, err := s.Image(ctx, "old")
	if err != nil || im.PidsLimit != 0 {
		t.Fatalf("image from before migration 4 = %+v, %v; want pids limit 0", im, err)
	}
	if _, err := p.DownTo(ctx, 3); err != nil {
		t.Fatalf("migration 4 down: %v", err)
	}
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM images WHERE public_name = 'old'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("after migration 4 down: %d images, %v", n, err)
	}
}
