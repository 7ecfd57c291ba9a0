// Package provisioner defines what Calipso asks of a workload engine: start, stop,
// remove, inspect and list the workloads it made. Engines (Docker, Kubernetes, static
// links) implement Provisioner in the sub-packages; quotas, Guacamole records and the
// resource lifecycle stay out of them, in the launch service that calls them.
//
// Every engine object is named from the resource record id (Name) and labelled with
// the installation, owner and record (Labels), so that an interrupted launch can be
// found again and cleaned up by the reconciler.
package provisioner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/calipsoplus/calipso"
)

// Errors an engine reports; callers check them with errors.Is.
var (
	// ErrNotFound: the engine has no workload of that name.
	ErrNotFound = calipso.NewError(calipso.ENOTFOUND, "workload not found")
	// ErrUnavailable: the engine cannot be reached or refused to work (retry later).
	ErrUnavailable = calipso.NewError(calipso.EUNAVAILABLE, "engine unavailable")
	// ErrInvalid: the spec cannot be run (bad image reference, impossible limits...).
	ErrInvalid = calipso.NewError(calipso.EUNLAUNCHABLE, "invalid workload")
	// ErrNotReady: the workload started but did not become ready in time
	// (for example no Jupyter token in its log).
	ErrNotReady = calipso.NewError(calipso.ETIMEOUT, "workload not ready")
)

// Well-known container ports, chosen by protocol.
const (
	PortRDP  = 3389
	PortVNC  = 5901
	PortHTTP = 8888
)

// PortFor returns the container port a workload of this protocol listens on.
func PortFor(protocol string) int {
	switch protocol {
	case "rdp":
		return PortRDP
	case "vnc":
		return PortVNC
	default:
		return PortHTTP
	}
}

// LinkURL is the browser's link to an HTTP workload (a notebook) at host:port, with
// the token its log printed when there is one; "" for desktop protocols, which
// Guacamole reaches instead.
func LinkURL(protocol, host string, port int, token string) string {
	if PortFor(protocol) != PortHTTP || host == "" || port <= 0 {
		return ""
	}
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: "/"}
	if token != "" {
		u.RawQuery = url.Values{"token": {token}}.Encode()
	}
	return u.String()
}

// Label keys put on every engine object.
const (
	LabelManagedBy  = "calipso.managed-by" // always "calipso"
	LabelInstance   = "calipso.instance"   // the installation (settings "instance")
	LabelOwner      = "calipso.owner"      // username
	LabelResource   = "calipso.resource"   // resource record id
	LabelExperiment = "calipso.experiment" // proposal~session
)

// Name is the engine object name of resource record id within an installation.
// It is a valid DNS label (Kubernetes) and container name (Docker).
func Name(instance string, id int64) string {
	return "calipso-" + instance + "-" + strconv.FormatInt(id, 10)
}

// Mount is one bind of a host (or volume) path into the workload.
type Mount struct {
	Source   string // absolute host path
	Target   string // absolute path in the workload
	ReadOnly bool
}

func (m Mount) String() string {
	mode := "rw"
	if m.ReadOnly {
		mode = "ro"
	}
	return fmt.Sprintf("%s:%s:%s", m.Source, m.Target, mode)
}

// Spec is one workload to start: everything an engine needs and nothing more.
type Spec struct {
	Instance   string // installation label value
	ResourceID int64  // record id; Name(Instance, ResourceID) names the workload
	Owner      string // username, for labels
	Experiment string // proposal~session, for labels

	Image    string // image reference (Docker, Kubernetes) or URL (static link)
	Protocol string // vnc, rdp, http...

	CPUs        float64 // 0: no limit
	MemoryBytes int64   // 0: no limit
	DiskBytes   int64   // 0: no limit (engines that can't enforce it ignore it)
	// PidsLimit bounds the processes and threads the workload may have at once, so
	// that a fork bomb stays inside it; 0: no limit (engines that can't enforce it
	// ignore it: Capabilities.PidsLimit).
	PidsLimit int64

	UID, GID    int   // identity the process runs as
	AllowRoot   bool  // uid 0, gid 0 and group 0 among ExtraGroups are refused unless set
	ExtraGroups []int // supplementary groups

	WorkDir string            // working directory inside the workload
	Mounts  []Mount           // datasets (ro), results (rw), home, extra mounts
	Env     map[string]string // e.g. VNC_PASSWORD_FILE; never a secret (see Secrets)
	// Secrets are handed to the workload as files, SecretPath(name) holding the value,
	// not in Env: the environment is shown to whoever may inspect workloads (docker
	// inspect, reading the pod) and is inherited by every process the user starts.
	// Names are SecretName's; engines say how they keep the files in
	// Capabilities.SecretFiles.
	Secrets map[string]string

	// LogRegex, when set, is followed in the workload's log after start until it
	// matches (Jupyter prints its token this way); the first submatch, or the whole
	// match, is returned as Workload.LogMatch.
	LogRegex string
}

// Name is the workload's engine name.
func (s Spec) Name() string { return Name(s.Instance, s.ResourceID) }

// SecretsDir is the directory a workload finds its Spec.Secrets in, one file each. A
// mount may not hide it.
const SecretsDir = "/run/calipso"

// SecretPath is the file a workload reads the secret name from.
func SecretPath(name string) string { return SecretsDir + "/" + name }

// SecretName is what a secret's name may be: a file name, and a key of a Kubernetes
// Secret.
var SecretName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// maxSecretBytes bounds the secrets of one workload (a Kubernetes Secret holds 1 MiB).
const maxSecretBytes = 64 << 10

// Labels is the label set every object of this workload carries. Values are free
// text (usernames hold "@", experiments "~"): an engine whose label values are
// restricted must map them, and keep the exact value elsewhere (the Kubernetes
// provisioner puts it in annotations). Name() is always DNS-safe: settings restrict
// the instance to lowercase letters, digits and dashes.
func (s Spec) Labels() map[string]string {
	return map[string]string{
		LabelManagedBy:  "calipso",
		LabelInstance:   s.Instance,
		LabelOwner:      s.Owner,
		LabelResource:   strconv.FormatInt(s.ResourceID, 10),
		LabelExperiment: s.Experiment,
	}
}

// Validate reports what makes the spec unsafe or impossible to run.
func (s Spec) Validate() error {
	var errs []error
	if s.Instance == "" || s.ResourceID <= 0 {
		errs = append(errs, errors.New("instance and resource id are required"))
	}
	if s.Image == "" {
		errs = append(errs, errors.New("image is required"))
	}
	if !s.AllowRoot {
		// Group 0 is as much root's as uid 0: it opens root-group files of the image and
		// of every mount.
		if s.UID == 0 {
			errs = append(errs, errors.New("refusing to run as root (uid 0): set workloads.allow_root to allow it"))
		}
		if s.GID == 0 {
			errs = append(errs, errors.New("refusing to run as root's group (gid 0): set workloads.allow_root to allow it"))
		}
		if slices.Contains(s.ExtraGroups, 0) {
			errs = append(errs, errors.New("refusing root's group (group 0) as a supplementary group: set workloads.allow_root to allow it"))
		}
	}
	if s.UID < 0 || s.GID < 0 {
		errs = append(errs, errors.New("uid and gid must not be negative"))
	}
	size := 0
	for name, value := range s.Secrets {
		if !SecretName.MatchString(name) {
			errs = append(errs, fmt.Errorf("secret name %q: want lowercase letters, digits, '_', '-' or '.'", name))
		}
		size += len(value)
	}
	if size > maxSecretBytes {
		errs = append(errs, fmt.Errorf("secrets of %d bytes: at most %d", size, maxSecretBytes))
	}
	for _, m := range s.Mounts {
		if t := path.Clean(m.Target); t == SecretsDir || strings.HasPrefix(t, SecretsDir+"/") || strings.HasPrefix(SecretsDir, t+"/") || t == "/" {
			errs = append(errs, fmt.Errorf("mount target %q would hide or hold %s, where the workload's secrets are", m.Target, SecretsDir))
		}
	}
	if s.CPUs < 0 || s.MemoryBytes < 0 || s.DiskBytes < 0 || s.PidsLimit < 0 {
		errs = append(errs, errors.New("limits must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// State is what an engine says of a workload.
type State string

const (
	StateCreated State = "created" // exists, not started
	StateRunning State = "running"
	StateStopped State = "stopped" // exited or stopped
	StatePending State = "pending" // scheduled, not yet running (Kubernetes)
	StateError   State = "error"   // failed: see Workload.Reason
)

// Workload is a workload as the engine reports it.
type Workload struct {
	Name       string
	ID         string // engine's own id (container id, pod uid)
	Owner      string
	ResourceID int64
	State      State
	Reason     string // why, when State is StateError (crash loop, image not found...)

	Host     string // address the user's browser or Guacamole reaches it at
	Port     int    // published port of the protocol's container port
	URL      string // full URL when reached as a link (notebook with token, static link)
	LogMatch string // what Spec.LogRegex matched
}

// Capabilities says what an engine enforces of a Spec and what of a workload's life
// it supports, as Nomad's drivers declare theirs: so that a limit the engine only
// accepts is not mistaken for one it enforces. A field is true only when the engine
// itself applies that part of the Spec; when false, the Spec field is accepted and
// ignored (or means nothing, as for static links). provisionertest checks every claim
// it can observe on the real engine.
type Capabilities struct {
	CPULimit    bool // Spec.CPUs is a ceiling on the workload's CPU time
	MemoryLimit bool // Spec.MemoryBytes is a ceiling: past it the workload is killed
	DiskLimit   bool // Spec.DiskBytes bounds the workload's own writable storage (not its mounts)
	PidsLimit   bool // Spec.PidsLimit bounds the workload's processes and threads (a fork bomb fails inside it)

	RunAsUser      bool // the process runs as Spec.UID:Spec.GID with Spec.ExtraGroups
	ReadOnlyMounts bool // Spec.Mounts are bound, and the ReadOnly ones cannot be written
	// SecretFiles: Spec.Secrets are files at SecretPath in the workload, readable by
	// its uid, and neither in its environment nor in what the engine's API shows of
	// the workload (they may be in an object of their own, as a Kubernetes Secret).
	SecretFiles bool

	Restart bool // Start of a stopped workload runs it again, under the same name
	Logs    bool // the engine keeps the workload's log, so Spec.LogRegex is waited for
}

// Provisioner is one engine, driven by Calipso's launch service and its reconciler.
//
// Call order: Ping and Capabilities may come at any time. A workload's life is Start,
// any number of Inspect, then Stop and/or Remove; Start after Stop runs it again where
// Capabilities.Restart says so. After a failed Start the caller Removes spec.Name()
// (the returned Workload may be empty), and that must take away whatever the failure
// left. The reconciler calls List, Inspect and Remove at any time, for names no record
// accounts for.
//
// Idempotency: every method is idempotent. Start of a name that exists adopts it, and
// Stop and Remove of a name that does not exist succeed, so an interrupted call can
// simply be repeated. An engine only touches what its own installation made (by
// label): an object of the same name made by anyone else is never stopped nor
// deleted, and Inspect does not report it.
//
// Concurrency: an engine is safe for concurrent use by many goroutines on different
// workloads. The caller never runs two calls on one name at once (the resource
// record's state orders them), so engines need not order those themselves.
//
// provisionertest.Run checks this contract against each engine.
type Provisioner interface {
	// Capabilities reports what the engine enforces of a Spec and whether it can
	// restart and keeps logs. It does no I/O, cannot fail, and returns the same value
	// for the engine's whole life: call it once and keep it.
	Capabilities() Capabilities
	// Start creates and starts the workload and waits until it is reachable (and its
	// LogRegex matched, if any); an engine configured not to wait returns as soon as
	// the workload exists (Kubernetes with no ReadyTimeout: StatePending). The first
	// call of a workload's life. Idempotent: Start of a name this installation made
	// already (an interrupted launch, a second Start) adopts it and returns the same
	// workload, never a duplicate; Start of a stopped one starts it again. An engine
	// of an installation refuses a spec of another one (ErrInvalid). On ErrNotReady
	// the workload exists and the
	// returned Workload names it, for the caller's Remove.
	Start(ctx context.Context, spec Spec) (Workload, error)
	// Stop stops the workload, keeping it for inspection until Remove. After Start;
	// Stop of a missing or stopped workload succeeds.
	Stop(ctx context.Context, name string) error
	// Remove deletes the workload and everything made for it, running or not (no Stop
	// needed first). The last call of a workload's life and the cleanup after a failed
	// Start; Remove of a missing workload succeeds, so it can be repeated until it does.
	Remove(ctx context.Context, name string) error
	// Inspect reports one workload; ErrNotFound when there is none. Read-only, at any
	// time. The URL carries no notebook token (engines do not keep it: Start returned
	// it). Static links keep no state: their Inspect never says ErrNotFound.
	Inspect(ctx context.Context, name string) (Workload, error)
	// List reports every workload of this installation (by label), in any state, for
	// reconciliation; each is named and carries its owner and resource id. Read-only,
	// at any time. Engines that keep nothing (static links) list nothing.
	List(ctx context.Context) ([]Workload, error)
	// Ping says whether the engine answers (ErrUnavailable when it does not). Read-only,
	// at any time: at startup and for health checks.
	Ping(ctx context.Context) error
}

// Watcher is an engine that tells of changes to its workloads as they happen
// (Docker's events API), so that the reconciler acts on a workload that died or
// appeared without waiting for its next pass.
type Watcher interface {
	// Watch calls changed for each workload of this installation that is created,
	// started, dies or is destroyed, until ctx ends or the stream breaks: its error,
	// ErrUnavailable when the engine cannot be reached. Read-only; changed is called
	// from one goroutine and must not block.
	Watch(ctx context.Context, changed func(Change)) error
}

// Change is what an engine event says of one workload.
type Change struct {
	Name string
	// Ended: the workload died, was killed for memory or was destroyed; otherwise it
	// was created or started.
	Ended bool
}

// Stage is a step of Start that an engine reports to the progress function of its
// context (WithProgress), for users waiting on a launch.
type Stage string

const (
	StageCreating     Stage = "creating"      // the workload's objects are being made
	StageStarting     Stage = "starting"      // made; being started and waited for
	StageWaitingToken Stage = "waiting_token" // running; its log is followed for Spec.LogRegex
)

type progressKey struct{}

// WithProgress returns ctx carrying f, which Start calls at each Stage it reaches, in
// order and synchronously. A context carries it as net/http/httptrace carries its
// hooks: the calls are observations, not part of the spec.
func WithProgress(ctx context.Context, f func(Stage)) context.Context {
	return context.WithValue(ctx, progressKey{}, f)
}

// Progress reports stage to ctx's progress function, if any (engines call it).
func Progress(ctx context.Context, stage Stage) {
	if f, ok := ctx.Value(progressKey{}).(func(Stage)); ok && f != nil {
		f(stage)
	}
}
