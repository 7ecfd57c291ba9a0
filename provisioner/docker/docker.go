// Package docker runs Calipso workloads as containers on a Docker engine (or Podman's
// Docker-compatible API). It only uses API features of Docker 20.10 / API 1.41 and
// negotiates the version, so older and newer engines both work.
//
// Images are never pulled: an image must already be on the engine (the operator
// loads or pulls it), otherwise Start fails with provisioner.ErrInvalid.
// Spec.DiskBytes is ignored: a per-container disk quota needs overlay2 on xfs with
// project quotas, which engines rarely have.
//
// Secrets (Spec.Secrets, the VNC password) are not in the container's environment,
// which `docker inspect` shows and every process of the desktop inherits: Start
// copies them into the created container, before it starts, as files of
// provisioner.SecretsDir owned by the workload's uid and gid, mode 0400, in a
// directory of root's. They live in the container's writable layer, so they go with
// the container, and the copy (the engine's archive API) works with a remote engine
// too: nothing is written on Calipso's host, nor needs Calipso to be root to give the
// file to the workload's uid, as a bind-mounted file would. Whoever may use the
// engine can still read them (docker cp, exec): that is root on the host anyway.
//
// Hardening: no privileged mode, no-new-privileges, and every capability dropped. A
// non-root process (the normal case: Spec refuses uid and gid 0 unless allowed)
// cannot use capabilities anyway once no-new-privileges stops setuid binaries and
// file capabilities, so dropping them all costs such desktops nothing. A root workload
// (Spec.AllowRoot) gets back only what entrypoints need to set up a session and
// switch to the user (chown, setuid/setgid, kill, binding low ports).
package docker

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/docker/go-connections/nat"

	"github.com/calipsoplus/calipso/provisioner"
)

// Defaults for the Config fields left zero.
const (
	DefaultHostAddress    = "localhost"
	DefaultPublishAddress = "0.0.0.0"
	DefaultReadyTimeout   = 2 * time.Minute
	DefaultStopTimeout    = 10 * time.Second
)

// rootCapabilities are what a root workload keeps (see the package comment).
var rootCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_NET_BIND_SERVICE",
}

// Config says which engine to use and how users reach what runs on it.
type Config struct {
	// Host is the daemon URL ("unix:///var/run/docker.sock", "tcp://host:2375");
	// empty uses the environment (DOCKER_HOST, DOCKER_CERT_PATH...) or the default socket.
	Host string
	// Instance is the installation label; Start refuses specs of another one and List
	// reports only this one's workloads.
	Instance string
	// HostAddress is the name users (or Guacamole) reach published ports at.
	HostAddress string
	// PublishAddress is the host IP published ports are bound to.
	PublishAddress string
	// Network, when set, is the Docker network workloads join (instead of the default bridge).
	Network string
	// ReadyTimeout bounds the wait for Spec.LogRegex.
	ReadyTimeout time.Duration
	// StopTimeout is the grace between SIGTERM and SIGKILL on Stop.
	StopTimeout time.Duration
	// Logger receives what the provisioner does (slog.Default when nil).
	Logger *slog.Logger
}

// Provisioner is a provisioner.Provisioner on one Docker engine. It is safe for
// concurrent use.
type Provisioner struct {
	cli *client.Client
	cfg Config
	log *slog.Logger
	// negotiated: the client's API version is settled. The client negotiates it
	// lazily on the first call and writes its fields unguarded, so concurrent first
	// calls race (Docker's client, v28); negotiate settles it once, under mu.
	mu         sync.Mutex
	negotiated bool
}

// negotiate settles the API version before a call; the engine must answer to it.
func (p *Provisioner) negotiate(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.negotiated {
		return nil
	}
	ping, err := p.cli.Ping(ctx)
	if err != nil {
		return engineError("ping docker engine", err)
	}
	p.cli.NegotiateAPIVersionPing(ping)
	p.negotiated = true
	return nil
}

var (
	_ provisioner.Provisioner = (*Provisioner)(nil)
	_ provisioner.Watcher     = (*Provisioner)(nil)
)

// New makes a client of the engine. It does not contact the engine (Ping does), so
// that Calipso starts even while the engine is down.
func New(ctx context.Context, cfg Config) (*Provisioner, error) {
	_ = ctx // kept for symmetry with the other engines, which may dial at construction
	if cfg.Instance == "" {
		return nil, fmt.Errorf("docker provisioner: instance is required")
	}
	if cfg.HostAddress == "" {
		cfg.HostAddress = DefaultHostAddress
	}
	if cfg.PublishAddress == "" {
		cfg.PublishAddress = DefaultPublishAddress
	}
	if net.ParseIP(cfg.PublishAddress) == nil {
		return nil, fmt.Errorf("docker provisioner: publish address %q is not an IP address", cfg.PublishAddress)
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if cfg.Host != "" {
		opts = append(opts, client.WithHost(cfg.Host))
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker provisioner: client for %q: %w", cfg.Host, err)
	}
	return &Provisioner{cli: cli, cfg: cfg, log: cfg.Logger.With("engine", "docker", "instance", cfg.Instance)}, nil
}

// Instance is the installation label this provisioner works for.
func (p *Provisioner) Instance() string { return p.cfg.Instance }

// Close releases the client's connections.
func (p *Provisioner) Close() error { return p.cli.Close() }

// Capabilities: CPU, memory (without swap) and the number of processes and threads
// (the pids controller: a fork bomb fails inside the container) are cgroup limits, the
// process runs as the spec's uid, gid and groups, read-only binds are read-only, a
// stopped container starts again and the engine keeps its log. Secrets are files the
// workload's uid owns (see the package comment). The disk share is NOT enforced:
// Spec.DiskBytes is ignored (see the package comment).
func (p *Provisioner) Capabilities() provisioner.Capabilities {
	return provisioner.Capabilities{
		CPULimit:       true,
		MemoryLimit:    true,
		DiskLimit:      false,
		PidsLimit:      true,
		RunAsUser:      true,
		SecretFiles:    true,
		ReadOnlyMounts: true,
		Restart:        true,
		Logs:           true,
	}
}

// Ping says whether the engine answers.
func (p *Provisioner) Ping(ctx context.Context) error {
	if _, err := p.cli.Ping(ctx); err != nil {
		return engineError("ping docker engine", err)
	}
	return nil
}

// Start creates and starts the workload, or adopts the one of that name this
// installation made earlier, and waits for its LogRegex. On ErrNotReady the returned
// Instance names the container so that the caller can remove it.
func (p *Provisioner) Start(ctx context.Context, spec provisioner.Spec) (provisioner.Workload, error) {
	if err := p.negotiate(ctx); err != nil {
		return provisioner.Workload{}, err
	}
	name := spec.Name()
	config, hostConfig, ready, err := p.containerConfig(spec)
	if err != nil {
		return provisioner.Workload{}, fmt.Errorf("start %s: %w", name, err)
	}

	provisioner.Progress(ctx, provisioner.StageCreating)
	id, err := p.create(ctx, name, spec, config, hostConfig)
	if err != nil {
		return provisioner.Workload{}, fmt.Errorf("start %s: %w", name, err)
	}
	if err := p.copySecrets(ctx, id, spec); err != nil {
		return provisioner.Workload{Name: name, ID: id}, fmt.Errorf("start %s: %w", name, err)
	}
	provisioner.Progress(ctx, provisioner.StageStarting)
	if err := p.cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		return provisioner.Workload{Name: name, ID: id}, engineError("start "+name, err)
	}

	info, err := p.cli.ContainerInspect(ctx, id)
	if err != nil {
		return provisioner.Workload{Name: name, ID: id}, engineError("inspect "+name, err)
	}
	inst := p.instance(info)
	if inst.State != provisioner.StateRunning {
		return inst, fmt.Errorf("start %s: %w: container is %s %s", name, provisioner.ErrNotReady, inst.State, inst.Reason)
	}
	if inst.Port == 0 {
		return inst, fmt.Errorf("start %s: %w: port %d is not published", name, provisioner.ErrNotReady, provisioner.PortFor(spec.Protocol))
	}
	if ready != nil {
		provisioner.Progress(ctx, provisioner.StageWaitingToken)
		match, err := p.waitForLog(ctx, id, ready)
		if err != nil {
			return inst, fmt.Errorf("start %s: %w", name, err)
		}
		inst.LogMatch = match
	}
	inst.URL = p.url(spec.Protocol, inst.Port, inst.LogMatch)
	p.log.InfoContext(ctx, "workload started", "name", name, "id", shortID(id), "port", inst.Port)
	return inst, nil
}

// containerConfig turns a spec into the engine's configuration; the regexp is nil
// when there is no log to wait for.
func (p *Provisioner) containerConfig(spec provisioner.Spec) (*container.Config, *container.HostConfig, *regexp.Regexp, error) {
	if err := spec.Validate(); err != nil {
		return nil, nil, nil, err
	}
	if spec.Instance != p.cfg.Instance {
		return nil, nil, nil, fmt.Errorf("%w: spec of installation %q given to the provisioner of %q", provisioner.ErrInvalid, spec.Instance, p.cfg.Instance)
	}
	var ready *regexp.Regexp
	if spec.LogRegex != "" {
		re, err := regexp.Compile(spec.LogRegex)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%w: log regex: %w", provisioner.ErrInvalid, err)
		}
		ready = re
	}
	if spec.WorkDir != "" && !path.IsAbs(spec.WorkDir) {
		return nil, nil, nil, fmt.Errorf("%w: work dir %q is not absolute", provisioner.ErrInvalid, spec.WorkDir)
	}

	mounts := make([]mount.Mount, 0, len(spec.Mounts))
	for _, m := range spec.Mounts {
		// The source is a path on the engine's host, not necessarily ours: check its
		// form only, the engine refuses sources that do not exist.
		if !path.IsAbs(m.Source) || !path.IsAbs(m.Target) {
			return nil, nil, nil, fmt.Errorf("%w: mount %s: source and target must be absolute paths", provisioner.ErrInvalid, m)
		}
		mounts = append(mounts, mount.Mount{
			Type:     mount.TypeBind,
			Source:   path.Clean(m.Source),
			Target:   path.Clean(m.Target),
			ReadOnly: m.ReadOnly,
		})
	}

	env := make([]string, 0, len(spec.Env))
	for k, v := range spec.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return nil, nil, nil, fmt.Errorf("%w: environment variable %q is malformed", provisioner.ErrInvalid, k)
		}
		env = append(env, k+"="+v)
	}
	slices.Sort(env)

	groups := make([]string, 0, len(spec.ExtraGroups))
	for _, g := range spec.ExtraGroups {
		if g < 0 {
			return nil, nil, nil, fmt.Errorf("%w: group %d is negative", provisioner.ErrInvalid, g)
		}
		groups = append(groups, strconv.Itoa(g))
	}

	port := nat.Port(strconv.Itoa(provisioner.PortFor(spec.Protocol)) + "/tcp")
	config := &container.Config{
		Image:        spec.Image,
		User:         fmt.Sprintf("%d:%d", spec.UID, spec.GID),
		Env:          env,
		WorkingDir:   spec.WorkDir,
		Labels:       spec.Labels(),
		ExposedPorts: nat.PortSet{port: struct{}{}},
	}
	hostConfig := &container.HostConfig{
		PortBindings:  nat.PortMap{port: []nat.PortBinding{{HostIP: p.cfg.PublishAddress}}}, // no HostPort: a free one
		Mounts:        mounts,
		GroupAdd:      groups,
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
		CapDrop:       []string{"ALL"},
		SecurityOpt:   []string{"no-new-privileges"},
		Resources: container.Resources{
			Memory:   spec.MemoryBytes,
			NanoCPUs: int64(spec.CPUs * 1e9),
		},
	}
	if spec.PidsLimit > 0 {
		hostConfig.PidsLimit = &spec.PidsLimit
	}
	if spec.MemoryBytes > 0 {
		hostConfig.MemorySwap = spec.MemoryBytes // the limit is the limit: no swap on top
	}
	if spec.UID == 0 {
		hostConfig.CapAdd = rootCapabilities
	}
	if p.cfg.Network != "" {
		hostConfig.NetworkMode = container.NetworkMode(p.cfg.Network)
	}
	return config, hostConfig, ready, nil
}

// create makes the container, or adopts the one this installation made under that
// name before (an interrupted launch), and returns its id.
func (p *Provisioner) create(ctx context.Context, name string, spec provisioner.Spec, config *container.Config, hostConfig *container.HostConfig) (string, error) {
	created, err := p.cli.ContainerCreate(ctx, config, hostConfig, nil, nil, name)
	switch {
	case err == nil:
		for _, w := range created.Warnings {
			p.log.WarnContext(ctx, "engine warning on create", "name", name, "warning", w)
		}
		return created.ID, nil
	case cerrdefs.IsConflict(err):
		info, err := p.cli.ContainerInspect(ctx, name)
		if err != nil {
			return "", engineError("inspect existing "+name, err)
		}
		if !p.ours(info.Config.Labels) || info.Config.Labels[provisioner.LabelResource] != strconv.FormatInt(spec.ResourceID, 10) {
			return "", fmt.Errorf("%w: the name %s is taken by a container this installation did not make", provisioner.ErrInvalid, name)
		}
		p.log.InfoContext(ctx, "adopting existing workload", "name", name, "id", shortID(info.ID), "status", info.State.Status)
		return info.ID, nil
	case cerrdefs.IsNotFound(err):
		return "", fmt.Errorf("%w: image %s is not on the engine (images are not pulled): %w", provisioner.ErrInvalid, spec.Image, err)
	default:
		return "", engineError("create", err)
	}
}

// copySecrets writes the spec's secrets into the container, before it starts, as
// files owned by the workload's uid and gid with mode 0400, in a directory of root's
// (so that the workload cannot replace them). They are in the container's writable
// layer: removed with the container, kept across Stop and Start. Copied on every
// Start, so that an adopted container made by an interrupted Start has them too.
func (p *Provisioner) copySecrets(ctx context.Context, id string, spec provisioner.Spec) error {
	if len(spec.Secrets) == 0 {
		return nil
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := strings.TrimPrefix(provisioner.SecretsDir, "/") + "/"
	now := time.Now()
	// Only the directory itself: an entry for /run would reset the image's own.
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: now}); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	for _, name := range slices.Sorted(maps.Keys(spec.Secrets)) {
		value := spec.Secrets[name]
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: dir + name, Mode: 0o400, Uid: spec.UID, Gid: spec.GID,
			Size: int64(len(value)), ModTime: now}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("secrets: %w", err)
		}
		if _, err := io.WriteString(tw, value); err != nil {
			return fmt.Errorf("secrets: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	// Ownership as the headers say (CopyUIDGID would give the directory to the user).
	if err := p.cli.CopyToContainer(ctx, id, "/", &buf, container.CopyToContainerOptions{}); err != nil {
		return engineError("copy secrets into the container", err)
	}
	return nil
}

// waitForLog follows the container's log (from its start, so that an adopted
// workload is found ready too) until re matches a line.
func (p *Provisioner) waitForLog(ctx context.Context, id string, re *regexp.Regexp) (string, error) {
	waitCtx, cancel := context.WithTimeout(ctx, p.cfg.ReadyTimeout)
	defer cancel()
	logs, err := p.cli.ContainerLogs(waitCtx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: true})
	if err != nil {
		return "", engineError("follow log", err)
	}
	defer logs.Close()

	pr, pw := io.Pipe()
	go func() {
		_, err := stdcopy.StdCopy(pw, pw, logs)
		pw.CloseWithError(err)
	}()
	defer pr.Close() // unblocks StdCopy's writes once we stop reading

	scanner := bufio.NewScanner(pr)
	scanner.Buffer(make([]byte, 64*1024), 1024*1024)
	for scanner.Scan() {
		m := re.FindStringSubmatch(scanner.Text())
		if m == nil {
			continue
		}
		if len(m) > 1 {
			return m[1], nil
		}
		return m[0], nil
	}
	switch {
	case ctx.Err() != nil:
		return "", fmt.Errorf("wait for log: %w", ctx.Err())
	case waitCtx.Err() != nil:
		return "", fmt.Errorf("%w: no log line matched %q within %s", provisioner.ErrNotReady, re, p.cfg.ReadyTimeout)
	case scanner.Err() != nil:
		return "", fmt.Errorf("%w: reading log: %w", provisioner.ErrNotReady, scanner.Err())
	default:
		return "", fmt.Errorf("%w: the workload exited before a log line matched %q", provisioner.ErrNotReady, re)
	}
}

// url is the link to an HTTP workload (with the notebook token when the log gave one).
func (p *Provisioner) url(protocol string, port int, token string) string {
	return provisioner.LinkURL(protocol, p.cfg.HostAddress, port, token)
}

// Stop stops the workload (SIGTERM, then SIGKILL after StopTimeout). A missing
// workload is stopped already.
func (p *Provisioner) Stop(ctx context.Context, name string) error {
	if err := p.negotiate(ctx); err != nil {
		return err
	}
	if err := p.checkOurs(ctx, name); err != nil {
		if errors.Is(err, provisioner.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("stop %s: %w", name, err)
	}
	seconds := int(p.cfg.StopTimeout.Round(time.Second) / time.Second)
	err := p.cli.ContainerStop(ctx, name, container.StopOptions{Timeout: &seconds})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return engineError("stop "+name, err)
	}
	return nil
}

// Remove deletes the workload, running or not, with its anonymous volumes. A missing
// workload is removed already.
func (p *Provisioner) Remove(ctx context.Context, name string) error {
	if err := p.negotiate(ctx); err != nil {
		return err
	}
	if err := p.checkOurs(ctx, name); err != nil {
		if errors.Is(err, provisioner.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("remove %s: %w", name, err)
	}
	err := p.cli.ContainerRemove(ctx, name, container.RemoveOptions{Force: true, RemoveVolumes: true})
	// Conflict: a removal of it is in progress already.
	if err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
		return engineError("remove "+name, err)
	}
	if err == nil {
		p.log.InfoContext(ctx, "workload removed", "name", name)
	}
	return nil
}

// checkOurs refuses to touch a container this installation did not make.
func (p *Provisioner) checkOurs(ctx context.Context, name string) error {
	info, err := p.cli.ContainerInspect(ctx, name)
	if err != nil {
		return engineError("inspect "+name, err)
	}
	if !p.ours(info.Config.Labels) {
		return fmt.Errorf("%w: container %s was not made by this installation", provisioner.ErrInvalid, name)
	}
	return nil
}

// Inspect reports one workload. A container of that name that this installation did
// not make is not one of its workloads: ErrNotFound. The URL carries no token (the
// engine does not keep it; Start returned it).
func (p *Provisioner) Inspect(ctx context.Context, name string) (provisioner.Workload, error) {
	if err := p.negotiate(ctx); err != nil {
		return provisioner.Workload{}, err
	}
	info, err := p.cli.ContainerInspect(ctx, name)
	if err != nil {
		return provisioner.Workload{}, engineError("inspect "+name, err)
	}
	if !p.ours(info.Config.Labels) {
		return provisioner.Workload{}, fmt.Errorf("inspect %s: %w (a container of another owner has that name)", name, provisioner.ErrNotFound)
	}
	return p.instance(info), nil
}

// CPUTime is the CPU time the workload's processes have used so far (the engine's
// own counter, cgroup cpuacct): the lifecycle's CPU signal reads it at each pass.
func (p *Provisioner) CPUTime(ctx context.Context, name string) (time.Duration, error) {
	if err := p.negotiate(ctx); err != nil {
		return 0, err
	}
	stats, err := p.cli.ContainerStatsOneShot(ctx, name)
	if err != nil {
		return 0, engineError("stats "+name, err)
	}
	defer stats.Body.Close()
	var st container.StatsResponse
	if err := json.NewDecoder(io.LimitReader(stats.Body, 1<<20)).Decode(&st); err != nil {
		return 0, fmt.Errorf("%w: stats %s: %w", provisioner.ErrUnavailable, name, err)
	}
	return time.Duration(st.CPUStats.CPUUsage.TotalUsage), nil
}

// List reports every container of this installation, in any state.
func (p *Provisioner) List(ctx context.Context) ([]provisioner.Workload, error) {
	if err := p.negotiate(ctx); err != nil {
		return nil, err
	}
	list, err := p.cli.ContainerList(ctx, container.ListOptions{
		All: true,
		Filters: filters.NewArgs(
			filters.Arg("label", provisioner.LabelManagedBy+"=calipso"),
			filters.Arg("label", provisioner.LabelInstance+"="+p.cfg.Instance),
		),
	})
	if err != nil {
		return nil, engineError("list containers", err)
	}
	out := make([]provisioner.Workload, 0, len(list))
	for _, c := range list {
		out = append(out, p.summaryInstance(c))
	}
	return out, nil
}

// Watch follows the engine's container events of this installation (Docker's
// events API, filtered by label) and names the container of each create, start,
// die, OOM and destroy.
func (p *Provisioner) Watch(ctx context.Context, changed func(provisioner.Change)) error {
	if err := p.negotiate(ctx); err != nil {
		return err
	}
	msgs, errs := p.cli.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("label", provisioner.LabelManagedBy+"=calipso"),
		filters.Arg("label", provisioner.LabelInstance+"="+p.cfg.Instance),
	)})
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return engineError("watch events", err)
		case m := <-msgs:
			name := m.Actor.Attributes["name"]
			if name == "" {
				continue
			}
			switch m.Action {
			case events.ActionCreate, events.ActionStart:
				changed(provisioner.Change{Name: name})
			case events.ActionDie, events.ActionOOM, events.ActionDestroy:
				changed(provisioner.Change{Name: name, Ended: true})
			}
		}
	}
}

func (p *Provisioner) ours(labels map[string]string) bool {
	return labels[provisioner.LabelManagedBy] == "calipso" && labels[provisioner.LabelInstance] == p.cfg.Instance
}

// instance turns an inspected container into an Instance.
func (p *Provisioner) instance(info container.InspectResponse) provisioner.Workload {
	var labels map[string]string
	if info.Config != nil {
		labels = info.Config.Labels
	}
	inst := provisioner.Workload{
		Name:  strings.TrimPrefix(info.Name, "/"),
		ID:    info.ID,
		Owner: labels[provisioner.LabelOwner],
		Host:  p.cfg.HostAddress,
	}
	inst.ResourceID, _ = strconv.ParseInt(labels[provisioner.LabelResource], 10, 64)
	if info.State != nil {
		inst.State, inst.Reason = stateOf(info.State.Status, info.State.ExitCode, info.State.OOMKilled, info.State.Error)
	}
	if info.NetworkSettings != nil {
		inst.Port = hostPort(info.NetworkSettings.Ports, workloadPort(info))
	}
	inst.URL = p.url(protocolOf(inst.Port, workloadPort(info)), inst.Port, "")
	return inst
}

// summaryInstance turns a listed container into an Instance (the list carries no
// exit code nor OOM flag: Reason is the engine's status line).
func (p *Provisioner) summaryInstance(c container.Summary) provisioner.Workload {
	inst := provisioner.Workload{
		ID:    c.ID,
		Owner: c.Labels[provisioner.LabelOwner],
		Host:  p.cfg.HostAddress,
	}
	if len(c.Names) > 0 {
		inst.Name = strings.TrimPrefix(c.Names[0], "/")
	}
	inst.ResourceID, _ = strconv.ParseInt(c.Labels[provisioner.LabelResource], 10, 64)
	inst.State, _ = stateOf(c.State, 0, false, "")
	if inst.State != provisioner.StateRunning {
		inst.Reason = c.Status
	}
	for _, port := range c.Ports {
		if port.PublicPort != 0 && (port.PrivatePort == provisioner.PortHTTP || port.PrivatePort == provisioner.PortVNC || port.PrivatePort == provisioner.PortRDP) {
			inst.Port = int(port.PublicPort)
			break
		}
	}
	return inst
}

// stateOf maps the engine's container status. An exit is a stop (Stop ends workloads
// with a signal, so a non-zero code is normal), unless the kernel killed it for memory.
func stateOf(status string, exitCode int, oomKilled bool, engineError string) (provisioner.State, string) {
	switch status {
	case "created":
		return provisioner.StateCreated, ""
	case "running":
		return provisioner.StateRunning, ""
	case "restarting":
		return provisioner.StatePending, "restarting"
	case "paused":
		return provisioner.StateStopped, "paused"
	case "exited", "removing":
		if oomKilled {
			return provisioner.StateError, "out of memory (OOMKilled)"
		}
		if engineError != "" {
			return provisioner.StateError, engineError
		}
		return provisioner.StateStopped, fmt.Sprintf("exited with code %d", exitCode)
	case "dead":
		reason := "dead (the engine could not stop or remove it)"
		if engineError != "" {
			reason += ": " + engineError
		}
		return provisioner.StateError, reason
	default:
		return provisioner.StateError, "unknown container status " + strconv.Quote(status)
	}
}

// workloadPort is the container port Start published (the one among the
// protocols' ports the container exposes), 0 if none.
func workloadPort(info container.InspectResponse) int {
	if info.Config == nil {
		return 0
	}
	for _, port := range []int{provisioner.PortHTTP, provisioner.PortVNC, provisioner.PortRDP} {
		if _, ok := info.Config.ExposedPorts[nat.Port(strconv.Itoa(port)+"/tcp")]; ok {
			if info.HostConfig != nil {
				if _, published := info.HostConfig.PortBindings[nat.Port(strconv.Itoa(port)+"/tcp")]; !published {
					continue
				}
			}
			return port
		}
	}
	return 0
}

// protocolOf names the protocol of a published container port, for the URL.
func protocolOf(hostPort, containerPort int) string {
	switch {
	case hostPort == 0:
		return ""
	case containerPort == provisioner.PortVNC:
		return "vnc"
	case containerPort == provisioner.PortRDP:
		return "rdp"
	default:
		return "http"
	}
}

// hostPort is the host port the container port is published on (the first binding:
// IPv4 and IPv6 bindings of one publication share the port).
func hostPort(ports nat.PortMap, containerPort int) int {
	if containerPort == 0 {
		return 0
	}
	for _, b := range ports[nat.Port(strconv.Itoa(containerPort)+"/tcp")] {
		if n, err := strconv.Atoi(b.HostPort); err == nil && n > 0 {
			return n
		}
	}
	return 0
}

// engineError wraps an engine error with the provisioner sentinel of its kind.
func engineError(op string, err error) error {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", op, err)
	case client.IsErrConnectionFailed(err), cerrdefs.IsUnavailable(err):
		return fmt.Errorf("%s: %w: %w", op, provisioner.ErrUnavailable, err)
	case cerrdefs.IsNotFound(err):
		return fmt.Errorf("%s: %w: %w", op, provisioner.ErrNotFound, err)
	case cerrdefs.IsInvalidArgument(err):
		return fmt.Errorf("%s: %w: %w", op, provisioner.ErrInvalid, err)
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return fmt.Errorf("%s: %w: %w", op, provisioner.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
