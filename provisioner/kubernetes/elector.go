package kubernetes

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaseElector elects one leader among Calipso's replicas through a
// coordination.k8s.io Lease in the provisioner's namespace, with client-go's leader
// election: where Calipso runs on Kubernetes, the cluster's own mechanism rather
// than the application database. Its Campaign method is the launch controller's
// Elector.
type LeaseElector struct {
	cfg leaderelection.LeaderElectionConfig
	log *slog.Logger
}

// Elector returns an elector on the Lease name (made if missing), for identity (one
// per process, unique among the replicas). ttl is how long a leader that stopped
// renewing keeps the lease: another replica takes over within about ttl of a crash,
// at once after a clean shutdown (the lease is released).
func (p *Provisioner) Elector(name, identity string, ttl time.Duration) (*LeaseElector, error) {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return nil, fmt.Errorf("leader lease %q: %s", name, errs[0])
	}
	if identity == "" {
		return nil, fmt.Errorf("leader lease %q: no identity", name)
	}
	if ttl < time.Second {
		return nil, fmt.Errorf("leader lease %q: ttl %s is under 1s", name, ttl)
	}
	// client-go bounds acquiring and renewing, not releasing at shutdown: every call
	// of this client is bounded by ttl, so that a frozen API server cannot hold the
	// shutdown.
	rc := rest.CopyConfig(p.rest)
	rc.Timeout = ttl
	client, err := k8s.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("leader lease %q: %w", name, err)
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: name, Namespace: p.cfg.Namespace},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	return &LeaseElector{log: p.log, cfg: leaderelection.LeaderElectionConfig{
		Lock:          lock,
		LeaseDuration: ttl,
		// A leader that cannot renew for two thirds of the lease steps down, before
		// another can take it: never two leaders at once (clocks agreeing within ttl/3).
		RenewDeadline:   ttl * 2 / 3,
		RetryPeriod:     max(ttl/5, 200*time.Millisecond),
		ReleaseOnCancel: true,
		Name:            name,
	}}, nil
}

// Campaign runs until ctx ends. It calls lead while this process holds the Lease, with
// a context that ends when it loses it, and waits for lead to return before it
// campaigns again, so that this process never leads twice at once.
func (e *LeaseElector) Campaign(ctx context.Context, lead func(context.Context)) {
	for ctx.Err() == nil {
		e.term(ctx, lead)
		select { // the lease was lost: a pause before campaigning again
		case <-ctx.Done():
		case <-time.After(e.cfg.RetryPeriod):
		}
	}
}

// term campaigns once: it returns when ctx ends or the lease is lost, after lead (if
// it was called) has returned.
func (e *LeaseElector) term(ctx context.Context, lead func(context.Context)) {
	// client-go calls OnStartedLeading on a goroutine of its own, which may start
	// only after Run has returned: then it must not lead at all.
	var (
		mu      sync.Mutex
		over    bool
		leading bool
		done    = make(chan struct{})
	)
	cfg := e.cfg
	cfg.Callbacks = leaderelection.LeaderCallbacks{
		OnStartedLeading: func(ctx context.Context) {
			defer close(done)
			mu.Lock()
			leading = !over
			mu.Unlock()
			if leading {
				e.log.InfoContext(ctx, "leading", "lease", cfg.Name)
				lead(ctx)
			}
		},
		OnStoppedLeading: func() {},
	}
	le, err := leaderelection.NewLeaderElector(cfg)
	if err != nil { // Elector checked the configuration: not expected
		e.log.ErrorContext(ctx, "leader election", "lease", cfg.Name, "error", err)
		<-ctx.Done()
		return
	}
	le.Run(ctx)
	mu.Lock()
	over = true
	wait := leading
	mu.Unlock()
	if wait {
		<-done
		e.log.InfoContext(ctx, "no longer leading", "lease", cfg.Name)
	}
}
