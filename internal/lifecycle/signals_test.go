package lifecycle_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/demo"
	"github.com/calipsoplus/calipso/internal/lifecycle"
)

// TestNotebookSignal reads the demo notebook's /api/status (Jupyter's shape): its
// last_activity moves with a page view, not with the status polls themselves.
func TestNotebookSignal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	const token = "0123456789abcdef0123456789abcdef0123456789abcdef"
	go demo.Notebook(ctx, ln, token, io.Discard)
	base := "http://" + ln.Addr().String()
	r := calipso.Resource{ID: 1, ResourceType: calipso.Docker, Protocol: "http", HostPort: base + "/?token=" + token}
	sig := lifecycle.NotebookSignal{Client: &http.Client{Timeout: 5 * time.Second}}
	read := func() time.Time {
		t.Helper()
		var last time.Time
		var err error
		for range 50 { // the server may not be up yet
			if _, last, err = sig.Activity(ctx, r, time.Now()); err == nil {
				return last
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatal(err)
		return time.Time{}
	}
	first := read()
	if first.IsZero() {
		t.Fatal("no last_activity")
	}
	if again := read(); !again.Equal(first) {
		t.Errorf("a status poll moved last_activity: %v then %v", first, again)
	}
	time.Sleep(2 * time.Millisecond)
	resp, err := http.Get(base + "/?token=" + token)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if after := read(); !after.After(first) {
		t.Errorf("a page view did not move last_activity: %v then %v", first, after)
	}
	wrong := r
	wrong.HostPort = base + "/?token=nope"
	if _, _, err := sig.Activity(ctx, wrong, time.Now()); err == nil {
		t.Error("a wrong token was answered")
	}
	for _, none := range []calipso.Resource{{HostPort: "5901"}, {ResourceType: calipso.StaticLink, HostPort: "https://x.example/?token=a"}} {
		if active, last, err := sig.Activity(ctx, none, time.Now()); active || !last.IsZero() || err != nil {
			t.Errorf("%+v: %v %v %v", none, active, last, err)
		}
	}
}

// cpuTimes is an engine's CPU counter that the test moves.
type cpuTimes map[string]time.Duration

func (c cpuTimes) CPUTime(_ context.Context, name string) (time.Duration, error) { return c[name], nil }

// TestCPUSignal: the first reading counts as activity; then the average use between
// readings against the threshold; a busy reading is remembered as the last activity.
func TestCPUSignal(t *testing.T) {
	times := cpuTimes{"w": 0}
	sig := &lifecycle.CPUSignal{Engines: map[calipso.ResourceType]lifecycle.CPUTimes{calipso.Docker: times}, Threshold: 0.05}
	r := calipso.Resource{ID: 1, ResourceType: calipso.Docker, EngineName: "w"}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	step := func(at time.Time, cpu time.Duration, wantActive bool, wantLast time.Time) {
		t.Helper()
		times["w"] = cpu
		active, last, err := sig.Activity(context.Background(), r, at)
		if err != nil || active != wantActive || !last.Equal(wantLast) {
			t.Fatalf("at %v: %v %v %v, want %v %v", at.Sub(t0), active, last, err, wantActive, wantLast)
		}
	}
	step(t0, 0, true, time.Time{})                                                        // first reading
	step(t0.Add(5*time.Minute), 2*time.Minute, true, t0.Add(5*time.Minute))               // 0.4 cores
	step(t0.Add(10*time.Minute), 2*time.Minute+time.Second, false, t0.Add(5*time.Minute)) // idle since the busy one
	if active, _, _ := sig.Activity(context.Background(), calipso.Resource{ResourceType: calipso.Kubernetes}, t0); !active {
		t.Error("an engine that cannot tell made the workload idle")
	}
}
