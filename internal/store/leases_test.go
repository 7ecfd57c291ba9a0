package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/store"
)

// TestLeasesFenceWrites: a record's writes by its launching process hold only while
// that process's lease does; another process takes the record over only once the
// lease has expired, and the first one's later writes then fail.
func TestLeasesFenceWrites(t *testing.T) {
	backends(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		u, _ := s.EnsureUser(ctx, "leaser")
		limit := calipso.Quota{MaxSimultaneous: 5, CPUs: 10, MemoryBytes: 10 << 30, DiskBytes: 10 << 30}
		alive := store.Lease{Owner: "host/1/a", Expires: time.Now().Add(time.Minute)}
		dead := store.Lease{Owner: "host/2/b", Expires: time.Now().Add(-time.Second)}
		held, err := s.Reserve(ctx, store.Launch{UserID: u.ID, Experiment: "p~1", Image: testImage, Default: limit, Lease: alive})
		if err != nil {
			t.Fatal(err)
		}
		lost, err := s.Reserve(ctx, store.Launch{UserID: u.ID, Experiment: "p~2", Image: testImage, Default: limit, Lease: dead})
		if err != nil {
			t.Fatal(err)
		}
		msg := "interrupted"
		t.Run("a held launch is not taken over", func(t *testing.T) {
			if _, err := s.MoveExpired(ctx, held.ID, calipso.Pending, calipso.Failed, store.Update{Error: &msg}); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("MoveExpired of a held record = %v, want a conflict", err)
			}
			if _, err := s.MoveHeld(ctx, held.ID, "host/9/z", calipso.Running, store.Update{}); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("MoveHeld by another owner = %v, want a conflict", err)
			}
		})
		t.Run("an expired launch is taken over once", func(t *testing.T) {
			var wg sync.WaitGroup
			var mu sync.Mutex
			won := 0
			for range 4 {
				wg.Go(func() {
					if _, err := s.MoveExpired(ctx, lost.ID, calipso.Pending, calipso.Failed, store.Update{Error: &msg}); err == nil {
						mu.Lock()
						won++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if won != 1 {
				t.Fatalf("%d reconcilers took the record over, want 1", won)
			}
			// Its process comes back and finds it is not its own any more.
			if _, err := s.MoveHeld(ctx, lost.ID, dead.Owner, calipso.Running, store.Update{}); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("MoveHeld after a takeover = %v, want a conflict", err)
			}
		})
		t.Run("the owner's move ends its lease", func(t *testing.T) {
			r, err := s.MoveHeld(ctx, held.ID, alive.Owner, calipso.Running, store.Update{})
			if err != nil || r.State != calipso.Running {
				t.Fatalf("MoveHeld = %s, %v", r.State, err)
			}
			// Running records are nobody's: a stop claims it afresh.
			stopping, err := s.Move(ctx, held.ID, calipso.Stopping, store.Update{Lease: &dead})
			if err != nil {
				t.Fatal(err)
			}
			ok, err := s.Claim(ctx, stopping.ID, calipso.Stopping, alive)
			if err != nil || !ok {
				t.Fatalf("claim of an expired stop = %v, %v", ok, err)
			}
			if ok, err := s.Claim(ctx, stopping.ID, calipso.Stopping, store.Lease{Owner: "host/3/c", Expires: time.Now().Add(time.Minute)}); err != nil || ok {
				t.Fatalf("second claim of a held stop = %v, %v; want refused", ok, err)
			}
			if n, err := s.Renew(ctx, alive.Owner, []int64{stopping.ID, lost.ID}, time.Now().Add(time.Minute)); err != nil || n != 1 {
				t.Fatalf("renew = %d, %v; want 1 record still held", n, err)
			}
		})
	})
}

// TestReserveFailsExpiredLaunches: a launch whose process let its lease expire holds
// no quota: the next Reserve of its user fails it and counts the quota without it.
func TestReserveFailsExpiredLaunches(t *testing.T) {
	backends(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		u, _ := s.EnsureUser(ctx, "restarter")
		limit := calipso.Quota{MaxSimultaneous: 1, CPUs: 10, MemoryBytes: 10 << 30, DiskBytes: 10 << 30}
		old, err := s.Reserve(ctx, store.Launch{UserID: u.ID, Experiment: "p~1", Image: testImage, Default: limit,
			Lease: store.Lease{Owner: "host/1/a", Expires: time.Now().Add(time.Minute)}})
		if err != nil {
			t.Fatal(err)
		}
		next := store.Launch{UserID: u.ID, Experiment: "p~1", Image: testImage, Default: limit, OnePerSession: true,
			Lease: store.Lease{Owner: "host/1/b", Expires: time.Now().Add(time.Minute)}}
		if _, err := s.Reserve(ctx, next); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("reserve beside a held launch = %v, want a conflict", err)
		}
		if n, err := s.ExpireLeasesOf(ctx, "host/1/a"); err != nil || n != 1 {
			t.Fatalf("ExpireLeasesOf = %d, %v", n, err)
		}
		if _, err := s.Reserve(ctx, next); err != nil {
			t.Fatalf("reserve after the lease expired: %v", err)
		}
		if got, _ := s.Resource(ctx, old.ID); got.State != calipso.Failed {
			t.Errorf("the expired launch is %s, want failed", got.State)
		}
		if used, _ := s.Usage(ctx, u.ID); used.MaxSimultaneous != 1 {
			t.Errorf("usage %+v, want only the new launch", used)
		}
		if owners, err := s.LeaseOwners(ctx); err != nil || len(owners) != 1 || owners[0] != "host/1/b" {
			t.Errorf("lease owners = %v, %v; want the new launch's", owners, err)
		}
	})
}

// TestLeaderLease: one holder at a time; the holder renews; another takes it once it
// expired or was released.
func TestLeaderLease(t *testing.T) {
	backends(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		soon := func(d time.Duration) time.Time { return time.Now().Add(d) }
		var wg sync.WaitGroup
		var mu sync.Mutex
		winners := 0
		for _, who := range []string{"a", "b", "c", "d"} {
			wg.Go(func() {
				ok, err := s.AcquireLease(ctx, "work", who, soon(time.Minute))
				if err != nil {
					t.Error(err)
				}
				if ok {
					mu.Lock()
					winners++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if winners != 1 {
			t.Fatalf("%d holders of one lease", winners)
		}
		holder, err := s.LeaseHolder(ctx, "work")
		if err != nil || holder == "" {
			t.Fatalf("holder %q, %v", holder, err)
		}
		if ok, _ := s.AcquireLease(ctx, "work", holder, soon(time.Minute)); !ok {
			t.Error("the holder could not renew")
		}
		if ok, _ := s.AcquireLease(ctx, "work", "e", soon(time.Minute)); ok {
			t.Error("a live lease was taken")
		}
		if err := s.ReleaseLease(ctx, "work", holder); err != nil {
			t.Fatal(err)
		}
		if ok, _ := s.AcquireLease(ctx, "work", "e", soon(-time.Second)); !ok {
			t.Error("a released lease could not be taken")
		}
		if ok, _ := s.AcquireLease(ctx, "work", "f", soon(time.Minute)); !ok {
			t.Error("an expired lease could not be taken")
		}
	})
}

func TestEvents(t *testing.T) {
	backends(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		u, _ := s.EnsureUser(ctx, "watcher")
		r, err := s.Reserve(ctx, store.Launch{UserID: u.ID, Experiment: "p~1", Image: testImage, Default: calipso.Quota{MaxSimultaneous: 1, CPUs: 1, MemoryBytes: 1 << 30, DiskBytes: 1 << 30}})
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range []string{"reserved", "creating", "ready"} {
			if _, err := s.AddEvent(ctx, r.ID, st, ""); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.Events(ctx, r.ID, 1)
		if err != nil || len(got) != 2 || got[0].Seq != 2 || got[0].Stage != "creating" || got[1].Stage != "ready" {
			t.Fatalf("events after 1 = %+v, %v", got, err)
		}
	})
}
