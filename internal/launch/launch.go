// Package launch is the resource lifecycle: it reserves quota, starts workloads on an
// engine, writes their Guacamole records, and takes all of it down again. Every step
// is recorded in the store before the next one, and every call to an engine,
// Guacamole or the database is bounded by a timeout from the settings.
//
// Ownership is by lease: the process working on a record (a launch, a stop) holds a
// lease on it, renewed by heartbeat (lease.go), and every write it makes is fenced by
// that lease. Another process takes a record over only once its lease has expired, so
// several replicas share one database and a restart never fails a live launch of
// another process. Background work (the reconciler: interrupted launches, unfinished
// stops, vanished and orphan workloads) runs on one replica at a time, the leader
// elected through the database (controller.go).
package launch

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/experiments"
	"github.com/calipsoplus/calipso/guacamole"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/quotas"
	"github.com/calipsoplus/calipso/settings"
)

// ErrUnenforced: the image asks for a share its engine cannot enforce, and the
// settings do not allow that (workloads.allow_unenforced).
var ErrUnenforced = calipso.NewError(calipso.EUNLAUNCHABLE, "share not enforced by the engine")

// ErrRootIdentity: the workload would run as root's user or group (id 0), which the
// settings do not allow (workloads.allow_root).
var ErrRootIdentity = calipso.NewError(calipso.EUNLAUNCHABLE, "root identity refused")

// VNCPasswordSecret is the secret of every workload holding its VNC password: the
// file provisioner.SecretPath(VNCPasswordSecret), which VNC_PASSWORD_FILE names in
// the workload's environment.
const VNCPasswordSecret = "vnc_password"

// ErrImageNotAllowed: the user's roles do not list the image ([access.roles.*]
// images).
var ErrImageNotAllowed = calipso.NewError(calipso.EFORBIDDEN, "image not allowed by the user's roles")

// ErrNoEngine: no engine is configured (or answering) for the image's resource type.
var ErrNoEngine = calipso.NewError(calipso.EUNAVAILABLE, "no engine for this resource type")

// Desktops is what the lifecycle needs of Guacamole (guacamole.Store).
type Desktops interface {
	Create(ctx context.Context, c guacamole.Connection) error
	Delete(ctx context.Context, name string) error
	List(ctx context.Context) ([]string, error)
}

// Service runs the lifecycle.
type Service struct {
	db       *store.Store
	engines  map[calipso.ResourceType]provisioner.Provisioner
	desktops Desktops // nil: Guacamole is not used
	cfg      Config
	log      *slog.Logger
	// engineMissing explains, per kind, why there is no engine (shown to users).
	engineMissing map[calipso.ResourceType]string
	// hook, when set, is called at each Stage of every launch (crash tests).
	hook func(ctx context.Context, stage Stage, r calipso.Resource)

	owner   string         // this process's identity in leases (ProcessID)
	holds   holdSet        // the records this process works on: their leases are renewed
	running sync.WaitGroup // launches between Reserve and the end of Run
	kick    chan struct{}  // asks the leader for a reconcile pass soon
	changes changeSet      // what engine events named since the last pass
	metrics *metrics
	// leaderTasks are other background work run by the leader (WhileLeading).
	leaderTasks []func(ctx context.Context)
}

// Stage is a point in a launch, reported to the hook set with SetHook.
type Stage string

const (
	// StageReserved: the quota is held and the record is pending; the engine has not
	// been asked yet.
	StageReserved Stage = "reserved"
	// StageStarted: the engine's Start returned a running workload; the record is
	// still pending (no Guacamole record yet).
	StageStarted Stage = "started"
)

// SetHook installs f, called synchronously at each Stage of every launch. It exists
// so that tests can interrupt a launch (kill the process) at a chosen point; call it
// before the service is used.
func (s *Service) SetHook(f func(ctx context.Context, stage Stage, r calipso.Resource)) { s.hook = f }

func (s *Service) reached(ctx context.Context, stage Stage, r calipso.Resource) {
	if s.hook != nil {
		s.hook(ctx, stage, r)
	}
}

var _ calipso.ResourceService = (*Service)(nil)

// Config is what the lifecycle uses of the settings.
type Config struct {
	Instance     string // the installation's label: in every name and label it makes
	Workloads    settings.Workloads
	DefaultQuota calipso.Quota // for users whose roles set no quota and who have none of their own
	// Policy gives each user's roles their quota and allowed images.
	Policy calipso.Policy
	// Lifetime gives each launch its expiry.
	Lifetime calipso.Lifetime
	// Guacd is how desktops' Guacamole connections are written.
	Guacd struct {
		Hostname             string // what guacd connects to; "" is the engine's host address
		VNCParams, RDPParams map[string]string
	}
}

// ConfigFrom takes the lifecycle's part of the settings.
func ConfigFrom(s *settings.Settings) Config {
	c := Config{Instance: s.Instance, Workloads: s.Workloads, DefaultQuota: s.Quotas.Default, Policy: s.Access.Policy, Lifetime: s.Lifecycle.Policy}
	c.Guacd.Hostname, c.Guacd.VNCParams, c.Guacd.RDPParams = s.Guacamole.Hostname, s.Guacamole.VNCParams, s.Guacamole.RDPParams
	return c
}

// New returns a Service. engines maps resource types to engines; desktops may be nil.
func New(db *store.Store, engines map[calipso.ResourceType]provisioner.Provisioner, desktops Desktops, cfg Config, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	s := &Service{db: db, engines: engines, desktops: desktops, cfg: cfg, log: log.With("component", "launch"), engineMissing: map[calipso.ResourceType]string{},
		owner: NewProcessID(), holds: holdSet{ids: map[int64]int{}}, kick: make(chan struct{}, 1), metrics: newMetrics()}
	if s.desktops != nil {
		s.desktops = boundedDesktops{s.desktops, cfg.Workloads.CallTimeout.Duration}
	}
	for kind, e := range engines {
		if e != nil && kind != calipso.StaticLink && !e.Capabilities().PidsLimit {
			s.log.Warn("the engine does not enforce workloads.pids_limit: a fork bomb in a workload is bounded only by the engine's own limit (Kubernetes: the kubelet's podPidsLimit)",
				"engine", kind)
		}
	}
	return s
}

// ExplainMissing records why an engine kind is not available, for the users' error.
func (s *Service) ExplainMissing(kind calipso.ResourceType, why string) { s.engineMissing[kind] = why }

// ProcessID is this process's identity in leases, unique among the replicas; an
// Elector other than the database's campaigns under it too.
func (s *Service) ProcessID() string { return s.owner }

// engine returns the engine of kind with its calls bounded (bounded.go). The map is
// read at each call: the crash tests replace an engine in it.
func (s *Service) engine(kind calipso.ResourceType) (provisioner.Provisioner, error) {
	if e, ok := s.engines[kind]; ok && e != nil {
		return boundedEngine{e, s.cfg.Workloads.CallTimeout.Duration}, nil
	}
	why := s.engineMissing[kind]
	if why == "" {
		why = "none is configured"
	}
	return nil, fmt.Errorf("%w: launching %s resources needs an engine: %s", ErrNoEngine, kind, why)
}

func (s *Service) name(id int64) string { return provisioner.Name(s.cfg.Instance, id) }

func randomPassword() string { return rand.Text() }

// enforced refuses an image whose share its engine cannot enforce, unless the
// settings allow that share unenforced: a quota the engine does not hold the workload
// to is a promise Calipso cannot keep. A static link runs nothing: its share is
// bookkeeping only.
func (s *Service) enforced(im calipso.Image, caps provisioner.Capabilities) error {
	if im.ResourceType == calipso.StaticLink {
		return nil
	}
	share := quotas.ImageShare(im)
	var missing []string
	for _, q := range []struct {
		name     string
		asked    bool
		enforced bool
	}{
		{"cpu", share.CPUs > 0, caps.CPULimit},
		{"memory", share.MemoryBytes > 0, caps.MemoryLimit},
		{"disk", share.DiskBytes > 0, caps.DiskLimit},
	} {
		if q.asked && !q.enforced && !slices.Contains(s.cfg.Workloads.AllowUnenforced, q.name) {
			missing = append(missing, q.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: image %s asks for a %s share that the %s engine cannot enforce (an operator may allow it with workloads.allow_unenforced)",
			ErrUnenforced, im.PublicName, strings.Join(missing, " and "), im.ResourceType)
	}
	return nil
}

// IsOwnResource says whether a launch reference names an own resource rather than
// an experiment session.
func IsOwnResource(ref string) bool { return !strings.Contains(ref, "~") }

// ownResourceID is what the frontend's "Own resource" launcher sends instead of an
// experiment reference: a short random id (normally 5 lowercase letters and digits).
var ownResourceID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// Launch starts publicName for u and waits for it: Reserve, then Run. ref is an
// experiment session, "proposal~session", whose datasets are mounted and whose
// uid/gid the workload runs as; or, without "~", the id of an own resource: no
// datasets, the user's identity. Callers check that u may launch own resources.
func (s *Service) Launch(ctx context.Context, u calipso.User, ref, publicName string) (calipso.Resource, error) {
	p, err := s.Reserve(ctx, u, ref, publicName)
	if err != nil {
		return calipso.Resource{}, err
	}
	return p.Run(ctx)
}

// Begin reserves the launch and runs it in the background; see Launch.
func (s *Service) Begin(ctx context.Context, u calipso.User, ref, publicName string) (calipso.Resource, error) {
	p, err := s.Reserve(ctx, u, ref, publicName)
	if err != nil {
		return calipso.Resource{}, err
	}
	go func() { _, _ = p.Run(context.WithoutCancel(ctx)) }() // ends running or failed; Drain waits for it
	return p.Record, nil
}

// Events lists resource id's progress after seq.
func (s *Service) Events(ctx context.Context, id int64, after int) ([]calipso.Event, error) {
	list, err := s.db.Events(ctx, id, after)
	if err != nil {
		return nil, err
	}
	out := make([]calipso.Event, len(list))
	for i, e := range list {
		out[i] = calipso.Event{Seq: e.Seq, Stage: e.Stage, Message: e.Message, At: e.Created}
	}
	return out, nil
}

// Pending is a launch whose quota is reserved and whose record is pending, held by
// this process's lease until Run ends. Run it exactly once.
type Pending struct {
	s      *Service
	Record calipso.Resource
	engine provisioner.Provisioner
	im     calipso.Image
	user   calipso.User
	spec   provisioner.Spec
}

// Reserve checks the launch, reserves its quota and records it as pending, under
// this process's lease; its progress starts with the event "reserved". The workload
// is not asked for yet: Run does that.
func (s *Service) Reserve(ctx context.Context, u calipso.User, ref, publicName string) (*Pending, error) {
	im, err := s.db.Image(ctx, publicName)
	if err != nil {
		return nil, err
	}
	access := s.cfg.Policy.Access(u)
	if !access.MayUse(im.PublicName) {
		return nil, fmt.Errorf("%w: %s's roles (%s) do not allow the image %q", ErrImageNotAllowed, u.Username, strings.Join(access.Roles, ", "), im.PublicName)
	}
	engine, err := s.engine(im.ResourceType)
	if err != nil {
		return nil, err
	}
	if err := s.enforced(im, engine.Capabilities()); err != nil {
		return nil, err
	}
	var (
		so   store.SessionOf
		vols []experiments.Volume
	)
	if IsOwnResource(ref) {
		if !ownResourceID.MatchString(ref) {
			return nil, fmt.Errorf("%w: own resource id %q: want 1 to 32 letters, digits, '_' or '-'", store.ErrInvalid, ref)
		}
		so.Experiment.ProposalID = ref
	} else {
		if so, err = s.db.UserSession(ctx, u.ID, ref); err != nil {
			return nil, err
		}
		roots := experiments.Roots{Datasets: s.cfg.Workloads.DatasetsRoot, Output: s.cfg.Workloads.OutputRoot}
		vols, err = experiments.ParseVolumes(so.Experiment.Sessions[0].DataSetPath, roots)
		if err == nil {
			vols, err = experiments.ResolveHostPaths(vols, roots)
		}
		if err != nil {
			return nil, fmt.Errorf("session %s: %w", ref, err)
		}
		ref = so.Experiment.ProposalID + "~" + so.Experiment.Sessions[0].SessionNumber
	}
	if err := s.refuseRoot(u, so.Experiment); err != nil {
		return nil, err
	}
	var sessionID *int64
	var session *calipso.Session
	if so.SessionID != 0 {
		sessionID, session = &so.SessionID, &so.Experiment.Sessions[0]
	}
	r, err := s.db.Reserve(ctx, store.Launch{
		UserID: u.ID, Experiment: ref, SessionID: sessionID, Image: im, Default: access.QuotaOr(s.cfg.DefaultQuota),
		VNCPassword: randomPassword(), NameOf: s.name, OnePerSession: true, Lease: s.lease(),
		ExpiresAt: s.cfg.Lifetime.ExpiresAt(time.Now(), im.PublicName, access, session),
	})
	if err != nil {
		return nil, err
	}
	s.holds.add(r.ID)
	s.running.Add(1)
	s.progress(ctx, r.ID, EventReserved, "")
	return &Pending{s: s, Record: r, engine: engine, im: im, user: u, spec: s.spec(r, im, u, so.Experiment, vols)}, nil
}

// Run starts the reserved workload and ends the launch running, or failed and rolled
// back, never half-made: it goes on even if ctx is cancelled (the client went away),
// bounded by workloads.launch_timeout. Its progress is recorded as events, ending with
// "ready" or "failed".
func (p *Pending) Run(ctx context.Context) (calipso.Resource, error) {
	s, r, engine, im := p.s, p.Record, p.engine, p.im
	defer s.running.Done()
	defer s.holds.remove(r.ID)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Workloads.LaunchTimeout.Duration)
	defer cancel()
	s.reached(ctx, StageReserved, r)
	startCtx := provisioner.WithProgress(ctx, func(st provisioner.Stage) { s.progress(ctx, r.ID, string(st), "") })
	wl, err := engine.Start(startCtx, p.spec)
	if err != nil {
		return s.fail(ctx, engine, r, failedStart, fmt.Errorf("start %s: %w", r.EngineName, err))
	}
	s.reached(ctx, StageStarted, r)
	up := store.Update{EngineID: &wl.ID}
	hostPort := strconv.Itoa(wl.Port)
	if wl.URL != "" {
		hostPort = wl.URL
	}
	up.HostPort = &hostPort
	info, _ := json.Marshal(map[string]any{"host": wl.Host, "port": wl.Port, "engine": im.ResourceType, "state": wl.State})
	infoS := string(info)
	up.Info = &infoS
	if calipso.IsDesktop(im.Protocol) && s.desktops != nil {
		user, pass := r.EngineName, randomPassword()
		if err := s.desktops.Create(ctx, s.connection(r, wl, user, pass)); err != nil {
			return s.fail(ctx, engine, r, failedDesktop, fmt.Errorf("guacamole record of %s: %w", r.EngineName, err))
		}
		up.GuacamoleUsername, up.GuacamolePassword = &user, &pass
	}
	// Only while this process holds the lease: a launch taken over (its process was
	// thought lost) or stopped or removed meanwhile is rolled back.
	running, err := s.db.MoveHeld(ctx, r.ID, s.owner, calipso.Running, up)
	if err != nil {
		return s.fail(ctx, engine, r, failedRecord, fmt.Errorf("record %s: %w", r.EngineName, err))
	}
	s.progress(ctx, r.ID, EventReady, "")
	s.log.InfoContext(ctx, "launched", "resource", r.ID, "name", r.EngineName, "user", p.user.Username, "image", im.PublicName)
	return running, nil
}

// fail rolls a launch back: workload and Guacamole record removed, record marked
// failed (which releases the quota). Each call is bounded; what fails or times out
// is left to the reconciler, which retries it: the workload and Guacamole record as
// orphans, the record once this process's lease on it has expired. The cause, with
// the engine's own words (which may hold host paths, runtime and registry messages),
// is logged; the record and the error returned say only the kind of failure and
// what the user can do (a Failure).
func (s *Service) fail(ctx context.Context, engine provisioner.Provisioner, r calipso.Resource, step failedStep, cause error) (calipso.Resource, error) {
	ctx = context.WithoutCancel(ctx) // the launch's deadline may be what failed it
	if err := engine.Remove(ctx, r.EngineName); err != nil {
		s.log.WarnContext(ctx, "launch rollback: remove workload (the reconciler retries)", "name", r.EngineName, "err", err)
	}
	if s.desktops != nil {
		if err := s.desktops.Delete(ctx, r.EngineName); err != nil {
			s.log.WarnContext(ctx, "launch rollback: guacamole (the reconciler retries)", "name", r.EngineName, "err", err)
		}
	}
	f := newFailure(r, step, cause)
	msg := f.Error()
	dbCtx, cancel := s.callContext(ctx)
	defer cancel()
	if _, err := s.db.MoveHeld(dbCtx, r.ID, s.owner, calipso.Failed, store.Update{Error: &msg}); err != nil && !errors.Is(err, store.ErrConflict) {
		s.log.ErrorContext(ctx, "launch rollback: record (the reconciler fails it once this process's lease expires)", "resource", r.ID, "err", err)
	}
	s.progress(ctx, r.ID, EventFailed, msg)
	s.log.WarnContext(ctx, "launch failed", "resource", r.ID, "name", r.EngineName, "err", cause, "shown", msg)
	return calipso.Resource{}, f
}

// failedStep is where a launch failed after its quota was reserved.
type failedStep int

const (
	failedStart   failedStep = iota // the engine's Start
	failedDesktop                   // the Guacamole record
	failedRecord                    // the resource record's move to running
)

// Failure is a launch that failed after its quota was reserved. Its text is what the
// user reads, in the record's error (the compat API's container_logs) and in the HTTP
// answer: the kind of failure, what to do, and the resource to quote to the
// facility's support, never the engine's text. Its code is the cause's, so the HTTP
// status is the cause's (calipso.ErrorCode and ErrorMessage find the user's text);
// errors.Is and errors.As reach the cause, which fail logs in full.
type Failure struct {
	ResourceID int64
	user       *calipso.Error
	cause      error
}

func (f *Failure) Error() string { return f.user.Message }

// Unwrap gives the user's error first, so that calipso.ErrorCode and ErrorMessage
// find it, then the cause, for errors.Is.
func (f *Failure) Unwrap() []error { return []error{f.user, f.cause} }

// Cause is the error as the engine, Guacamole or the store reported it: for logs.
func (f *Failure) Cause() error { return f.cause }

// newFailure words the failure of resource r at step for its user.
func newFailure(r calipso.Resource, step failedStep, cause error) *Failure {
	code := calipso.ErrorCode(cause)
	quote := fmt.Sprintf("ask the facility's support, quoting resource %d", r.ID)
	retry := "try again later; if it keeps failing, " + quote
	var what string
	switch {
	case step == failedDesktop:
		what = "the remote desktop connection could not be set up: " + retry
	case step == failedRecord && code == calipso.ECONFLICT:
		what = "the resource was stopped or removed while it was starting"
	case step == failedRecord:
		what = "the launch could not be recorded: " + retry
	case code == calipso.EUNLAUNCHABLE:
		what = "the image could not be started: " + quote
	case code == calipso.ETIMEOUT:
		what = "the workload did not become ready in time: " + retry
	case code == calipso.EUNAVAILABLE:
		what = fmt.Sprintf("the engine that runs %s resources is unavailable: %s", r.ResourceType, retry)
	default:
		what = "the workload could not be started: " + quote
	}
	return &Failure{ResourceID: r.ID, user: calipso.NewError(code, "launch failed: "+what), cause: cause}
}

// identity is who a workload runs as: the experiment's uid and gid, else the user's,
// else the settings'. whose names where they came from, for users to read.
func (s *Service) identity(u calipso.User, e calipso.Experiment) (uid, gid int, whose string) {
	switch {
	case e.UID != nil && e.GID != nil:
		return *e.UID, *e.GID, "proposal " + e.ProposalID + "'s"
	case u.UID != nil && u.GID != nil:
		return *u.UID, *u.GID, "your account's"
	}
	return s.cfg.Workloads.UID, s.cfg.Workloads.GID, "the installation's default (workloads.uid and gid)"
}

// refuseRoot refuses, before anything is reserved, a launch whose workload would run
// as root's user or group: the user office (or the account) gave id 0. The engines
// refuse it too (provisioner.Spec.Validate); this says why in the user's terms.
func (s *Service) refuseRoot(u calipso.User, e calipso.Experiment) error {
	if s.cfg.Workloads.AllowRoot {
		return nil
	}
	uid, gid, whose := s.identity(u, e)
	var which string
	switch {
	case uid == 0 && gid == 0:
		which = "user and group ids are"
	case uid == 0:
		which = "user id is"
	case gid == 0:
		which = "group id is"
	default:
		return nil
	}
	return fmt.Errorf("%w: %s %s 0, root's, and workloads do not run as root: ask the facility's support for another", ErrRootIdentity, whose, which)
}

// spec builds the workload: identity from the experiment, else the user, else the
// settings; the image's pids limit, else the settings'; the session's datasets
// read-only and results read-write; home and extra mounts from settings.
func (s *Service) spec(r calipso.Resource, im calipso.Image, u calipso.User, e calipso.Experiment, vols []experiments.Volume) provisioner.Spec {
	w := s.cfg.Workloads
	uid, gid, _ := s.identity(u, e)
	spec := provisioner.Spec{
		Instance: s.cfg.Instance, ResourceID: r.ID, Owner: u.Username, Experiment: r.Experiment,
		Image: im.Image, Protocol: im.Protocol, CPUs: r.CPU, MemoryBytes: r.MemoryBytes, DiskBytes: r.DiskBytes, PidsLimit: cmp.Or(im.PidsLimit, w.PidsLimit),
		UID: uid, GID: gid, AllowRoot: w.AllowRoot, ExtraGroups: append([]int{100}, w.ExtraGroups...),
		// The VNC password is a file (the engine shows the environment to whoever may
		// inspect workloads): images read VNC_PASSWORD_FILE.
		Env: map[string]string{
			"VNC_PASSWORD_FILE": provisioner.SecretPath(VNCPasswordSecret), "CALIPSO_USER": u.Username, "CALIPSO_EXPERIMENT": r.Experiment,
		},
		Secrets:  map[string]string{VNCPasswordSecret: r.VNCPassword},
		LogRegex: im.LogRegex,
	}
	for _, v := range vols {
		spec.Mounts = append(spec.Mounts, provisioner.Mount{Source: v.HostPath, Target: v.ContainerPath, ReadOnly: v.ReadOnly})
		if !v.ReadOnly && spec.WorkDir == "" {
			spec.WorkDir = v.ContainerPath
		}
	}
	if w.MountHome {
		home := u.Home
		if home == "" {
			home = w.HomeRoot + "/" + u.Username
		}
		spec.Mounts = append(spec.Mounts, provisioner.Mount{Source: home, Target: "/home/" + u.Username})
	}
	spec.Mounts = append(spec.Mounts, w.Mounts...)
	spec.ExtraGroups = slices.Compact(slices.Sorted(slices.Values(spec.ExtraGroups)))
	return spec
}

// connection is the Guacamole record of a desktop.
func (s *Service) connection(r calipso.Resource, wl provisioner.Workload, user, pass string) guacamole.Connection {
	g := s.cfg.Guacd
	host := g.Hostname
	if host == "" {
		host = wl.Host
	}
	params := map[string]string{"hostname": host, "port": strconv.Itoa(wl.Port), "password": r.VNCPassword}
	extra := g.VNCParams
	if r.Protocol == "rdp" {
		extra = g.RDPParams
	}
	for k, v := range extra {
		params[k] = v
	}
	return guacamole.Connection{Name: r.EngineName, Protocol: r.Protocol, Params: params, Username: user, Password: pass}
}

// Stop stops a resource; its Guacamole record goes, the workload stays until Remove.
// Stopping a record that is no longer up (stopped, failed, removed) answers it as it
// is: the frontend calls rm only after a stop succeeded. The record is stopping under
// this process's lease until the engine has stopped the workload: if a call fails or
// times out, the reconciler takes the stop over once the lease expires.
func (s *Service) Stop(ctx context.Context, r calipso.Resource) (calipso.Resource, error) {
	if r.State == calipso.Stopped || r.State == calipso.Failed || r.State == calipso.Removed {
		return r, nil
	}
	r, err := s.db.Move(ctx, r.ID, calipso.Stopping, store.Update{Lease: s.leaseRef()})
	if err != nil {
		return r, err
	}
	s.holds.add(r.ID)
	defer s.holds.remove(r.ID)
	return s.finishStop(context.WithoutCancel(ctx), r)
}

// finishStop stops the workload of a stopping record this process holds.
func (s *Service) finishStop(ctx context.Context, r calipso.Resource) (calipso.Resource, error) {
	engine, err := s.engine(r.ResourceType)
	if err != nil {
		return r, err
	}
	if err := engine.Stop(ctx, r.EngineName); err != nil {
		return r, fmt.Errorf("stop %s: %w", r.EngineName, err) // stays stopping: retried by the reconciler
	}
	if s.desktops != nil {
		if err := s.desktops.Delete(ctx, r.EngineName); err != nil {
			return r, fmt.Errorf("guacamole record of %s: %w", r.EngineName, err)
		}
	}
	dbCtx, cancel := s.callContext(ctx)
	defer cancel()
	return s.db.MoveHeld(dbCtx, r.ID, s.owner, calipso.Stopped, store.Update{})
}

// Remove deletes a resource's workload and records. A live record becomes stopping
// under this process's lease first, so that a remove the engine does not finish
// still ends the workload (the reconciler finishes the stop) and releases the quota.
func (s *Service) Remove(ctx context.Context, r calipso.Resource) (calipso.Resource, error) {
	if r.State == calipso.Removed {
		return r, nil
	}
	ctx = context.WithoutCancel(ctx)
	engine, err := s.engine(r.ResourceType)
	if err != nil {
		return r, err
	}
	if r.State == calipso.Running {
		switch moved, err := s.db.MoveFrom(ctx, r.ID, calipso.Running, calipso.Stopping, store.Update{Lease: s.leaseRef()}); {
		case err == nil:
			r = moved
			s.holds.add(r.ID)
			defer s.holds.remove(r.ID)
		case errors.Is(err, store.ErrConflict) && moved.ID != 0:
			r = moved // no longer running (stopped meanwhile): remove it as it is
		default:
			return r, err
		}
	}
	if err := engine.Remove(ctx, r.EngineName); err != nil {
		return r, fmt.Errorf("remove %s: %w", r.EngineName, err)
	}
	if s.desktops != nil {
		if err := s.desktops.Delete(ctx, r.EngineName); err != nil {
			return r, fmt.Errorf("guacamole record of %s: %w", r.EngineName, err)
		}
	}
	dbCtx, cancel := s.callContext(ctx)
	defer cancel()
	return s.db.Move(dbCtx, r.ID, calipso.Removed, store.Update{})
}
