package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"golang.org/x/sync/errgroup"

	"github.com/calipsoplus/calipso/internal/apiclient"
	"github.com/calipsoplus/calipso/internal/testenv"
)

// BenchmarkLaunchThroughAPI: a desktop launch through the whole server, as the
// frontend makes it (the real binary; GET resource/run with a session cookie; SQLite
// store, Docker, Guacamole records on MariaDB), against the engine's own create+start
// of the same image with the same limits, alternated in the same run. Reports api-ms,
// engine-ms and their ratio, the orchestration overhead per launch.
//
//	go test -run '^$' -bench LaunchThroughAPI -benchtime 20x ./cmd/calipso/
func BenchmarkLaunchThroughAPI(b *testing.B) {
	s := newLiveServer(b, b.N+1)
	s.start()
	c := s.client(crashUser, crashPassword)
	cli := testenv.DockerClient(b)
	image := testenv.WorkloadImage(b)
	ctx := context.Background()
	// Not labelled as this installation's: the server's reconciler must leave the
	// baseline containers alone.
	labels := map[string]string{"calipso.benchmark": "baseline"}

	launch := func(session int) apiclient.Container {
		b.Helper()
		status, body, err := c.Call(ctx, http.MethodGet, apiclient.LaunchPath(crashUser, fmt.Sprintf("%s~s%d", crashProposal, session), crashImage), nil)
		var rec apiclient.Container
		if err != nil || status != http.StatusCreated || json.Unmarshal(body, &rec) != nil {
			b.Fatalf("launch: %d %s %v", status, body, err)
		}
		return rec
	}
	remove := func(rec apiclient.Container) {
		b.Helper()
		if status, err := c.Remove(ctx, crashUser, rec); err != nil || status != http.StatusOK {
			b.Fatalf("remove: %d %v", status, err)
		}
	}
	// Warm both paths (first connections, the image's layers) outside the measure.
	warm := "calipso-benchmark-" + s.instance + "-warm"
	if err := testenv.StartDirect(ctx, cli, image, warm, labels); err != nil {
		b.Fatal(err)
	}
	testenv.RemoveDirect(ctx, cli, warm)
	remove(launch(b.N + 1))

	var api, engine time.Duration
	b.ResetTimer()
	for i := range b.N {
		name := fmt.Sprintf("calipso-benchmark-%s-%d", s.instance, i)
		t0 := time.Now()
		if err := testenv.StartDirect(ctx, cli, image, name, labels); err != nil {
			b.Fatal(err)
		}
		engine += time.Since(t0)

		t0 = time.Now()
		rec := launch(i + 1)
		api += time.Since(t0)

		b.StopTimer()
		testenv.RemoveDirect(ctx, cli, name)
		remove(rec)
		b.StartTimer()
	}
	b.ReportMetric(float64(api.Microseconds())/1e3/float64(b.N), "api-ms")
	b.ReportMetric(float64(engine.Microseconds())/1e3/float64(b.N), "engine-ms")
	b.ReportMetric(float64(api)/float64(engine), "ratio")
}

// BenchmarkConcurrentLaunches: 200 desktops launched at once through the API (40
// users with 5 sessions each, the default quota; MariaDB as the application
// database), against 200 create+start of the same image with the same limits at once
// straight through the engine's Go client, alternated in the same run. A third burst
// adds to the engine's create+start the one engine call a desktop launch makes
// beyond them: the VNC password copied into the container as a file. Reports the
// mean wall time of each burst, the ratio to create+start (the target is ≤ 1.05) and
// the ratio to create+copy+start. One round takes about two minutes here; the order
// of the bursts rotates each round.
//
//	go test -run '^$' -bench ConcurrentLaunches -benchtime 3x -timeout 30m ./cmd/calipso/
func BenchmarkConcurrentLaunches(b *testing.B) {
	const users, sessions = 40, 5
	s := newServer(b, serverSpec{sessions: sessions, extraUsers: burstUsers(users)[1:], mysqlDSN: testenv.MySQLDSN(b)})
	s.start()
	clients := map[string]*apiclient.Client{}
	for _, u := range burstUsers(users) {
		clients[u] = loginVia(b, nil, s.base, u)
	}
	cli := testenv.DockerClient(b)
	image := testenv.WorkloadImage(b)
	ctx := context.Background()
	labels := map[string]string{"calipso.benchmark": "baseline"} // not this installation's

	// all runs f for every user and session, limit at once (0: all at once), and fails
	// on the first error.
	all := func(limit int, f func(user string, c *apiclient.Client, session int) error) {
		b.Helper()
		var g errgroup.Group
		if limit > 0 {
			g.SetLimit(limit)
		}
		for u, c := range clients {
			for i := 1; i <= sessions; i++ {
				g.Go(func() error { return f(u, c, i) })
			}
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
	}
	// Cleanups are not measured, and go 16 at once: 200 stops at once take the engine
	// longer than workloads.call_timeout here.
	const cleanupLimit = 16
	directName := func(user string, session int) string {
		return fmt.Sprintf("calipso-benchmark-%s-%s-%d", s.instance, user, session)
	}
	direct := func(start func(context.Context, *client.Client, string, string, map[string]string) error) func() time.Duration {
		return func() time.Duration {
			t0 := time.Now()
			all(0, func(user string, _ *apiclient.Client, session int) error {
				return start(ctx, cli, image, directName(user, session), labels)
			})
			d := time.Since(t0)
			b.StopTimer()
			all(cleanupLimit, func(user string, _ *apiclient.Client, session int) error {
				testenv.RemoveDirect(ctx, cli, directName(user, session))
				return nil
			})
			b.StartTimer()
			return d
		}
	}
	var mu sync.Mutex
	launched := map[string][]apiclient.Container{}
	throughAPI := func() time.Duration {
		t0 := time.Now()
		all(0, func(user string, c *apiclient.Client, session int) error {
			status, body, err := c.Call(ctx, http.MethodGet, apiclient.LaunchPath(user, fmt.Sprintf("%s~s%d", crashProposal, session), crashImage), nil)
			var rec apiclient.Container
			if err != nil || status != http.StatusCreated || json.Unmarshal(body, &rec) != nil {
				return fmt.Errorf("launch %s s%d: %d %s %v", user, session, status, body, err)
			}
			mu.Lock()
			launched[user] = append(launched[user], rec)
			mu.Unlock()
			return nil
		})
		d := time.Since(t0)
		b.StopTimer()
		all(cleanupLimit, func(user string, c *apiclient.Client, session int) error {
			rec := launched[user][session-1]
			if status, err := c.Remove(ctx, user, rec); err != nil || status != http.StatusOK {
				return fmt.Errorf("remove %s: %d %v", rec.Name, status, err)
			}
			return nil
		})
		clear(launched)
		b.StartTimer()
		return d
	}

	bursts := []struct {
		run   func() time.Duration
		total time.Duration
	}{{run: direct(testenv.StartDirect)}, {run: throughAPI}, {run: direct(testenv.StartDirectWithSecret)}}
	b.ResetTimer()
	for i := range b.N {
		// The engine is slower right after a burst of removals and varies from one
		// minute to the next here: each burst goes first in turn.
		for j := range bursts {
			k := (i + j) % len(bursts)
			bursts[k].total += bursts[k].run()
		}
	}
	engine, api, engineSecret := bursts[0].total, bursts[1].total, bursts[2].total
	b.ReportMetric(api.Seconds()/float64(b.N), "api-s")
	b.ReportMetric(engine.Seconds()/float64(b.N), "engine-s")
	b.ReportMetric(engineSecret.Seconds()/float64(b.N), "engine+secret-s")
	b.ReportMetric(float64(api)/float64(engine), "ratio")
	b.ReportMetric(float64(api)/float64(engineSecret), "ratio-to-engine+secret")
}
