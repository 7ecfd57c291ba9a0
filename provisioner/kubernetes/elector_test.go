package kubernetes

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// partition is a transport that fails every request while cut, as a replica cut off
// from the API server sees it.
type partition struct {
	cut  atomic.Bool
	next http.RoundTripper
}

func (p *partition) RoundTrip(r *http.Request) (*http.Response, error) {
	if p.cut.Load() {
		return nil, errors.New("partitioned")
	}
	return p.next.RoundTrip(r)
}

// leadership counts who leads, for a test: the leaders now, the most ever at once.
type leadership struct {
	mu      sync.Mutex
	now     map[string]bool
	most    int
	changed chan struct{}
}

func (l *leadership) lead(id string) func(context.Context) {
	return func(ctx context.Context) {
		l.mu.Lock()
		l.now[id] = true
		l.most = max(l.most, len(l.now))
		l.mu.Unlock()
		l.changed <- struct{}{}
		<-ctx.Done()
		l.mu.Lock()
		delete(l.now, id)
		l.mu.Unlock()
		l.changed <- struct{}{}
	}
}

// leader waits until exactly one replica leads, and not one of those excluded, and
// says which.
func (l *leadership) leader(t *testing.T, within time.Duration, excluded ...string) string {
	t.Helper()
	deadline := time.After(within)
	for {
		l.mu.Lock()
		if len(l.now) == 1 {
			for id := range l.now {
				if !slices.Contains(excluded, id) {
					l.mu.Unlock()
					return id
				}
			}
		}
		l.mu.Unlock()
		select {
		case <-l.changed:
		case <-deadline:
			t.Fatalf("no single leader other than %v within %s (leading: %v)", excluded, within, l.now)
		}
	}
}

// TestLeaseElector: three replicas campaign on one Lease. One leads at a time; a
// leader that shuts down hands over at once; a leader cut off from the API server
// steps down before another takes over, within the lease's ttl.
func TestLeaseElector(t *testing.T) {
	ns := newNamespace(t, nil)
	const ttl = 2 * time.Second
	l := &leadership{now: map[string]bool{}, changed: make(chan struct{}, 100)}
	cancels := map[string]context.CancelFunc{}
	parts := map[string]*partition{}
	var wg sync.WaitGroup
	for _, id := range []string{"a", "b", "c"} {
		part := &partition{}
		rc := rest.CopyConfig(kubeConfig)
		rc.Wrap(func(rt http.RoundTripper) http.RoundTripper { part.next = rt; return part })
		p := provisionerIn(t, ns, rc, nil)
		e, err := p.Elector("calipso-leader", id, ttl)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancels[id], parts[id] = cancel, part
		wg.Add(1)
		go func() { defer wg.Done(); e.Campaign(ctx, l.lead(id)) }()
	}
	t.Cleanup(func() {
		for _, c := range cancels {
			c()
		}
		wg.Wait()
	})

	first := l.leader(t, 10*time.Second)
	cancels[first]() // a clean shutdown releases the lease
	t0 := time.Now()
	second := l.leader(t, ttl, first)
	t.Logf("handover after a shutdown: %s", time.Since(t0).Round(10*time.Millisecond))

	parts[second].cut.Store(true) // cut off: it can neither renew nor release
	t0 = time.Now()
	third := l.leader(t, 3*ttl, first, second)
	t.Logf("%s leads %s after %s was cut off", third, time.Since(t0).Round(10*time.Millisecond), second)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.most != 1 {
		t.Errorf("%d replicas led at once, want 1", l.most)
	}
	if l.now[second] {
		t.Errorf("%s, cut off, still leads", second)
	}
}

func TestElectorChecksItsSettings(t *testing.T) {
	p := &Provisioner{cfg: Config{Namespace: "calipso"}}
	for _, tt := range []struct {
		name, lease, id string
		ttl             time.Duration
	}{
		{"bad name", "Calipso_Leader", "a", 5 * time.Second},
		{"no identity", "calipso-leader", "", 5 * time.Second},
		{"short ttl", "calipso-leader", "a", 100 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := p.Elector(tt.lease, tt.id, tt.ttl); err == nil {
				t.Errorf("Elector(%q, %q, %s) accepted", tt.lease, tt.id, tt.ttl)
			}
		})
	}
}
