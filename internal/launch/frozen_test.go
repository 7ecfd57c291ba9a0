package launch_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/testenv"
	"github.com/calipsoplus/calipso/settings"
)

// TestFrozenEngine (F3): the engine stops answering (a TCP proxy to its socket,
// stopped with SIGSTOP). A launch, a stop and a remove are each answered within
// launch_timeout + 5 s; once the engine is back, what they left is converged by the
// leader (the stop and the remove finished, the failed launch's late container
// removed), and so is an orphan made meanwhile for a record that does not exist.
func TestFrozenEngine(t *testing.T) {
	cli := testenv.DockerClient(t)
	sock, ok := strings.CutPrefix(cli.DaemonHost(), "unix://")
	if !ok {
		t.Skipf("the test engine is at %s, not on a unix socket", cli.DaemonHost())
	}
	proxy := testenv.StartProxy(t, "unix:"+sock)
	e := newEnv(t, envOptions{driver: "mysql", noGuac: true, dockerURL: "tcp://" + proxy.Addr, edit: func(s *settings.Settings) {
		s.Workloads.LaunchTimeout = settings.Duration{Duration: 6 * time.Second}
		s.Workloads.CallTimeout = settings.Duration{Duration: 2 * time.Second}
		s.Workloads.ReconcileTimeout = settings.Duration{Duration: 8 * time.Second}
		s.Workloads.LeaseTTL = settings.Duration{Duration: time.Second}
	}})
	ctx := context.Background()
	toStop, err := e.svc.Launch(ctx, e.user, e.experiment(t, e.user, "p1", nil, nil), desktopImage)
	if err != nil {
		t.Fatal(err)
	}
	toRemove, err := e.svc.Launch(ctx, e.user, e.experiment(t, e.user, "p2", nil, nil), desktopImage)
	if err != nil {
		t.Fatal(err)
	}
	rctx, stopController := context.WithCancel(ctx)
	controllerDone := make(chan struct{})
	go func() { defer close(controllerDone); e.svc.Run(rctx, nil) }()
	defer func() { stopController(); <-controllerDone }()

	proxy.Freeze(t)
	bound := e.cfg.Workloads.LaunchTimeout.Duration + 5*time.Second
	answered := func(what string, f func() error) {
		t.Helper()
		start := time.Now()
		err := f()
		if took := time.Since(start); took > bound {
			t.Errorf("%s answered after %s, want within %s", what, took.Round(time.Millisecond), bound)
		}
		if err == nil {
			t.Errorf("%s succeeded on a frozen engine", what)
		}
	}
	answered("launch", func() error {
		_, err := e.svc.Launch(ctx, e.user, e.experiment(t, e.user, "p3", nil, nil), desktopImage)
		return err
	})
	answered("stop", func() error { _, err := e.svc.Stop(ctx, toStop); return err })
	answered("remove", func() error { _, err := e.svc.Remove(ctx, toRemove); return err })
	// An orphan appears meanwhile (behind the proxy's back), for a record never made.
	orphan := "calipso-" + e.instance + "-999999"
	if err := e.directStart(ctx, orphan); err != nil {
		t.Fatal(err)
	}
	proxy.Thaw(t)

	deadline := time.Now().Add(60 * time.Second) // generous: proves convergence, not its speed
	var problems []string
	for time.Now().Before(deadline) {
		problems = nil
		for _, c := range e.containers(t) {
			name := strings.TrimPrefix(c.Names[0], "/")
			if name != toStop.EngineName && name != toRemove.EngineName {
				problems = append(problems, "container "+name+" left")
			} else if c.State == "running" {
				problems = append(problems, "container "+name+" still running")
			}
		}
		for _, r := range e.records(t) {
			if r.State == calipso.Pending || r.State == calipso.Stopping {
				problems = append(problems, "record "+r.EngineName+" "+string(r.State))
			}
		}
		if q := e.usage(t, e.user); q.MaxSimultaneous != 0 {
			problems = append(problems, "quota still held")
		}
		if len(problems) == 0 {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if len(problems) > 0 {
		t.Fatalf("after the engine came back: %s", strings.Join(problems, "; "))
	}
	for _, r := range []calipso.Resource{toStop, toRemove} {
		if got, _ := e.db.Resource(ctx, r.ID); got.State != calipso.Stopped {
			t.Errorf("%s = %s, want stopped (the reconciler finished its stop)", r.EngineName, got.State)
		}
	}
}
