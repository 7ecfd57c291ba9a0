package docker_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/docker/go-connections/nat"

	"github.com/calipsoplus/calipso/internal/testenv"
	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/provisioner/docker"
)

const tokenRegex = `token=([0-9a-f]+)`

// newProvisioner returns a provisioner of a fresh installation on the test engine,
// publishing on the loopback address.
func newProvisioner(t testing.TB, edit func(*docker.Config)) *docker.Provisioner {
	t.Helper()
	testenv.DockerClient(t) // skips when there is no engine
	cfg := docker.Config{
		Instance:       testenv.Instance(t),
		HostAddress:    "127.0.0.1",
		PublishAddress: "127.0.0.1",
		ReadyTimeout:   30 * time.Second,
		StopTimeout:    5 * time.Second,
		Logger:         slog.New(slog.DiscardHandler),
	}
	if edit != nil {
		edit(&cfg)
	}
	p, err := docker.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("docker.New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// workloadSpec is a spec of the test workload as a non-root user, ready when it
// prints its token.
func workloadSpec(t testing.TB, instance string, id int64) provisioner.Spec {
	t.Helper()
	return provisioner.Spec{
		Instance:   instance,
		ResourceID: id,
		Owner:      "ana",
		Experiment: "20230123~1",
		Image:      testenv.WorkloadImage(t),
		Protocol:   "http",
		UID:        1000,
		GID:        1000,
		LogRegex:   tokenRegex,
	}
}

// containerLog returns what the container wrote to stdout and stderr so far.
func containerLog(t testing.TB, cli *client.Client, name string) string {
	t.Helper()
	r, err := cli.ContainerLogs(context.Background(), name, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatalf("logs of %s: %v", name, err)
	}
	defer r.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, r); err != nil {
		t.Fatalf("read logs of %s: %v", name, err)
	}
	return out.String()
}

func TestStartStopRemove(t *testing.T) {
	t.Parallel()
	tests := []struct {
		protocol string
		// check proves the workload itself answers on the published port.
		check func(t *testing.T, inst provisioner.Workload)
	}{
		{"http", func(t *testing.T, inst provisioner.Workload) {
			want := regexp.MustCompile(`^http://127\.0\.0\.1:` + strconv.Itoa(inst.Port) + `/\?token=[0-9a-f]{48}$`)
			if !want.MatchString(inst.URL) {
				t.Errorf("URL = %q, want %s", inst.URL, want)
			}
			if !strings.Contains(inst.URL, inst.LogMatch) || len(inst.LogMatch) != 48 {
				t.Errorf("LogMatch = %q, not the URL's token", inst.LogMatch)
			}
			resp, err := http.Get(inst.URL)
			if err != nil {
				t.Fatalf("GET %s: %v", inst.URL, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "calipso test workload") {
				t.Errorf("GET %s = %d %q", inst.URL, resp.StatusCode, body)
			}
		}},
		{"vnc", func(t *testing.T, inst provisioner.Workload) {
			if inst.URL != "" {
				t.Errorf("URL = %q, want none for vnc", inst.URL)
			}
			conn, err := net.Dial("tcp", net.JoinHostPort(inst.Host, strconv.Itoa(inst.Port)))
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer conn.Close()
			banner, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil || banner != "RFB 003.008\n" {
				t.Errorf("VNC banner = %q, %v", banner, err)
			}
		}},
		{"rdp", func(t *testing.T, inst provisioner.Workload) {
			conn, err := net.Dial("tcp", net.JoinHostPort(inst.Host, strconv.Itoa(inst.Port)))
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			conn.Close()
		}},
	}
	for i, tt := range tests {
		t.Run(tt.protocol, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := newProvisioner(t, nil)
			spec := workloadSpec(t, p.Instance(), int64(i+1))
			spec.Protocol = tt.protocol

			inst, err := p.Start(ctx, spec)
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			if inst.Name != spec.Name() || inst.State != provisioner.StateRunning || inst.Host != "127.0.0.1" || inst.Port == 0 ||
				inst.Owner != "ana" || inst.ResourceID != spec.ResourceID || inst.ID == "" {
				t.Fatalf("Start = %+v", inst)
			}
			tt.check(t, inst)

			if err := p.Stop(ctx, spec.Name()); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			stopped, err := p.Inspect(ctx, spec.Name())
			if err != nil {
				t.Fatalf("Inspect after Stop: %v", err)
			}
			// The workload exits on SIGTERM by itself: 0, not 137 (killed after the timeout).
			if stopped.State != provisioner.StateStopped || stopped.Reason != "exited with code 0" {
				t.Errorf("after Stop: state %s (%s), want stopped, exited with code 0", stopped.State, stopped.Reason)
			}
			if conn, err := net.Dial("tcp", net.JoinHostPort(inst.Host, strconv.Itoa(inst.Port))); err == nil {
				conn.Close()
				t.Errorf("port %d still accepts connections after Stop", inst.Port)
			}

			if err := p.Remove(ctx, spec.Name()); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			if _, err := p.Inspect(ctx, spec.Name()); !errors.Is(err, provisioner.ErrNotFound) {
				t.Errorf("Inspect after Remove: %v, want ErrNotFound", err)
			}
		})
	}
}

func TestContainerConfiguration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cli := testenv.DockerClient(t)
	p := newProvisioner(t, nil)
	spec := workloadSpec(t, p.Instance(), 42)
	spec.CPUs = 0.5
	spec.MemoryBytes = 64 << 20
	spec.UID, spec.GID = 1234, 2345
	spec.ExtraGroups = []int{3000, 3001}
	spec.WorkDir = "/work/dir"
	spec.Env = map[string]string{"CALIPSO_USER": "ana", "LANG": "C.UTF-8"}

	if _, err := p.Start(ctx, spec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	info, err := cli.ContainerInspect(ctx, spec.Name())
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	hc := info.HostConfig
	checks := []struct {
		what      string
		got, want any
	}{
		{"memory", hc.Memory, int64(64 << 20)},
		{"memory+swap", hc.MemorySwap, int64(64 << 20)},
		{"nano CPUs", hc.NanoCPUs, int64(500_000_000)},
		{"user", info.Config.User, "1234:2345"},
		{"extra groups", strings.Join(hc.GroupAdd, ","), "3000,3001"},
		{"work dir", info.Config.WorkingDir, "/work/dir"},
		{"privileged", hc.Privileged, false},
		{"security options", strings.Join(hc.SecurityOpt, ","), "no-new-privileges"},
		{"capabilities dropped", strings.Join(hc.CapDrop, ","), "ALL"},
		{"capabilities added", len(hc.CapAdd), 0},
		{"restart policy", string(hc.RestartPolicy.Name), "no"},
		{"env has CALIPSO_USER", slices.Contains(info.Config.Env, "CALIPSO_USER=ana"), true},
		{"env has LANG", slices.Contains(info.Config.Env, "LANG=C.UTF-8"), true},
	}
	for _, c := range checks {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
	for k, v := range spec.Labels() {
		if got := info.Config.Labels[k]; got != v {
			t.Errorf("label %s = %q, want %q", k, got, v)
		}
	}
	// The process really runs as that identity, not just the configuration.
	log := containerLog(t, cli, spec.Name())
	if !strings.Contains(log, "uid=1234 gid=2345 groups=[") {
		t.Errorf("log %q does not show uid 1234 gid 2345", log)
	}
	for _, g := range []string{"3000", "3001"} {
		if !regexp.MustCompile(`groups=\[[^]]*\b` + g + `\b`).MatchString(log) {
			t.Errorf("log %q does not show supplementary group %s", log, g)
		}
	}
}

func TestMounts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cli := testenv.DockerClient(t)
	p := newProvisioner(t, nil)
	datasets, results := t.TempDir(), t.TempDir()
	// World-writable both: only the read-only mount may stop the workload's write.
	for _, dir := range []string{datasets, results} {
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	spec := workloadSpec(t, p.Instance(), 1)
	spec.Mounts = []provisioner.Mount{
		{Source: datasets, Target: "/data", ReadOnly: true},
		{Source: results, Target: "/results"},
	}
	spec.Env = map[string]string{"WRITE_TEST": "/data/probe,/results/probe"}

	if _, err := p.Start(ctx, spec); err != nil { // ready after the probes
		t.Fatalf("Start: %v", err)
	}
	log := containerLog(t, cli, spec.Name())
	if !strings.Contains(log, "write /results/probe: ok") || !strings.Contains(log, "write /data/probe: error") {
		t.Errorf("workload log:\n%s", log)
	}
	if _, err := os.Stat(filepath.Join(results, "probe")); err != nil {
		t.Errorf("read-write mount: %v", err)
	}
	if _, err := os.Stat(filepath.Join(datasets, "probe")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("read-only mount was written: %v", err)
	}
	info, err := cli.ContainerInspect(ctx, spec.Name())
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	for _, m := range info.Mounts {
		if wantRW := m.Destination == "/results"; m.RW != wantRW {
			t.Errorf("mount %s: RW = %v, want %v", m.Destination, m.RW, wantRW)
		}
	}
}

func TestStartRefusesInvalidSpecs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newProvisioner(t, nil)
	existing := t.TempDir()
	tests := []struct {
		name string
		edit func(*provisioner.Spec)
		want string // in the error message
	}{
		{"image not on the engine", func(s *provisioner.Spec) { s.Image = "calipso-test-no-such-image:" + testenv.RandomHex(4) }, "is not on the engine"},
		{"malformed image reference", func(s *provisioner.Spec) { s.Image = "UPPER/Case::x" }, "invalid"},
		{"root", func(s *provisioner.Spec) { s.UID = 0 }, "root"},
		{"root's group", func(s *provisioner.Spec) { s.GID = 0 }, "gid 0"},
		{"root's group as a supplementary group", func(s *provisioner.Spec) { s.ExtraGroups = []int{100, 0} }, "group 0"},
		{"relative mount source", func(s *provisioner.Spec) {
			s.Mounts = []provisioner.Mount{{Source: "data", Target: "/data", ReadOnly: true}}
		}, "absolute"},
		{"relative mount target", func(s *provisioner.Spec) { s.Mounts = []provisioner.Mount{{Source: existing, Target: "data"}} }, "absolute"},
		{"mount source missing on the host", func(s *provisioner.Spec) {
			s.Mounts = []provisioner.Mount{{Source: filepath.Join(existing, "missing"), Target: "/data"}}
		}, "does not exist"},
		{"relative work dir", func(s *provisioner.Spec) { s.WorkDir = "home" }, "not absolute"},
		{"bad log regex", func(s *provisioner.Spec) { s.LogRegex = "token=(" }, "log regex"},
		{"other installation", func(s *provisioner.Spec) { s.Instance = "someone-else" }, "installation"},
		{"malformed env", func(s *provisioner.Spec) { s.Env = map[string]string{"A=B": "c"} }, "environment"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := workloadSpec(t, p.Instance(), int64(i+1))
			tt.edit(&spec)
			_, err := p.Start(ctx, spec)
			if !errors.Is(err, provisioner.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Start error = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
			if _, err := p.Inspect(ctx, spec.Name()); !errors.Is(err, provisioner.ErrNotFound) {
				t.Errorf("something was left behind: Inspect = %v", err)
			}
		})
	}
	list, err := p.List(ctx)
	if err != nil || len(list) != 0 {
		t.Errorf("List = %v, %v; want nothing left behind", list, err)
	}
}

func TestNotReady(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"log never matches", map[string]string{"NO_TOKEN": "1"}, "within"},
		{"exits before matching", map[string]string{"EXIT_CODE": "3"}, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := newProvisioner(t, func(c *docker.Config) { c.ReadyTimeout = 2 * time.Second })
			spec := workloadSpec(t, p.Instance(), int64(i+1))
			spec.Env = tt.env
			inst, err := p.Start(ctx, spec)
			if !errors.Is(err, provisioner.ErrNotReady) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Start error = %v, want ErrNotReady mentioning %q", err, tt.want)
			}
			// The caller removes it: Start says what to remove and leaves it there.
			if inst.Name != spec.Name() {
				t.Errorf("Start returned instance %q, want %q", inst.Name, spec.Name())
			}
			if _, err := p.Inspect(ctx, spec.Name()); err != nil {
				t.Errorf("Inspect: %v", err)
			}
			if err := p.Remove(ctx, inst.Name); err != nil {
				t.Errorf("Remove: %v", err)
			}
		})
	}
}

func TestForeignContainerIsLeftAlone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cli := testenv.DockerClient(t)
	p := newProvisioner(t, nil)
	spec := workloadSpec(t, p.Instance(), 1)
	// Same name, but not made by Calipso (only the instance label, for the test's cleanup).
	_, err := cli.ContainerCreate(ctx, &container.Config{
		Image:  spec.Image,
		Labels: map[string]string{provisioner.LabelInstance: p.Instance()},
	}, nil, nil, nil, spec.Name())
	if err != nil {
		t.Fatalf("create foreign container: %v", err)
	}

	if _, err := p.Start(ctx, spec); !errors.Is(err, provisioner.ErrInvalid) {
		t.Errorf("Start over a foreign container: %v, want ErrInvalid", err)
	}
	if _, err := p.Inspect(ctx, spec.Name()); !errors.Is(err, provisioner.ErrNotFound) {
		t.Errorf("Inspect of a foreign container: %v, want ErrNotFound", err)
	}
	if err := p.Remove(ctx, spec.Name()); !errors.Is(err, provisioner.ErrInvalid) {
		t.Errorf("Remove of a foreign container: %v, want ErrInvalid", err)
	}
	if err := p.Stop(ctx, spec.Name()); !errors.Is(err, provisioner.ErrInvalid) {
		t.Errorf("Stop of a foreign container: %v, want ErrInvalid", err)
	}
	if _, err := cli.ContainerInspect(ctx, spec.Name()); err != nil {
		t.Errorf("the foreign container is gone: %v", err)
	}
}

func TestEngineUnreachable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, err := docker.New(ctx, docker.Config{Host: "unix:///nonexistent.sock", Instance: "unreachable"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer p.Close()
	spec := provisioner.Spec{Instance: "unreachable", ResourceID: 1, Image: "x", UID: 1000, GID: 1000}
	calls := []struct {
		name string
		call func() error
	}{
		{"Ping", func() error { return p.Ping(ctx) }},
		{"Start", func() error { _, err := p.Start(ctx, spec); return err }},
		{"Stop", func() error { return p.Stop(ctx, spec.Name()) }},
		{"Remove", func() error { return p.Remove(ctx, spec.Name()) }},
		{"Inspect", func() error { _, err := p.Inspect(ctx, spec.Name()); return err }},
		{"List", func() error { _, err := p.List(ctx); return err }},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			if err := c.call(); !errors.Is(err, provisioner.ErrUnavailable) {
				t.Errorf("%s: %v, want ErrUnavailable", c.name, err)
			}
		})
	}
}

// TestCPUTime: the engine's CPU counter of a busy workload grows and an idle one's
// hardly does, over the same seconds (the lifecycle's CPU signal).
func TestCPUTime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newProvisioner(t, nil)
	specs := map[string]provisioner.Spec{}
	for i, mode := range []string{"busy", "idle"} {
		spec := workloadSpec(t, p.Instance(), int64(i+1))
		if mode == "busy" {
			spec.Env = map[string]string{"BUSY": "1"}
		}
		if _, err := p.Start(ctx, spec); err != nil {
			t.Fatalf("Start %s: %v", mode, err)
		}
		specs[mode] = spec
	}
	read := func(mode string) time.Duration {
		t.Helper()
		d, err := p.CPUTime(ctx, specs[mode].Name())
		if err != nil {
			t.Fatalf("CPUTime %s: %v", mode, err)
		}
		return d
	}
	busy0, idle0 := read("busy"), read("idle")
	time.Sleep(2 * time.Second) // the window the counters are compared over, not a timed assertion
	busy, idle := read("busy")-busy0, read("idle")-idle0
	if busy < 500*time.Millisecond || busy < 20*idle {
		t.Fatalf("over two seconds the busy workload used %v of CPU and the idle one %v", busy, idle)
	}
	if _, err := p.CPUTime(ctx, "calipso-no-such-workload"); !errors.Is(err, provisioner.ErrNotFound) {
		t.Errorf("CPUTime of no workload: %v", err)
	}
}

func TestOutOfMemoryIsAnError(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cli := testenv.DockerClient(t)
	p := newProvisioner(t, nil)
	spec := workloadSpec(t, p.Instance(), 1)
	spec.MemoryBytes = 16 << 20
	spec.Env = map[string]string{"ALLOC_MB": "256"}
	spec.LogRegex = ""
	if _, err := p.Start(ctx, spec); err != nil && !errors.Is(err, provisioner.ErrNotReady) {
		t.Fatalf("Start: %v", err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	exited, errc := cli.ContainerWait(waitCtx, spec.Name(), container.WaitConditionNotRunning)
	select {
	case <-exited:
	case err := <-errc:
		t.Fatalf("wait: %v", err)
	}
	inst, err := p.Inspect(ctx, spec.Name())
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if inst.State != provisioner.StateError || !strings.Contains(inst.Reason, "OOMKilled") {
		t.Errorf("Inspect = %s (%s), want error OOMKilled", inst.State, inst.Reason)
	}
}

// TestSecretFiles: the spec's secrets reach the workload as files of
// provisioner.SecretsDir that its uid owns and only it may read, and appear nowhere in
// what the engine shows of the container (docker inspect: its environment, labels,
// command); they stay across Stop and Start and go with the container.
func TestSecretFiles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cli := testenv.DockerClient(t)
	p := newProvisioner(t, nil)
	secret := "vnc-" + testenv.RandomHex(8)
	spec := workloadSpec(t, p.Instance(), 1)
	spec.UID, spec.GID = 1234, 2345
	spec.Secrets = map[string]string{"vnc_password": secret}
	file := provisioner.SecretPath("vnc_password")
	spec.Env = map[string]string{"VNC_PASSWORD_FILE": file, "READ_TEST": file + "," + provisioner.SecretsDir}
	if _, err := p.Start(ctx, spec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	want := fmt.Sprintf("read %s: mode=-r-------- uid=1234 gid=2345 content=%q", file, secret)
	// The directory is root's: the workload cannot put another file in its place.
	dir := "read /run/calipso: mode=-rwxr-xr-x uid=0 gid=0"
	waitLog(t, cli, spec.Name(), 1, want, dir)
	info, err := cli.ContainerInspect(ctx, spec.Name())
	if err != nil {
		t.Fatal(err)
	}
	if shown, _ := json.Marshal(info); strings.Contains(string(shown), secret) {
		t.Errorf("docker inspect shows the secret:\n%s", shown)
	}

	if err := p.Stop(ctx, spec.Name()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Start(ctx, spec); err != nil {
		t.Fatalf("Start after Stop: %v", err)
	}
	waitLog(t, cli, spec.Name(), 2, want) // the second run's probe
}

// waitLog waits until each of lines is n times in the container's log. Start returns
// once the token line (stderr) is logged, and the engine copies stdout apart: what the
// workload printed before may be logged just after.
func waitLog(t *testing.T, cli *client.Client, name string, n int, lines ...string) {
	t.Helper()
	var log string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		log = containerLog(t, cli, name)
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.Count(log, l) < n }) {
			return
		}
	}
	t.Errorf("the log of %s lacks %d of each of %q:\n%s", name, n, lines, log)
}

// TestPidsLimit: a fork bomb in the workload is held to Spec.PidsLimit. The workload
// starts child processes until the kernel refuses one; under the limit it gets fewer
// than the limit (the pids controller counts threads too), and the container's pids
// cgroup carries the limit. Without a limit the same workload gets every child it
// asks for: the test's fork bomb is real.
func TestPidsLimit(t *testing.T) {
	t.Parallel()
	const forks = 100
	report := regexp.MustCompile(`fork test: started (\d+) of \d+ \(refused: (.*)\) pids\.max=(\S+) pids\.current=(\S+)`)
	tests := []struct {
		name  string
		limit int64
	}{
		{"held to the limit", 32},
		{"no limit", 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cli := testenv.DockerClient(t)
			p := newProvisioner(t, nil)
			spec := workloadSpec(t, p.Instance(), int64(i+1))
			spec.PidsLimit = tt.limit
			spec.Env = map[string]string{"FORK_TEST": strconv.Itoa(forks)}
			if _, err := p.Start(ctx, spec); err != nil { // ready once the fork test is over
				t.Fatalf("Start: %v\n%s", err, containerLog(t, cli, spec.Name()))
			}
			info, err := cli.ContainerInspect(ctx, spec.Name())
			if err != nil {
				t.Fatalf("inspect: %v", err)
			}
			// Printed before the token line, but on stdout, which the engine logs apart.
			var m []string
			var log string
			for deadline := time.Now().Add(20 * time.Second); m == nil && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				log = containerLog(t, cli, spec.Name())
				m = report.FindStringSubmatch(log)
			}
			if m == nil {
				t.Fatalf("no fork test report in the log:\n%s", log)
			}
			started, _ := strconv.Atoi(m[1])
			refused, pidsMax, pidsCurrent := m[2], m[3], m[4]
			t.Logf("started %d of %d, refused: %s, pids.max=%s pids.current=%s", started, forks, refused, pidsMax, pidsCurrent)

			if tt.limit == 0 {
				if info.HostConfig.PidsLimit != nil && *info.HostConfig.PidsLimit > 0 {
					t.Errorf("inspect: pids limit %d, want none", *info.HostConfig.PidsLimit)
				}
				if started != forks || pidsMax != "max" {
					t.Errorf("without a limit: started %d of %d, pids.max %s; want all of them, max", started, forks, pidsMax)
				}
				return
			}
			if got := info.HostConfig.PidsLimit; got == nil || *got != tt.limit {
				t.Errorf("inspect: pids limit %v, want %d", got, tt.limit)
			}
			if pidsMax != strconv.FormatInt(tt.limit, 10) {
				t.Errorf("the container's pids.max = %s, want %d", pidsMax, tt.limit)
			}
			if current, err := strconv.ParseInt(pidsCurrent, 10, 64); err != nil || current > tt.limit {
				t.Errorf("the container's pids.current = %s, want at most %d", pidsCurrent, tt.limit)
			}
			if started >= int(tt.limit) || !strings.Contains(refused, "resource temporarily unavailable") {
				t.Errorf("the fork bomb started %d children (refused: %s); want fewer than %d, then EAGAIN", started, refused, tt.limit)
			}
		})
	}
}

// BenchmarkEngineCreateStart is the baseline: create, start and remove the test image
// with the bare client, publishing the same port as the provisioner does.
func BenchmarkEngineCreateStart(b *testing.B) {
	ctx := context.Background()
	cli := testenv.DockerClient(b)
	image := testenv.WorkloadImage(b)
	instance := testenv.Instance(b)
	port := nat.Port("8888/tcp")
	n := 0
	for b.Loop() {
		n++
		name := fmt.Sprintf("calipso-%s-%d", instance, n)
		created, err := cli.ContainerCreate(ctx, &container.Config{
			Image:        image,
			User:         "1000:1000",
			Labels:       map[string]string{provisioner.LabelInstance: instance},
			ExposedPorts: nat.PortSet{port: struct{}{}},
		}, &container.HostConfig{
			PortBindings: nat.PortMap{port: []nat.PortBinding{{HostIP: "127.0.0.1"}}},
		}, nil, nil, name)
		if err != nil {
			b.Fatalf("create: %v", err)
		}
		if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
			b.Fatalf("start: %v", err)
		}
		if err := cli.ContainerRemove(ctx, created.ID, container.RemoveOptions{Force: true}); err != nil {
			b.Fatalf("remove: %v", err)
		}
	}
}

// BenchmarkProvisionerStart is Start (with a published port, no log wait) and Remove
// through the provisioner, to compare with BenchmarkEngineCreateStart.
func BenchmarkProvisionerStart(b *testing.B) {
	ctx := context.Background()
	p := newProvisioner(b, nil)
	spec := workloadSpec(b, p.Instance(), 1)
	spec.LogRegex = ""
	for b.Loop() {
		spec.ResourceID++
		if _, err := p.Start(ctx, spec); err != nil {
			b.Fatalf("Start: %v", err)
		}
		if err := p.Remove(ctx, spec.Name()); err != nil {
			b.Fatalf("Remove: %v", err)
		}
	}
}
