package main

import (
	"context"
	"encoding/csv"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/settings"
)

// TestAccountingCSV: `calipso accounting` sums, per proposal, what the records say
// ran: a stopped record from its start to its end, a live one to --to.
func TestAccountingCSV(t *testing.T) {
	dir := t.TempDir()
	path := settingsFile(t, dir)
	cfg, err := settings.Load(path, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	db, err := store.Open(ctx, cfg.Database.Driver, cfg.Database.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Migrate(ctx, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	u, _ := db.EnsureUser(ctx, "ana")
	limit := calipso.Quota{MaxSimultaneous: 9, CPUs: 9, MemoryBytes: 90 << 30, DiskBytes: 90 << 30}
	image := calipso.Image{PublicName: "x", Image: "x", Protocol: "vnc", CPU: 2, Memory: "4G", HDD: "1G", ResourceType: "docker"}
	run := func(experiment string, stop bool) calipso.Resource {
		t.Helper()
		r, err := db.Reserve(ctx, store.Launch{UserID: u.ID, Experiment: experiment, Image: image, Default: limit})
		if err == nil {
			r, err = db.Move(ctx, r.ID, calipso.Running, store.Update{})
		}
		if err == nil && stop {
			time.Sleep(20 * time.Millisecond)
			if r, err = db.Move(ctx, r.ID, calipso.Stopping, store.Update{}); err == nil {
				r, err = db.Move(ctx, r.ID, calipso.Stopped, store.Update{})
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	stopped, live := run("2026001~s1", true), run("2026001~s2", false)
	to := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	out, err := runCLI(t, path, "accounting", "--from", "2026-01-01", "--to", to.Format(time.RFC3339))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(rows) != 2 || rows[1][0] != "2026001" {
		t.Fatalf("CSV %q: %v", out, err)
	}
	// What the records say, summed here and not by the code under test.
	hours := stopped.Ended.Sub(*stopped.Started).Hours() + to.Sub(*live.Started).Hours()
	for i, want := range []float64{2 * hours, 4 * hours, hours, 2} {
		got, err := strconv.ParseFloat(rows[1][i+1], 64)
		if err != nil || math.Abs(got-want) > 0.001 {
			t.Errorf("column %s = %s, want %.3f", rows[0][i+1], rows[1][i+1], want)
		}
	}
	if _, err := runCLI(t, path, "accounting", "--by", "beamline"); err == nil {
		t.Error("--by beamline was accepted")
	}
}
