package launch_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// BenchmarkOrphanRemoval: N orphan containers of this installation (a crash's
// leftovers; CALIPSO_BENCH_ORPHANS, default 1000) removed by one reconcile pass,
// against the same number removed one by one through the engine, in the same run.
// Reports reconcile-s, sequential-s and their ratio (lower is better; the target is
// 1,000 orphans in ≤ 10 s).
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
	var reconcile, sequential time.Duration
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
		for _, wl := range list {
			if err := e.engine.Remove(ctx, wl.Name); err != nil {
				b.Fatal(err)
			}
		}
		sequential += time.Since(t0)
		b.StartTimer()
	}
	b.ReportMetric(reconcile.Seconds()/float64(b.N), "reconcile-s")
	b.ReportMetric(sequential.Seconds()/float64(b.N), "sequential-s")
	b.ReportMetric(float64(reconcile)/float64(sequential), "ratio")
}
