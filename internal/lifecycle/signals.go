package lifecycle

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/calipsoplus/calipso"
)

// Connections is what the Guacamole signal needs of guacamole.Store.
type Connections interface {
	Activity(ctx context.Context, name string) (open bool, lastEnd time.Time, err error)
}

// GuacamoleSignal reads a desktop's use from Guacamole's own connection history: an
// open connection is activity now; otherwise the last disconnect is its last
// activity. Resources without a Guacamole connection (notebooks, links) have none.
type GuacamoleSignal struct{ History Connections }

func (GuacamoleSignal) Name() string { return "guacamole" }

func (g GuacamoleSignal) Activity(ctx context.Context, r calipso.Resource, _ time.Time) (bool, time.Time, error) {
	if r.GuacamoleUsername == "" {
		return false, time.Time{}, nil
	}
	return g.History.Activity(ctx, r.EngineName)
}

// NotebookSignal reads a notebook server's own account of its use: Jupyter's
// /api/status, read with the token the workload's link carries; its last_activity
// moves with every kernel message and page, not with status polls. Resources that
// are not notebooks (no token in their link) have none.
type NotebookSignal struct{ Client *http.Client }

func (NotebookSignal) Name() string { return "notebook" }

// maxStatusBytes bounds a status answer.
const maxStatusBytes = 64 << 10

func (n NotebookSignal) Activity(ctx context.Context, r calipso.Resource, _ time.Time) (bool, time.Time, error) {
	u, err := url.Parse(r.HostPort)
	if err != nil || r.ResourceType == calipso.StaticLink || (u.Scheme != "http" && u.Scheme != "https") || u.Query().Get("token") == "" {
		return false, time.Time{}, nil
	}
	token := u.Query().Get("token")
	status := url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/api/status"}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, status.String(), nil)
	if err != nil {
		return false, time.Time{}, err
	}
	req.Header.Set("Authorization", "token "+token) // not in the URL: it would be logged
	client := n.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, time.Time{}, fmt.Errorf("notebook status: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, time.Time{}, fmt.Errorf("notebook status: %s", resp.Status)
	}
	var st struct {
		LastActivity time.Time `json:"last_activity"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxStatusBytes)).Decode(&st); err != nil {
		return false, time.Time{}, fmt.Errorf("notebook status: %w", err)
	}
	return false, st.LastActivity.UTC(), nil
}

// CPUTimes is what the CPU signal needs of an engine: a workload's CPU time so far
// (the Docker provisioner's CPUTime).
type CPUTimes interface {
	CPUTime(ctx context.Context, name string) (time.Duration, error)
}

// CPUSignal reads a workload's CPU use between two passes: at least Threshold cores
// on average is activity now, and a workload last busy at some pass was active then.
// The first reading of a workload has nothing to compare with, and counts as
// activity: a pass after a new leader took over never culls on half a picture.
type CPUSignal struct {
	Engines   map[calipso.ResourceType]CPUTimes
	Threshold float64 // cores

	mu      sync.Mutex
	samples map[int64]cpuSample
}

type cpuSample struct {
	cpu      time.Duration
	at, busy time.Time // busy: the last reading that found it busy (zero: none)
}

func (*CPUSignal) Name() string { return "cpu" }

func (c *CPUSignal) Activity(ctx context.Context, r calipso.Resource, now time.Time) (bool, time.Time, error) {
	engine, ok := c.Engines[r.ResourceType]
	if !ok {
		// An engine that cannot tell (Kubernetes without a metrics API; static links
		// run nothing): busy work is never culled on a signal that cannot be read.
		return true, time.Time{}, nil
	}
	cpu, err := engine.CPUTime(ctx, r.EngineName)
	if err != nil {
		return false, time.Time{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.samples == nil {
		c.samples = map[int64]cpuSample{}
	}
	for id, s := range c.samples { // forget what ended long ago
		if now.Sub(s.at) > 24*time.Hour {
			delete(c.samples, id)
		}
	}
	prev, seen := c.samples[r.ID]
	s := cpuSample{cpu: cpu, at: now, busy: prev.busy}
	if !seen || !now.After(prev.at) || cpu < prev.cpu {
		c.samples[r.ID] = s
		return true, time.Time{}, nil
	}
	cores := float64(cpu-prev.cpu) / float64(now.Sub(prev.at))
	active := cores >= c.Threshold
	if active {
		s.busy = now
	}
	c.samples[r.ID] = s
	return active, s.busy, nil
}
