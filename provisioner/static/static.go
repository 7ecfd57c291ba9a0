// Package static is the engine of "static link" images: the image is a URL to a
// service that runs elsewhere (a shared JupyterHub, a web application), so there is
// nothing to start, stop or watch. Start hands the link back; the other operations
// succeed without doing anything.
package static

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"

	"github.com/calipsoplus/calipso/provisioner"
)

// Provisioner is the static-link engine. It keeps no state.
type Provisioner struct{}

var _ provisioner.Provisioner = Provisioner{}

// New returns the static-link engine.
func New() Provisioner { return Provisioner{} }

// Start returns the link (spec.Image) as a running workload. Only the fields a link
// needs are checked: uid, limits and mounts mean nothing here.
func (Provisioner) Start(_ context.Context, spec provisioner.Spec) (provisioner.Workload, error) {
	if spec.Instance == "" || spec.ResourceID <= 0 {
		return provisioner.Workload{}, fmt.Errorf("start static link: %w: instance and resource id are required", provisioner.ErrInvalid)
	}
	u, err := url.Parse(spec.Image)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return provisioner.Workload{}, fmt.Errorf("start %s: %w: static link %q is not an http(s) URL", spec.Name(), provisioner.ErrInvalid, spec.Image)
	}
	name := spec.Name()
	sum := sha256.Sum256([]byte(name))
	return provisioner.Workload{
		// A link has no engine id; one derived from the name is stable across retries
		// (the original gave 32 hex characters).
		ID:         hex.EncodeToString(sum[:16]),
		Name:       name,
		Owner:      spec.Owner,
		ResourceID: spec.ResourceID,
		State:      provisioner.StateRunning,
		URL:        u.String(),
	}, nil
}

// Capabilities: none. The linked service runs elsewhere, under its own limits and
// identity; nothing of the spec but the link reaches it, and there is no log.
func (Provisioner) Capabilities() provisioner.Capabilities { return provisioner.Capabilities{} }

// Stop does nothing: the linked service is not ours to stop.
func (Provisioner) Stop(context.Context, string) error { return nil }

// Remove does nothing: there is nothing on an engine.
func (Provisioner) Remove(context.Context, string) error { return nil }

// Inspect reports the workload as running: a link has no state, and the launch
// service's record is the only truth about it (so this never says ErrNotFound, and
// the URL is not known here).
func (Provisioner) Inspect(_ context.Context, name string) (provisioner.Workload, error) {
	return provisioner.Workload{Name: name, State: provisioner.StateRunning}, nil
}

// List reports nothing: links leave nothing behind for the reconciler to find.
func (Provisioner) List(context.Context) ([]provisioner.Workload, error) { return nil, nil }

// Ping always succeeds: there is no engine to reach.
func (Provisioner) Ping(context.Context) error { return nil }
