package demo

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/store"
)

func openStore(t *testing.T) *store.Store {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, "sqlite", filepath.Join(t.TempDir(), "calipso.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	return db
}

func TestRecords(t *testing.T) {
	for _, k := range Kinds {
		im := Record(k, Repository(k)+":0123456789abcdef")
		if err := store.ValidateImage(im); err != nil {
			t.Errorf("%s: %v", k, err)
		}
		if im.CPU != 1 || im.Memory != "1G" || im.HDD != "1G" || im.ResourceType != "docker" {
			t.Errorf("%s: sizes %+v", k, im)
		}
	}
	if nb := Record(KindNotebook, "x"); nb.PublicName != "demo_notebook" || nb.Protocol != "http" || nb.LogRegex != `token=([0-9a-f]+)` {
		t.Errorf("notebook record %+v", nb)
	}
	if d := Record(KindDesktop, "x"); d.PublicName != "demo_desktop" || d.Protocol != "vnc" || d.LogRegex != DesktopLogRegex {
		t.Errorf("desktop record %+v", d)
	}
}

func TestEnsureRecord(t *testing.T) {
	current := Record(KindNotebook, "calipso-demo-notebook:1111111111111111")
	earlier := current
	earlier.Image = "calipso-demo-notebook:0000000000000000"
	earlier.Memory = "2G" // an admin's change, kept
	moved := earlier
	moved.Image = current.Image
	facility := current
	facility.Image = "jupyter/base-notebook:2024"
	cases := []struct {
		name     string
		existing *calipso.Image
		action   string
		want     calipso.Image
	}{
		{"absent: created", nil, RecordCreated, current},
		{"same image: kept", &current, RecordKept, current},
		{"earlier demo image: only the image moves", &earlier, RecordUpdated, moved},
		{"an admin's own image: kept", &facility, RecordKept, facility},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			db := openStore(t)
			if c.existing != nil {
				if _, err := db.PutImage(ctx, "admin", *c.existing); err != nil {
					t.Fatal(err)
				}
			}
			action, err := EnsureRecord(ctx, db, current)
			if err != nil || action != c.action {
				t.Fatalf("EnsureRecord = %q, %v; want %q", action, err, c.action)
			}
			got, err := db.Image(ctx, current.PublicName)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Fatalf("record %+v, want %+v", got, c.want)
			}
			// Again: nothing more to do.
			if action, err := EnsureRecord(ctx, db, current); err != nil || action != RecordKept {
				t.Fatalf("second EnsureRecord = %q, %v", action, err)
			}
		})
	}
}
