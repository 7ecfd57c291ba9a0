package store_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/store"
)

// TestLifecycleFields: a record keeps its expiry from Reserve, when it started and
// when it ended (the first end: removing a stopped record is not a second one), and
// its idle and warning marks.
func TestLifecycleFields(t *testing.T) {
	backends(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		u, _ := s.EnsureUser(ctx, "ana")
		limit := calipso.Quota{MaxSimultaneous: 5, CPUs: 10, MemoryBytes: 10 << 30, DiskBytes: 10 << 30}
		until := time.Now().Add(48 * time.Hour).Truncate(time.Second)
		r, err := s.Reserve(ctx, store.Launch{UserID: u.ID, Experiment: "p~1", Image: testImage, Default: limit, ExpiresAt: &until})
		if err != nil {
			t.Fatal(err)
		}
		if r.ExpiresAt == nil || !r.ExpiresAt.Equal(until) || r.Started != nil || r.Ended != nil {
			t.Fatalf("reserved: expires %v started %v ended %v", r.ExpiresAt, r.Started, r.Ended)
		}
		if r, err = s.Move(ctx, r.ID, calipso.Running, store.Update{}); err != nil || r.Started == nil {
			t.Fatalf("running: %+v %v", r.Started, err)
		}
		idle := time.Now().Add(-time.Hour).Truncate(time.Second)
		later := idle.Add(time.Minute)
		for _, step := range []func() error{
			func() error { return s.SetIdleSince(ctx, r.ID, &idle, false) },
			func() error { return s.SetWarned(ctx, r.ID, time.Now()) },
			func() error { return s.SetIdleSince(ctx, r.ID, &later, false) }, // a warning about something else stays
		} {
			if err := step(); err != nil {
				t.Fatal(err)
			}
		}
		r, _ = s.Resource(ctx, r.ID)
		if r.IdleSince == nil || !r.IdleSince.Equal(later) || r.WarnedAt == nil {
			t.Fatalf("idle %v warned %v", r.IdleSince, r.WarnedAt)
		}
		if err := s.SetIdleSince(ctx, r.ID, nil, true); err != nil {
			t.Fatal(err)
		}
		if r, _ = s.Resource(ctx, r.ID); r.IdleSince != nil || r.WarnedAt != nil {
			t.Fatalf("active again: idle %v warned %v", r.IdleSince, r.WarnedAt)
		}
		r, _ = s.Move(ctx, r.ID, calipso.Stopping, store.Update{})
		r, _ = s.Move(ctx, r.ID, calipso.Stopped, store.Update{})
		ended := r.Ended
		if ended == nil {
			t.Fatal("a stopped record has no end")
		}
		time.Sleep(10 * time.Millisecond)
		if r, _ = s.Move(ctx, r.ID, calipso.Removed, store.Update{}); r.Ended == nil || !r.Ended.Equal(*ended) {
			t.Fatalf("removal moved the end: %v, was %v", r.Ended, ended)
		}
		ran, err := s.RanBetween(ctx, r.Started.Add(-time.Hour), time.Now().Add(time.Hour))
		if err != nil || len(ran) != 1 || ran[0].ID != r.ID {
			t.Fatalf("ran between: %v %v", ran, err)
		}
		if ran, _ := s.RanBetween(ctx, time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)); len(ran) != 0 {
			t.Fatalf("a record that ended is counted later: %v", ran)
		}
	})
}

// TestExtensions: a granted extension moves the expiry in the same transaction as it
// is recorded; a pending one waits for an admin, once; both are audited.
func TestExtensions(t *testing.T) {
	backends(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		u, _ := s.EnsureUser(ctx, "ben")
		limit := calipso.Quota{MaxSimultaneous: 5, CPUs: 10, MemoryBytes: 10 << 30, DiskBytes: 10 << 30}
		until := time.Now().Add(time.Hour).Truncate(time.Second)
		r, err := s.Reserve(ctx, store.Launch{UserID: u.ID, Experiment: "p~1", Image: testImage, Default: limit, ExpiresAt: &until})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.RequestExtension(ctx, "ben", r.ID, 2*time.Hour, "  ", true); !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("no reason: %v", err)
		}
		if _, err := s.RequestExtension(ctx, "ben", r.ID, time.Minute, "beamtime", true); !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("a minute: %v", err)
		}
		e, err := s.RequestExtension(ctx, "ben", r.ID, 2*time.Hour, "the scan runs late", true)
		if err != nil || e.State != calipso.ExtensionGranted || e.DecidedBy != "policy" {
			t.Fatalf("granted: %+v %v", e, err)
		}
		if r, _ = s.Resource(ctx, r.ID); !r.ExpiresAt.Equal(until.Add(2 * time.Hour)) {
			t.Fatalf("expiry %v, want %v", r.ExpiresAt, until.Add(2*time.Hour))
		}
		p, err := s.RequestExtension(ctx, "ben", r.ID, 24*time.Hour, "a second beamtime", false)
		if err != nil || p.State != calipso.ExtensionPending {
			t.Fatalf("pending: %+v %v", p, err)
		}
		if pending, _ := s.Extensions(ctx, 0, calipso.ExtensionPending); len(pending) != 1 || pending[0].ID != p.ID {
			t.Fatalf("pending list %v", pending)
		}
		if d, err := s.DecideExtension(ctx, "admin", p.ID, true); err != nil || d.State != calipso.ExtensionGranted || d.DecidedBy != "admin" || d.Decided == nil {
			t.Fatalf("decided: %+v %v", d, err)
		}
		if _, err := s.DecideExtension(ctx, "admin", p.ID, false); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("decided twice: %v", err)
		}
		if r, _ = s.Resource(ctx, r.ID); !r.ExpiresAt.Equal(until.Add(26 * time.Hour)) {
			t.Fatalf("expiry %v after the admin's grant", r.ExpiresAt)
		}
		audit, err := s.Audit(ctx, "resource", strconv.FormatInt(r.ID, 10), 10)
		if err != nil || len(audit) != 3 {
			t.Fatalf("audit of the extensions: %+v %v", audit, err)
		}
	})
}
