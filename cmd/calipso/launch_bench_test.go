package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

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
