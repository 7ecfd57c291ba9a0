package launch_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"golang.org/x/sync/errgroup"
)

// BenchmarkOrphanRemoval: N orphan containers of this installation (a crash's
// leftovers; CALIPSO_BENCH_ORPHANS, default 1000) removed by one reconcile pass,
// against the same number force-removed straight through the engine's Go client, 16
// at once (the reconciler's own concurrency), in the same run: the engine's own
// rate, which no orchestrator can beat. Reports reconcile-s, engine-s and their
// ratio (the target is 1,000 orphans in ≤ 10 s).
//
//	go test -run '^$' -bench OrphanRemoval -benchtime 1x ./internal/launch/
func BenchmarkOrphanRemoval(b *testing.B) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("CALIPSO_BENCH_ORPHANS")); err == nil && v > 0 {
		n = v
	}
	e := newEnv(b, envOptions{driver: "mysql", noGuac: true})
	ctx := context.Background()
	spawn := func(round int) {
		b.Helper()
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for i := range n {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				if err := e.directStart(ctx, fmt.Sprintf("calipso-%s-%d", e.instance, 1_000_000+round*n+i)); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
	}
	var reconcile, direct time.Duration
	for round := range b.N {
		b.StopTimer()
		spawn(2 * round)
		b.StartTimer()
		t0 := time.Now()
		rep := e.svc.Reconcile(ctx)
		reconcile += time.Since(t0)
		if rep.OrphanWorkloads != n || len(rep.Errors) > 0 {
			b.Fatalf("reconcile removed %d of %d orphans, errors %v", rep.OrphanWorkloads, n, rep.Errors)
		}
		b.StopTimer()
		spawn(2*round + 1)
		list, err := e.engine.List(ctx)
		if err != nil {
			b.Fatal(err)
		}
		t0 = time.Now()
		var g errgroup.Group
		g.SetLimit(16)
		for _, wl := range list {
			g.Go(func() error {
				return e.cli.ContainerRemove(ctx, wl.Name, container.RemoveOptions{Force: true, RemoveVolumes: true})
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		direct += time.Since(t0)
		b.StartTimer()
	}
	b.ReportMetric(reconcile.Seconds()/float64(b.N), "reconcile-s")
	b.ReportMetric(direct.Seconds()/float64(b.N), "engine-s")
	b.ReportMetric(float64(reconcile)/float64(direct), "ratio")
}
