package launch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/provisioner"
)

// removeConcurrency bounds the engine calls of one pass made at once: enough to
// remove a crash's orphans in seconds, few enough not to swamp the engine.
const removeConcurrency = 16

// Report says what a reconciliation did. Each action is counted by the process
// whose conditional write made it, so concurrent passes never count one twice.
type Report struct {
	InterruptedLaunches int // pending records nobody held, failed and cleaned up
	FinishedStops       int // stopping records nobody held, stopped
	Vanished            int // running records whose workload was gone or dead
	OrphanWorkloads     int // engine workloads without a live record, removed
	OrphanDesktops      int // Guacamole records without a running resource, removed
	Errors              []error
}

func (r Report) String() string {
	return fmt.Sprintf("interrupted launches %d, finished stops %d, vanished %d, orphan workloads %d, orphan guacamole records %d, errors %d",
		r.InterruptedLaunches, r.FinishedStops, r.Vanished, r.OrphanWorkloads, r.OrphanDesktops, len(r.Errors))
}

func (r Report) actions() int {
	return r.InterruptedLaunches + r.FinishedStops + r.Vanished + r.OrphanWorkloads + r.OrphanDesktops
}

// tally collects a pass's report from concurrent workers.
type tally struct {
	mu  sync.Mutex
	rep *Report
}

func (t *tally) add(f func(*Report)) {
	t.mu.Lock()
	f(t.rep)
	t.mu.Unlock()
}

func (t *tally) note(err error) {
	if err != nil {
		t.add(func(r *Report) { r.Errors = append(r.Errors, err) })
	}
}

func (s *Service) logReport(ctx context.Context, what string, rep Report) {
	for _, err := range rep.Errors {
		s.log.WarnContext(ctx, what, "err", err)
	}
	if rep.actions() > 0 {
		s.log.InfoContext(ctx, what, "report", rep.String())
	}
	s.metrics.count(rep)
}

// Reconcile compares the records with what the engines and Guacamole have and makes
// them agree: records nobody holds a lease on are taken over (interrupted launches
// failed, unfinished stops finished), running records whose workload ended are
// failed, and workloads and Guacamole records that no record accounts for are
// removed, in parallel. Launches and stops other processes hold are left alone. The
// pass is bounded by workloads.reconcile_timeout; what it could not do is in the
// report's errors and is tried again by the next pass.
func (s *Service) Reconcile(ctx context.Context) Report {
	ctx, cancel := bound(ctx, s.cfg.Workloads.ReconcileTimeout.Duration)
	defer cancel()
	var rep Report
	s.reclaim(ctx, &rep)
	s.converge(ctx, &rep)
	s.logReport(ctx, "reconciled", rep)
	return rep
}

// reclaim takes over the pending and stopping records whose lease has expired.
func (s *Service) reclaim(ctx context.Context, rep *Report) {
	t := &tally{rep: rep}
	records, err := s.db.Resources(ctx, store.ResourceFilter{States: []calipso.State{calipso.Pending, calipso.Stopping}, LeaseExpiredAt: time.Now()})
	if err != nil {
		t.note(err)
		return
	}
	g := errgroup.Group{}
	g.SetLimit(removeConcurrency)
	for _, r := range records {
		g.Go(func() error {
			switch r.State {
			case calipso.Pending:
				if s.failInterrupted(ctx, r, t) {
					t.add(func(rep *Report) { rep.InterruptedLaunches++ })
				}
			case calipso.Stopping:
				ok, err := s.db.Claim(ctx, r.ID, calipso.Stopping, s.lease())
				if err != nil || !ok {
					t.note(err)
					return nil
				}
				s.holds.add(r.ID)
				defer s.holds.remove(r.ID)
				if _, err := s.finishStop(ctx, r); err != nil {
					t.note(err)
					return nil
				}
				t.add(func(rep *Report) { rep.FinishedStops++ })
			}
			return nil
		})
	}
	_ = g.Wait()
}

// failInterrupted fails a pending record nobody holds (its process is gone), then
// removes what the launch made; it reports whether this process failed it. A launch
// that is slow rather than dead then finds its record failed and rolls back.
func (s *Service) failInterrupted(ctx context.Context, r calipso.Resource, t *tally) bool {
	msg := store.InterruptedLaunch
	if _, err := s.db.MoveExpired(ctx, r.ID, calipso.Pending, calipso.Failed, store.Update{Error: &msg}); err != nil {
		if !errors.Is(err, store.ErrConflict) {
			t.note(err)
		}
		return false
	}
	s.progress(ctx, r.ID, EventFailed, msg)
	if engine, err := s.engine(r.ResourceType); err == nil {
		t.note(engine.Remove(ctx, r.EngineName)) // else an orphan of the next pass
	}
	if s.desktops != nil {
		t.note(s.desktops.Delete(ctx, r.EngineName))
	}
	return true
}

// converge fails running records whose workload ended and removes orphans. It lists
// the engines and Guacamole first and reads the records after: a workload is made
// only after its record, so any listed workload whose record is live was reserved
// before the records were read, and is seen.
func (s *Service) converge(ctx context.Context, rep *Report) {
	t := &tally{rep: rep}
	listed := map[calipso.ResourceType][]provisioner.Workload{}
	for kind := range s.engines {
		engine, err := s.engine(kind)
		if err != nil {
			continue
		}
		list, err := engine.List(ctx)
		if err != nil {
			t.note(fmt.Errorf("list %s workloads: %w", kind, err))
			continue
		}
		listed[kind] = list
	}
	var desktops []string
	desktopsListed := false
	if s.desktops != nil {
		var err error
		if desktops, err = s.desktops.List(ctx); err != nil {
			t.note(fmt.Errorf("list guacamole records: %w", err))
		} else {
			desktopsListed = true
		}
	}
	records, err := s.db.Resources(ctx, store.ResourceFilter{States: []calipso.State{calipso.Pending, calipso.Running, calipso.Stopping, calipso.Stopped}})
	if err != nil {
		t.note(err)
		return
	}
	byName := make(map[string]calipso.Resource, len(records))
	for _, r := range records {
		byName[r.EngineName] = r
	}

	g := errgroup.Group{}
	g.SetLimit(removeConcurrency)
	seen := map[string]provisioner.Workload{}
	for kind, list := range listed {
		engine, _ := s.engine(kind)
		for _, wl := range list {
			seen[wl.Name] = wl
			if _, ok := byName[wl.Name]; ok {
				continue
			}
			g.Go(func() error {
				if err := engine.Remove(ctx, wl.Name); err != nil {
					t.note(err)
					return nil
				}
				t.add(func(rep *Report) { rep.OrphanWorkloads++ })
				return nil
			})
		}
	}
	for _, r := range records {
		if r.State != calipso.Running {
			continue
		}
		if _, ok := listed[r.ResourceType]; !ok {
			continue // its engine did not answer: nothing is known of its workload
		}
		if wl, ok := seen[r.EngineName]; ok && wl.State != provisioner.StateStopped && wl.State != provisioner.StateError {
			continue
		}
		g.Go(func() error {
			if s.vanished(ctx, r, t.note) {
				t.add(func(rep *Report) { rep.Vanished++ })
			}
			return nil
		})
	}
	if desktopsListed {
		for _, n := range desktops {
			if r, ok := byName[n]; ok && (r.State == calipso.Running || r.State == calipso.Pending) {
				continue
			}
			g.Go(func() error {
				if err := s.desktops.Delete(ctx, n); err != nil {
					t.note(err)
					return nil
				}
				t.add(func(rep *Report) { rep.OrphanDesktops++ })
				return nil
			})
		}
	}
	_ = g.Wait()
}

// vanished fails a running record whose workload is gone, stopped or broken (the
// engine's Inspect confirms it), and reports whether it did.
func (s *Service) vanished(ctx context.Context, r calipso.Resource, note func(error)) bool {
	engine, err := s.engine(r.ResourceType)
	if err != nil {
		return false
	}
	wl, err := engine.Inspect(ctx, r.EngineName)
	gone := errors.Is(err, provisioner.ErrNotFound)
	if err != nil && !gone {
		note(err)
		return false
	}
	if !gone && wl.State != provisioner.StateError && wl.State != provisioner.StateStopped {
		return false
	}
	// The engine's reason is logged, not recorded: users read the record's error, and
	// the reason may be the runtime's or the kubelet's own text.
	why := endedMessage(r, gone, wl)
	s.log.WarnContext(ctx, "running workload ended", "resource", r.ID, "name", r.EngineName, "gone", gone, "state", wl.State, "reason", wl.Reason, "shown", why)
	// Only from running: a Stop may have begun since the records were read (the
	// workload is then stopped on purpose) and must not be failed.
	if _, err := s.db.MoveFrom(ctx, r.ID, calipso.Running, calipso.Failed, store.Update{Error: &why}); err != nil {
		if !errors.Is(err, store.ErrConflict) {
			note(err)
		}
		return false
	}
	if s.desktops != nil {
		note(s.desktops.Delete(ctx, r.EngineName))
	}
	return true
}

// endedMessage is what the record of a running resource says once its workload is
// gone, stopped or broken: the kind, and what the user can do.
func endedMessage(r calipso.Resource, gone bool, wl provisioner.Workload) string {
	switch {
	case gone:
		return "the workload vanished from the engine: relaunch it"
	case wl.State == provisioner.StateStopped:
		return "the workload ended by itself: relaunch it"
	case strings.Contains(wl.Reason, "OOMKilled"):
		return "the workload ran out of memory and was stopped: relaunch it (it may need an image with more memory)"
	default:
		return fmt.Sprintf("the workload failed: relaunch it; if it keeps failing, ask the facility's support, quoting resource %d", r.ID)
	}
}
