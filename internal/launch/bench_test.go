package launch_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/testenv"
	"github.com/calipsoplus/calipso/provisioner"
)

// directStart starts the baseline container a launch is compared with.
func (e *env) directStart(ctx context.Context, name string) error {
	spec := provisioner.Spec{Instance: e.instance, ResourceID: 1, Owner: "ana", Experiment: "bench~1"}
	labels := spec.Labels()
	labels[provisioner.LabelResource] = name
	return testenv.StartDirect(ctx, e.cli, e.workload, name, labels)
}

func (e *env) directRemove(ctx context.Context, name string) { testenv.RemoveDirect(ctx, e.cli, name) }

// BenchmarkLaunchOverhead: one desktop launch through launch.Service (MariaDB store,
// Docker, Guacamole record) against the engine's own create+start of the same
// container, alternated in the same run. Reports launch-ms, engine-ms and their ratio.
//
//	go test -run '^$' -bench LaunchOverhead -benchtime 20x ./internal/launch/
func BenchmarkLaunchOverhead(b *testing.B) {
	e := newEnv(b, envOptions{driver: "mysql"})
	ctx := context.Background()
	sessions := make([]calipso.Session, b.N)
	for i := range sessions {
		sessions[i] = calipso.Session{SessionNumber: fmt.Sprint(i)}
	}
	e.experiment(b, e.user, "bench", nil, nil, sessions...)
	// Warm up both paths (image layers, first connections) outside the measure.
	if err := e.directStart(ctx, "calipso-"+e.instance+"-warm"); err != nil {
		b.Fatal(err)
	}
	e.directRemove(ctx, "calipso-"+e.instance+"-warm")

	var launchTime, engineTime time.Duration
	b.ResetTimer()
	for i := range b.N {
		name := fmt.Sprintf("calipso-%s-direct-%d", e.instance, i)
		t0 := time.Now()
		if err := e.directStart(ctx, name); err != nil {
			b.Fatal(err)
		}
		engineTime += time.Since(t0)

		t0 = time.Now()
		r, err := e.svc.Launch(ctx, e.user, fmt.Sprintf("bench~%d", i), desktopImage)
		if err != nil {
			b.Fatal(err)
		}
		launchTime += time.Since(t0)

		b.StopTimer()
		e.directRemove(ctx, name)
		if _, err := e.svc.Remove(ctx, r); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(launchTime.Milliseconds())/float64(b.N), "launch-ms")
	b.ReportMetric(float64(engineTime.Milliseconds())/float64(b.N), "engine-ms")
	b.ReportMetric(float64(launchTime)/float64(engineTime), "ratio")
}

// BenchmarkHundredUsersAtOnce: 100 users each launch a desktop at the same moment,
// against the engine creating and starting the same 100 containers at once. Reports
// both wall times and their ratio.
//
//	go test -run '^$' -bench HundredUsers -benchtime 1x ./internal/launch/
func BenchmarkHundredUsersAtOnce(b *testing.B) {
	const users = 100
	e := newEnv(b, envOptions{driver: "mysql"})
	ctx := context.Background()
	accounts := make([]calipso.User, users)
	refs := make([]string, users)
	for i := range accounts {
		accounts[i] = e.newUser(b, fmt.Sprintf("user%d", i))
		refs[i] = e.experiment(b, accounts[i], fmt.Sprintf("crowd%d", i), nil, nil)
	}
	var launchWall, engineWall time.Duration
	b.ResetTimer()
	for range b.N {
		names := make([]string, users)
		for i := range names {
			names[i] = fmt.Sprintf("calipso-%s-direct-%d", e.instance, i)
		}
		engineWall += parallel(b, users, func(i int) error { return e.directStart(ctx, names[i]) })
		b.StopTimer()
		for _, n := range names {
			e.directRemove(ctx, n)
		}
		b.StartTimer()

		made := make([]calipso.Resource, users)
		launchWall += parallel(b, users, func(i int) error {
			var err error
			made[i], err = e.svc.Launch(ctx, accounts[i], refs[i], desktopImage)
			return err
		})
		b.StopTimer()
		parallel(b, users, func(i int) error { _, err := e.svc.Remove(ctx, made[i]); return err })
		b.StartTimer()
	}
	b.ReportMetric(launchWall.Seconds()/float64(b.N), "launch-wall-s")
	b.ReportMetric(engineWall.Seconds()/float64(b.N), "engine-wall-s")
	b.ReportMetric(float64(launchWall)/float64(engineWall), "ratio")
}

// parallel runs f(0..n-1) at once and returns the wall time; any error fails b.
func parallel(b *testing.B, n int, f func(i int) error) time.Duration {
	b.Helper()
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, n)
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = f(i)
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	d := time.Since(t0)
	for i, err := range errs {
		if err != nil {
			b.Fatalf("%d: %v", i, err)
		}
	}
	return d
}
