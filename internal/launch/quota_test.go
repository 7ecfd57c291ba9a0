package launch_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/store"
)

// TestQuotaRace: 200 launches at once by one user whose limit is 5, each for its own
// session (so that only the quota can refuse them): exactly 5 run.
func TestQuotaRace(t *testing.T) {
	for _, driver := range []string{"mysql", "sqlite"} {
		t.Run(driver, func(t *testing.T) {
			const launches, limit = 200, 5
			e := newEnv(t, envOptions{driver: driver, noGuac: true})
			ctx := context.Background()
			if err := e.db.SetQuota(ctx, "test", e.user.ID, calipso.Quota{MaxSimultaneous: limit, CPUs: 100, MemoryBytes: 100 << 30, DiskBytes: 1 << 40}); err != nil {
				t.Fatalf("SetQuota: %v", err)
			}
			sessions := make([]calipso.Session, launches)
			for i := range sessions {
				sessions[i] = calipso.Session{SessionNumber: fmt.Sprint(i)}
			}
			e.experiment(t, e.user, "race", nil, nil, sessions...)

			var (
				wg      sync.WaitGroup
				start   = make(chan struct{})
				results = make([]error, launches)
				running = make([]calipso.Resource, launches)
			)
			for i := range launches {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					running[i], results[i] = e.svc.Launch(ctx, e.user, fmt.Sprintf("race~%d", i), desktopImage)
				}()
			}
			close(start)
			wg.Wait()

			var ok, quota int
			for i, err := range results {
				var qe *store.QuotaError
				switch {
				case err == nil:
					ok++
					if running[i].State != calipso.Running {
						t.Errorf("launch %d succeeded with state %s", i, running[i].State)
					}
				case errors.As(err, &qe) && errors.Is(err, store.ErrConflict):
					quota++
				default:
					t.Errorf("launch %d: %v, want success or a quota error", i, err)
				}
			}
			if ok != limit || quota != launches-limit {
				t.Errorf("%d succeeded and %d refused by quota, want %d and %d", ok, quota, limit, launches-limit)
			}
			if q := e.usage(t, e.user); q.MaxSimultaneous != limit {
				t.Errorf("usage = %d, want %d", q.MaxSimultaneous, limit)
			}
			if n := len(e.containers(t)); n != limit {
				t.Errorf("%d containers, want %d", n, limit)
			}
			if n := len(e.records(t)); n != limit {
				t.Errorf("%d records, want %d (refused launches leave none)", n, limit)
			}
			for _, r := range running {
				if r.ID == 0 {
					continue
				}
				if _, err := e.svc.Remove(ctx, r); err != nil {
					t.Errorf("Remove %s: %v", r.EngineName, err)
				}
			}
			e.assertNothingLeft(t, e.user)
		})
	}
}
