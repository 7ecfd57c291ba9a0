package launch

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/provisioner"
)

// LeaderLease names the lease of the background work in the store's leases table.
const LeaderLease = "reconciler"

// Elector decides which replica does the background work. The default elects through
// the application database (DatabaseElector); where Calipso runs on Kubernetes, a
// Lease object may do it instead.
type Elector interface {
	// Campaign runs until ctx ends: it calls lead with a context that lives while this
	// process is the leader, and returns when ctx ends. lead must return soon after its
	// context ends. Campaign gives the leadership up before returning.
	Campaign(ctx context.Context, lead func(ctx context.Context))
}

// Run is the controller of this process until ctx ends: it renews the leases of the
// records this process works on, and campaigns with elector (nil: the database's) for
// the background work, which it does while it leads: a reconcile pass at once, then
// after each engine event, every workloads.reconcile_interval, within seconds after a
// pass that failed (an engine or a database back from an outage), and a takeover of
// expired leases every lease_ttl.
func (s *Service) Run(ctx context.Context, elector Elector) {
	if elector == nil {
		elector = s.DatabaseElector()
	}
	done := make(chan struct{})
	go func() { defer close(done); s.heartbeat(ctx) }()
	elector.Campaign(ctx, s.lead)
	<-done
}

// Drain waits, until ctx ends, for the launches this process is running (a v2
// launch runs after its request has been answered).
func (s *Service) Drain(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.running.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Kick asks the leader, if it is this process, for a reconcile pass soon.
func (s *Service) Kick() {
	s.changes.add(provisioner.Change{}, true)
	s.signal()
}

func (s *Service) signal() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// changeSet gathers the engine events between passes, so that the leader runs a pass
// only when one of them is news: during a burst of launches every create and start
// is an event, and a full pass after each would compete with the launches for the
// engine.
type changeSet struct {
	mu    sync.Mutex
	ended map[string]bool // workload name → whether an event said it ended
	all   bool            // a pass is wanted whatever the events say
}

// maxChanges bounds what needsPass looks up: beyond it, a pass is cheaper.
const maxChanges = 500

func (c *changeSet) add(ch provisioner.Change, all bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if all || len(c.ended) >= maxChanges {
		c.all = true
		return
	}
	if c.ended == nil {
		c.ended = map[string]bool{}
	}
	c.ended[ch.Name] = c.ended[ch.Name] || ch.Ended
}

func (c *changeSet) take() (ended map[string]bool, all bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ended, all = c.ended, c.all
	c.ended, c.all = nil, false
	return ended, all
}

// needsPass says whether engine events call for a pass: they do unless each names
// a workload whose record expects it. A create or start is expected while the
// record is live (a launch or a start going on or done); an end while it is
// stopping (a stop going on) or no longer live (a rollback, a removal). What no
// record expects (an orphan, a workload that died under a running record) calls for
// a pass, and so does a failure to read the records.
func (s *Service) needsPass(ctx context.Context, ended map[string]bool) bool {
	if len(ended) == 0 {
		return false
	}
	records, err := s.db.Resources(ctx, store.ResourceFilter{EngineNames: slices.Collect(maps.Keys(ended))})
	if err != nil {
		return true
	}
	state := make(map[string]calipso.State, len(records))
	for _, r := range records {
		state[r.EngineName] = r.State
	}
	for name, end := range ended {
		st, known := state[name]
		switch {
		case !known:
			return true
		case !end && !st.Live():
			return true
		case end && (st == calipso.Pending || st == calipso.Running):
			return true
		}
	}
	return false
}

// WhileLeading adds background work that runs once across replicas: f runs on the
// leader while it leads, and must return when its context ends. Call it before Run.
func (s *Service) WhileLeading(f func(ctx context.Context)) { s.leaderTasks = append(s.leaderTasks, f) }

// lead does the background work while ctx lives.
func (s *Service) lead(ctx context.Context) {
	var tasks sync.WaitGroup
	defer tasks.Wait()
	for _, f := range s.leaderTasks {
		tasks.Go(func() { f(ctx) })
	}
	s.log.InfoContext(ctx, "leading the background work", "process", s.owner)
	s.metrics.leader.Set(1)
	defer s.metrics.leader.Set(0)
	for kind, e := range s.engines {
		if w, ok := e.(provisioner.Watcher); ok {
			go s.watch(ctx, string(kind), w)
		}
	}
	interval := s.cfg.Workloads.ReconcileInterval.Duration
	reclaimEvery := time.NewTicker(s.ttl())
	defer reclaimEvery.Stop()
	full := time.NewTimer(0) // a pass at once
	defer full.Stop()
	backoff := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			s.log.InfoContext(context.WithoutCancel(ctx), "no longer leading the background work", "process", s.owner)
			return
		case <-reclaimEvery.C:
			var rep Report
			s.reclaim(ctx, &rep)
			s.logReport(ctx, "took over expired leases", rep)
			continue
		case <-s.kick:
			// Events come in bursts (a crash's orphans, a launch's create and start):
			// let them settle a moment, then one pass takes them all.
			select {
			case <-ctx.Done():
				continue
			case <-time.After(200 * time.Millisecond):
			}
			select {
			case <-s.kick:
			default:
			}
			if ended, all := s.changes.take(); !all && !s.needsPass(ctx, ended) {
				continue
			}
		case <-full.C:
		}
		rep := s.Reconcile(ctx)
		next := interval
		if len(rep.Errors) > 0 {
			// Something was away: try again soon, so that orphans go within seconds of
			// its return, backing off while it stays away.
			backoff = min(max(2*backoff, time.Second), 5*time.Second)
			next = min(backoff, interval)
		} else {
			backoff = 0
		}
		if !full.Stop() {
			select {
			case <-full.C:
			default:
			}
		}
		full.Reset(next)
	}
}

// watch follows an engine's events while ctx lives, kicking a pass for each, and
// after each reconnection (the engine is back: what happened meanwhile is unknown).
func (s *Service) watch(ctx context.Context, kind string, w provisioner.Watcher) {
	wait := time.Second
	for ctx.Err() == nil {
		start := time.Now()
		err := w.Watch(ctx, func(c provisioner.Change) { s.changes.add(c, false); s.signal() })
		if ctx.Err() != nil {
			return
		}
		s.log.DebugContext(ctx, "engine events: stream ended, reconnecting", "engine", kind, "err", err)
		if time.Since(start) > 10*time.Second {
			wait = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
		s.Kick()
	}
}

// databaseElector elects through the store's leases table.
type databaseElector struct{ s *Service }

// DatabaseElector elects the leader through the application database: the holder of
// the LeaderLease lease, renewed every fifth of workloads.lease_ttl. A leader that
// cannot renew steps down before its lease can have expired, so two processes never
// lead at once as long as their clocks agree to within a fraction of the lease.
func (s *Service) DatabaseElector() Elector { return databaseElector{s} }

func (e databaseElector) Campaign(ctx context.Context, lead func(context.Context)) {
	s := e.s
	ttl := s.ttl()
	t := time.NewTicker(ttl / 5)
	defer t.Stop()
	type leadership struct {
		stop     context.CancelFunc
		finished chan struct{}
	}
	var (
		cur     *leadership
		renewed time.Time // when the held lease was last renewed
	)
	stepDown := func() {
		if cur != nil {
			cur.stop()
			<-cur.finished
			cur = nil
		}
	}
	defer func() {
		stepDown()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ttl/2)
		defer cancel()
		if err := s.db.ReleaseLease(rctx, LeaderLease, s.owner); err != nil {
			s.log.WarnContext(rctx, "leader lease not released: another process leads once it expires", "err", err)
		}
	}()
	for {
		actx, cancel := bound(ctx, ttl/5)
		asked := time.Now()
		held, err := s.db.AcquireLease(actx, LeaderLease, s.owner, asked.Add(ttl))
		cancel()
		switch {
		case err == nil && held:
			renewed = asked
			if cur == nil {
				lctx, stop := context.WithCancel(ctx)
				cur = &leadership{stop: stop, finished: make(chan struct{})}
				go func(done chan struct{}) { defer close(done); lead(lctx) }(cur.finished)
			}
		case err == nil:
			stepDown() // another process has it
		default:
			// Unsure: keep leading only while the lease surely has not expired.
			if cur != nil && time.Since(renewed) > ttl/2 {
				s.log.WarnContext(ctx, "leader lease not renewed: stepping down", "err", err)
				stepDown()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
