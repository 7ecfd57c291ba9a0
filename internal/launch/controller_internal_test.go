package launch

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/provisioner"
)

// TestEngineEventsCallForAPassOnlyWhenNews: the leader skips the pass after events
// that records expect (a launch's create and start, a stop's end) and runs one for
// the rest (an orphan, a running workload that died, a late container of a failed
// launch), so that a burst of launches is not slowed down by passes.
func TestEngineEventsCallForAPassOnlyWhenNews(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, "sqlite", filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	u, err := db.EnsureUser(ctx, "ana")
	if err != nil {
		t.Fatal(err)
	}
	// A record in each state, its workload named after it.
	paths := map[calipso.State][]calipso.State{
		calipso.Pending:  nil,
		calipso.Running:  {calipso.Running},
		calipso.Stopping: {calipso.Running, calipso.Stopping},
		calipso.Stopped:  {calipso.Running, calipso.Stopping, calipso.Stopped},
		calipso.Failed:   {calipso.Failed},
		calipso.Removed:  {calipso.Running, calipso.Removed},
	}
	for st, path := range paths {
		r, err := db.Reserve(ctx, store.Launch{UserID: u.ID, Experiment: "p~" + string(st), Default: calipso.Quota{MaxSimultaneous: 10, CPUs: 10, MemoryBytes: 10 << 30, DiskBytes: 10 << 30},
			Image:  calipso.Image{PublicName: "desk", Image: "desk", Protocol: "vnc", ResourceType: "docker", CPU: 0.5, Memory: "64M", HDD: "1G"},
			NameOf: func(int64) string { return "w-" + string(st) }})
		if err != nil {
			t.Fatal(err)
		}
		for _, to := range path {
			if _, err := db.Move(ctx, r.ID, to, store.Update{}); err != nil {
				t.Fatalf("%s: move to %s: %v", st, to, err)
			}
		}
	}
	s := &Service{db: db}
	for _, tt := range []struct {
		name  string
		state calipso.State // "" for a workload without a record
		ended bool
		want  bool
	}{
		{"launch creating", calipso.Pending, false, false},
		{"launch done", calipso.Running, false, false},
		{"start during a stop", calipso.Stopping, false, false},
		{"orphan created", "", false, true},
		{"orphan ended", "", true, true},
		{"late container of a failed launch", calipso.Failed, false, true},
		{"workload of a removed record started", calipso.Removed, false, true},
		{"running workload died", calipso.Running, true, true},
		{"launch's workload died", calipso.Pending, true, true},
		{"stop ended it", calipso.Stopping, true, false},
		{"stopped", calipso.Stopped, true, false},
		{"rollback removed it", calipso.Failed, true, false},
		{"removal", calipso.Removed, true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			name := "orphan"
			if tt.state != "" {
				name = "w-" + string(tt.state)
			}
			// Beside an expected event, the one under test decides.
			events := map[string]bool{name: tt.ended, "w-" + string(calipso.Running): false}
			if got := s.needsPass(ctx, events); got != tt.want {
				t.Errorf("needsPass(%v) = %v, want %v", events, got, tt.want)
			}
		})
	}
	if s.needsPass(ctx, nil) {
		t.Error("no events call for a pass")
	}
}

func TestChangeSet(t *testing.T) {
	var c changeSet
	c.add(provisioner.Change{Name: "a"}, false)
	c.add(provisioner.Change{Name: "a", Ended: true}, false)
	c.add(provisioner.Change{Name: "a"}, false) // an end is not forgotten by a later start
	if ended, all := c.take(); all || len(ended) != 1 || !ended["a"] {
		t.Errorf("take = %v, %v; want a ended", ended, all)
	}
	if ended, all := c.take(); all || len(ended) != 0 {
		t.Errorf("second take = %v, %v; want nothing", ended, all)
	}
	for i := range maxChanges + 1 {
		c.add(provisioner.Change{Name: fmt.Sprint(i)}, false)
	}
	if _, all := c.take(); !all {
		t.Error("too many changes do not call for a full pass")
	}
	c.add(provisioner.Change{}, true)
	if _, all := c.take(); !all {
		t.Error("a kick does not call for a full pass")
	}
}
