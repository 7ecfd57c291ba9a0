package main

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/calipsoplus/calipso/internal/store"
)

// The import itself is tested in internal/calipsoplus; here, the command's flags.
func TestImportCalipsoPlusBadInput(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, "sqlite", filepath.Join(t.TempDir(), "calipso.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Migrate(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no dsn", nil, "usage"},
		{"stray argument", []string{"--dsn", "u@tcp(127.0.0.1:1)/x", "extra"}, "usage"},
		{"bad dsn", []string{"--dsn", "no slash"}, "--dsn"},
		{"unreachable", []string{"--dsn", "u:p@unix(/nonexistent.sock)/calipsoplus"}, "read calipsoplus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := importCalipsoPlus(ctx, &cli{db: db, stdout: &bytes.Buffer{}}, tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
