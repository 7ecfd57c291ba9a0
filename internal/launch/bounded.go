package launch

import (
	"context"
	"time"

	"github.com/calipsoplus/calipso/guacamole"
	"github.com/calipsoplus/calipso/provisioner"
)

// bound gives ctx a deadline of d from now unless it has an earlier one. A context
// whose caller has gone (a rollback's, made WithoutCancel) gets one again: no engine,
// Guacamole or database call waits on a frozen peer for ever.
func bound(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// callContext bounds one database write of the lifecycle by workloads.call_timeout,
// whatever ctx's caller did.
func (s *Service) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return bound(ctx, s.cfg.Workloads.CallTimeout.Duration)
}

// boundedEngine bounds every call of an engine by timeout, but Start, which the
// launch bounds by workloads.launch_timeout (its context's deadline).
type boundedEngine struct {
	provisioner.Provisioner
	timeout time.Duration
}

func (b boundedEngine) Stop(ctx context.Context, name string) error {
	ctx, cancel := bound(ctx, b.timeout)
	defer cancel()
	return b.Provisioner.Stop(ctx, name)
}

func (b boundedEngine) Remove(ctx context.Context, name string) error {
	ctx, cancel := bound(ctx, b.timeout)
	defer cancel()
	return b.Provisioner.Remove(ctx, name)
}

func (b boundedEngine) Inspect(ctx context.Context, name string) (provisioner.Workload, error) {
	ctx, cancel := bound(ctx, b.timeout)
	defer cancel()
	return b.Provisioner.Inspect(ctx, name)
}

func (b boundedEngine) List(ctx context.Context) ([]provisioner.Workload, error) {
	ctx, cancel := bound(ctx, b.timeout)
	defer cancel()
	return b.Provisioner.List(ctx)
}

func (b boundedEngine) Ping(ctx context.Context) error {
	ctx, cancel := bound(ctx, b.timeout)
	defer cancel()
	return b.Provisioner.Ping(ctx)
}

// boundedDesktops bounds every Guacamole call by timeout.
type boundedDesktops struct {
	Desktops
	timeout time.Duration
}

func (b boundedDesktops) Create(ctx context.Context, c guacamole.Connection) error {
	ctx, cancel := bound(ctx, b.timeout)
	defer cancel()
	return b.Desktops.Create(ctx, c)
}

func (b boundedDesktops) Delete(ctx context.Context, name string) error {
	ctx, cancel := bound(ctx, b.timeout)
	defer cancel()
	return b.Desktops.Delete(ctx, name)
}

func (b boundedDesktops) List(ctx context.Context) ([]string, error) {
	ctx, cancel := bound(ctx, b.timeout)
	defer cancel()
	return b.Desktops.List(ctx)
}
