package launch_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/launch"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/settings"
)

// neverLead is an Elector that never leads: Run then only renews leases.
type neverLead struct{}

func (neverLead) Campaign(ctx context.Context, _ func(context.Context)) { <-ctx.Done() }

// gate blocks every launch at one Stage until opened.
type gate struct {
	at      launch.Stage
	reached chan calipso.Resource
	open    chan struct{}
}

func newGate(at launch.Stage) *gate {
	return &gate{at: at, reached: make(chan calipso.Resource, 1), open: make(chan struct{})}
}

func (g *gate) hook(st launch.Stage, r calipso.Resource) {
	if st == g.at {
		g.reached <- r
		<-g.open
	}
}

func shortLeases(s *settings.Settings) {
	s.Workloads.LeaseTTL = settings.Duration{Duration: time.Second}
}

// second is another process's Service on e's database and engine.
func (e *env) second(t *testing.T) *launch.Service {
	t.Helper()
	return launch.New(e.db, map[calipso.ResourceType]provisioner.Provisioner{calipso.Docker: e.engine}, nil, launch.ConfigFrom(e.cfg), slog.New(slog.DiscardHandler))
}

// TestSecondProcessLeavesLiveLaunches (F2): a process starting on the same database,
// and its reconciler, never fail a launch another live process is running, however
// long that launch takes: its lease is renewed.
func TestSecondProcessLeavesLiveLaunches(t *testing.T) {
	g := newGate(launch.StageStarted)
	e := newEnv(t, envOptions{driver: "mysql", noGuac: true, edit: shortLeases, hook: g.hook})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.svc.Run(ctx, neverLead{}) // heartbeat only
	ref := e.experiment(t, e.user, "p1", nil, nil)
	done := make(chan error, 1)
	go func() { _, err := e.svc.Launch(ctx, e.user, ref, desktopImage); done <- err }()
	r := <-g.reached

	time.Sleep(3 * e.cfg.Workloads.LeaseTTL.Duration) // the reservation's own lease would have expired
	other := e.second(t)
	if rep := other.Recover(ctx); rep.InterruptedLaunches != 0 || len(rep.Errors) > 0 {
		t.Errorf("second process's start-up = %s %v, want the live launch left alone", rep, rep.Errors)
	}
	if rep := other.Reconcile(ctx); rep.String() != (launch.Report{}).String() {
		t.Errorf("second process's reconcile = %s %v, want nothing done", rep, rep.Errors)
	}
	close(g.open)
	if err := <-done; err != nil {
		t.Fatalf("the live launch failed: %v", err)
	}
	if got, _ := e.db.Resource(ctx, r.ID); got.State != calipso.Running {
		t.Fatalf("record = %s, want running", got.State)
	}
}

// TestExpiredLaunchIsTakenOver (F1): a launch whose process stopped renewing its
// lease (gone, or cut from the database) is failed by another process's reconciler
// once the lease has expired, its workload removed and its quota released; if the
// first process comes back, its fenced write fails and it rolls back, leaving
// nothing.
func TestExpiredLaunchIsTakenOver(t *testing.T) {
	g := newGate(launch.StageStarted)
	e := newEnv(t, envOptions{driver: "mysql", noGuac: true, edit: shortLeases, hook: g.hook})
	ctx := context.Background()
	ref := e.experiment(t, e.user, "p1", nil, nil)
	done := make(chan error, 1)
	go func() { _, err := e.svc.Launch(ctx, e.user, ref, desktopImage); done <- err }()
	r := <-g.reached // the container runs, the record is pending; no heartbeat runs

	other := e.second(t)
	if rep := other.Reconcile(ctx); rep.InterruptedLaunches != 0 {
		t.Fatalf("reconcile before the lease expired = %s", rep)
	}
	time.Sleep(e.cfg.Workloads.LeaseTTL.Duration + 200*time.Millisecond)
	rep := other.Reconcile(ctx)
	if rep.InterruptedLaunches != 1 || len(rep.Errors) > 0 {
		t.Fatalf("reconcile after the lease expired = %s %v, want the launch taken over", rep, rep.Errors)
	}
	if got, _ := e.db.Resource(ctx, r.ID); got.State != calipso.Failed {
		t.Errorf("record = %s, want failed", got.State)
	}
	if q := e.usage(t, e.user); q.MaxSimultaneous != 0 {
		t.Errorf("usage = %+v after the takeover, want none", q)
	}

	close(g.open) // the first process comes back
	err := <-done
	if !errors.Is(err, store.ErrConflict) {
		t.Errorf("the first process's launch = %v, want a conflict (its record was taken over)", err)
	}
	e.assertNothingLeft(t, e.user)
}

// TestRestartExpiresThePredecessorsLeases (F5): a process's own dead predecessor on
// this host (this test plays it with another nonce under this pid) holds no quota
// once the new one has recovered, before any lease has expired.
func TestRestartExpiresThePredecessorsLeases(t *testing.T) {
	e := newEnv(t, envOptions{driver: "mysql", noGuac: true})
	ctx := context.Background()
	ref := e.experiment(t, e.user, "p1", nil, nil)
	owner := e.svc.Owner()
	predecessor := owner[:len(owner)-8] + "deadbeef" // this pid, a nonce no Service of this process made
	im, err := e.db.Image(ctx, desktopImage)
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.db.Reserve(ctx, store.Launch{UserID: e.user.ID, Experiment: ref, Image: im, Default: e.cfg.Quotas.Default,
		NameOf: func(id int64) string { return provisioner.Name(e.instance, id) }, OnePerSession: true,
		Lease: store.Lease{Owner: predecessor, Expires: time.Now().Add(time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	// A live process of another host is left to its lease.
	if _, err := e.db.Reserve(ctx, store.Launch{UserID: e.user.ID, Experiment: "p1~other", Image: im, Default: e.cfg.Quotas.Default,
		Lease: store.Lease{Owner: "elsewhere/1/abcdefgh", Expires: time.Now().Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	rep := e.second(t).Recover(ctx)
	if rep.InterruptedLaunches != 1 || len(rep.Errors) > 0 {
		t.Fatalf("recover = %s %v, want the predecessor's launch failed", rep, rep.Errors)
	}
	if got, _ := e.db.Resource(ctx, r.ID); got.State != calipso.Failed {
		t.Errorf("predecessor's record = %s, want failed", got.State)
	}
	if q := e.usage(t, e.user); q.MaxSimultaneous != 1 {
		t.Errorf("usage = %+v, want only the other host's launch", q)
	}
	if _, err := e.svc.Launch(ctx, e.user, ref, desktopImage); err != nil {
		t.Errorf("relaunch right after the restart: %v", err)
	}
}

// TestOneLeaderAtATime: of three processes campaigning through the database, one
// leads; when it stops, another takes over within a lease's life.
func TestOneLeaderAtATime(t *testing.T) {
	e := newEnv(t, envOptions{driver: "mysql", noGuac: true, edit: shortLeases})
	procs := []*launch.Service{e.svc, e.second(t), e.second(t)}
	stops := make([]context.CancelFunc, len(procs))
	dones := make([]chan struct{}, len(procs))
	for i, p := range procs {
		ctx, cancel := context.WithCancel(context.Background())
		stops[i], dones[i] = cancel, make(chan struct{})
		go func() { defer close(dones[i]); p.Run(ctx, nil) }()
	}
	defer func() {
		for i := range procs {
			stops[i]()
			<-dones[i]
		}
	}()
	leader := func() int {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second) // generous: proves a takeover, not its speed
		for time.Now().Before(deadline) {
			holder, err := e.db.LeaseHolder(context.Background(), launch.LeaderLease)
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range procs {
				if p.Owner() == holder && dones[i] != nil {
					select {
					case <-dones[i]:
					default:
						return i
					}
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatal("no live process leads")
		return -1
	}
	first := leader()
	stops[first]()
	<-dones[first]
	if next := leader(); next == first {
		t.Fatalf("process %d still leads after it stopped", first)
	}
}
