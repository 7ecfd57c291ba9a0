package launch_test

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/settings"
)

// TestDesktopLifecycle runs a desktop through launch, stop and remove and checks
// what the engine and Guacamole have at each step.
func TestDesktopLifecycle(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	mkdirAll(t, filepath.Join(e.datasets, "p1", "raw"), 0o755)
	mkdirAll(t, filepath.Join(e.output, "p1", "results"), 0o777)
	ref := e.experiment(t, e.user, "p1", intp(4242), intp(4343), calipso.Session{
		SessionNumber: "7",
		DataSetPath:   `{'/p1/raw': {'bind': '/data', 'mode': 'ro'}, '/p1/results': {'bind': '/results', 'mode': 'rw'}}`,
	})

	r, err := e.svc.Launch(ctx, e.user, ref, desktopImage)
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	if r.State != calipso.Running || r.EngineName != provisioner.Name(e.instance, r.ID) || r.Experiment != "p1~7" {
		t.Errorf("record = %s %q %q, want running %q p1~7", r.State, r.EngineName, r.Experiment, provisioner.Name(e.instance, r.ID))
	}
	port, err := strconv.Atoi(r.HostPort)
	if err != nil || port <= 0 {
		t.Fatalf("host_port = %q, want the published port", r.HostPort)
	}

	t.Run("port reachable from the host", func(t *testing.T) {
		// A desktop image without log_regex is "running" once its process starts, which
		// may be before it listens (the engine's proxy accepts and closes meanwhile):
		// retry for a while, as guacd does.
		var banner string
		deadline := time.Now().Add(30 * time.Second) // generous: proves no hang only
		for time.Now().Before(deadline) {
			if banner = vncBanner(r.HostPort); banner == "RFB 003.008\n" {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("banner = %q, want the workload's RFB banner", banner)
	})

	t.Run("guacamole record", func(t *testing.T) {
		c, ok := readConnection(t, e.guacDB, r.EngineName)
		if !ok {
			t.Fatalf("no Guacamole connection named %s", r.EngineName)
		}
		want := map[string]string{"hostname": "guacd-sees-me", "port": r.HostPort, "password": r.VNCPassword}
		for k, v := range want {
			if c.params[k] != v {
				t.Errorf("param %s = %q, want %q", k, c.params[k], v)
			}
		}
		if c.protocol != "vnc" || c.users != 1 {
			t.Errorf("connection protocol %q with %d users, want vnc for 1 user", c.protocol, c.users)
		}
		if r.GuacamoleUsername == "" || r.GuacamolePassword == "" || r.VNCPassword == "" {
			t.Errorf("record lacks credentials: %+v", r)
		}
	})

	t.Run("container", func(t *testing.T) {
		info, ok := e.inspect(t, r.EngineName)
		if !ok {
			t.Fatal("no container")
		}
		if info.HostConfig.Memory != 64<<20 || info.HostConfig.NanoCPUs != 5e8 {
			t.Errorf("limits: memory %d nanocpus %d, want %d and %d", info.HostConfig.Memory, info.HostConfig.NanoCPUs, 64<<20, int64(5e8))
		}
		if info.Config.User != "4242:4343" {
			t.Errorf("user = %q, want the experiment's 4242:4343", info.Config.User)
		}
		wantLabels := map[string]string{
			provisioner.LabelManagedBy: "calipso", provisioner.LabelInstance: e.instance, provisioner.LabelOwner: "ana",
			provisioner.LabelResource: strconv.FormatInt(r.ID, 10), provisioner.LabelExperiment: "p1~7",
		}
		for k, v := range wantLabels {
			if info.Config.Labels[k] != v {
				t.Errorf("label %s = %q, want %q", k, info.Config.Labels[k], v)
			}
		}
		mounts := map[string]string{}
		for _, m := range info.Mounts {
			mounts[m.Destination] = fmt.Sprintf("%s rw=%v", m.Source, m.RW)
		}
		wantMounts := map[string]string{
			"/data":    filepath.Join(e.datasets, "p1", "raw") + " rw=false",
			"/results": filepath.Join(e.output, "p1", "results") + " rw=true",
		}
		for dst, want := range wantMounts {
			if mounts[dst] != want {
				t.Errorf("mount %s = %q, want %q", dst, mounts[dst], want)
			}
		}
		if info.Config.WorkingDir != "/results" {
			t.Errorf("working dir = %q, want the results mount", info.Config.WorkingDir)
		}
		if q := e.usage(t, e.user); q.MaxSimultaneous != 1 || q.MemoryBytes != 64<<20 {
			t.Errorf("usage = %+v, want one resource of 64M", q)
		}
	})

	stopped, err := e.svc.Stop(ctx, r)
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if stopped.State != calipso.Stopped {
		t.Errorf("after Stop: %s, want stopped", stopped.State)
	}
	if _, ok := readConnection(t, e.guacDB, r.EngineName); ok {
		t.Error("Guacamole connection still there after Stop")
	}
	if info, ok := e.inspect(t, r.EngineName); !ok || info.State.Running {
		t.Errorf("after Stop: container exists=%v running=%v, want kept and stopped", ok, ok && info.State.Running)
	}
	if q := e.usage(t, e.user); q.MaxSimultaneous != 0 {
		t.Errorf("usage after Stop = %+v, want released", q)
	}

	removed, err := e.svc.Remove(ctx, stopped)
	if err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if removed.State != calipso.Removed {
		t.Errorf("after Remove: %s, want removed", removed.State)
	}
	if _, ok := e.inspect(t, r.EngineName); ok {
		t.Error("container still there after Remove")
	}
	if again, err := e.svc.Remove(ctx, removed); err != nil || again.State != calipso.Removed {
		t.Errorf("second Remove = %s, %v; want removed, nil", again.State, err)
	}
	e.assertNothingLeft(t, e.user)
}

// TestIdentity: workloads run as the experiment's uid:gid, else the user's, else the
// settings'.
func TestIdentity(t *testing.T) {
	e := newEnv(t, envOptions{noGuac: true, edit: func(s *settings.Settings) { s.Workloads.UID, s.Workloads.GID = 3001, 3002 }})
	ctx := context.Background()
	e.newUser(t, "bea")
	if err := e.db.SetIdentity(ctx, "test", "bea", intp(2001), intp(2002), ""); err != nil {
		t.Fatalf("SetIdentity: %v", err)
	}
	withOwn, err := e.db.User(ctx, "bea")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		user     calipso.User
		uid, gid *int
		want     string
	}{
		{"experiment wins", withOwn, intp(1001), intp(1002), "1001:1002"},
		{"user when the experiment has none", withOwn, nil, nil, "2001:2002"},
		{"settings when neither has one", e.user, nil, nil, "3001:3002"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref := e.experiment(t, tt.user, "id"+itoa(i), tt.uid, tt.gid)
			r, err := e.svc.Launch(ctx, tt.user, ref, desktopImage)
			if err != nil {
				t.Fatalf("Launch: %v", err)
			}
			t.Cleanup(func() { _, _ = e.svc.Remove(context.Background(), r) })
			info, ok := e.inspect(t, r.EngineName)
			if !ok {
				t.Fatal("no container")
			}
			if info.Config.User != tt.want {
				t.Errorf("container user = %q, want %q", info.Config.User, tt.want)
			}
		})
	}
}

// TestVNCPasswordByFile: the VNC password reaches the desktop as a file only its uid
// reads, named by VNC_PASSWORD_FILE, and is nowhere in what the engine shows of the
// container (docker inspect), its environment included.
func TestVNCPasswordByFile(t *testing.T) {
	e := newEnv(t, envOptions{noGuac: true})
	ctx := context.Background()
	ref := e.experiment(t, e.user, "pw", intp(4242), intp(4343))
	r, err := e.svc.Launch(ctx, e.user, ref, desktopImage)
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	if r.VNCPassword == "" {
		t.Fatal("no VNC password")
	}
	info, ok := e.inspect(t, r.EngineName)
	if !ok {
		t.Fatal("no container")
	}
	if shown, _ := json.Marshal(info); strings.Contains(string(shown), r.VNCPassword) {
		t.Errorf("docker inspect shows the VNC password: %v", info.Config.Env)
	}
	if !slices.Contains(info.Config.Env, "VNC_PASSWORD_FILE=/run/calipso/vnc_password") {
		t.Errorf("env = %v, want VNC_PASSWORD_FILE", info.Config.Env)
	}
	rc, _, err := e.cli.CopyFromContainer(ctx, r.EngineName, "/run/calipso/vnc_password")
	if err != nil {
		t.Fatalf("copy the password file out: %v", err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	hdr, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	content, _ := io.ReadAll(tr)
	if string(content) != r.VNCPassword || hdr.Uid != 4242 || hdr.Gid != 4343 || hdr.Mode&0o777 != 0o400 {
		t.Errorf("password file: %q, owner %d:%d, mode %o; want the password, 4242:4343, 0400", content, hdr.Uid, hdr.Gid, hdr.Mode&0o777)
	}
	if _, err := e.svc.Remove(ctx, r); err != nil {
		t.Fatal(err)
	}
	e.assertNothingLeft(t, e.user)
}

// TestPidsLimit: every workload is held to a number of processes (a fork bomb in a
// desktop must not take the host): the settings' workloads.pids_limit, unless the
// image sets its own.
func TestPidsLimit(t *testing.T) {
	e := newEnv(t, envOptions{noGuac: true, edit: func(s *settings.Settings) { s.Workloads.PidsLimit = 300 }})
	ctx := context.Background()
	own := calipso.Image{PublicName: "forky", Image: e.workload, Protocol: "vnc", CPU: 0.5, Memory: "64M", HDD: "1G", ResourceType: "docker", PidsLimit: 64}
	if _, err := e.db.PutImage(ctx, "test", own); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		image string
		want  int64
	}{{desktopImage, 300}, {"forky", 64}} {
		t.Run(tt.image, func(t *testing.T) {
			r, err := e.svc.Launch(ctx, e.user, "pids"+tt.image, tt.image)
			if err != nil {
				t.Fatalf("Launch: %v", err)
			}
			t.Cleanup(func() { _, _ = e.svc.Remove(context.Background(), r) })
			info, ok := e.inspect(t, r.EngineName)
			if !ok {
				t.Fatal("no container")
			}
			if got := info.HostConfig.PidsLimit; got == nil || *got != tt.want {
				t.Errorf("container pids limit = %v, want %d", got, tt.want)
			}
		})
	}
}

// TestNotebookURL: an http image whose log prints a token is reached by a URL with it.
func TestNotebookURL(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	ref := e.experiment(t, e.user, "nb", nil, nil)
	r, err := e.svc.Launch(ctx, e.user, ref, notebookImage)
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	m := regexp.MustCompile(`^http://127\.0\.0\.1:([0-9]+)/\?token=[0-9a-f]{48}$`).FindStringSubmatch(r.HostPort)
	if m == nil {
		t.Fatalf("host_port = %q, want http://127.0.0.1:<port>/?token=<hex>", r.HostPort)
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	resp, err := hc.Get(r.HostPort)
	if err != nil {
		t.Fatalf("GET %s: %v", r.HostPort, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "calipso test workload") {
		t.Errorf("GET %s = %q, want the workload's page", r.HostPort, body)
	}
	if n := guacConnections(t, e.guacDB); n != 0 {
		t.Errorf("%d Guacamole connections for a notebook, want none", n)
	}
	if _, err := e.svc.Remove(ctx, r); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	e.assertNothingLeft(t, e.user)
}

// TestOnePerSession: a second launch for the same session is refused while the first
// lives, for that reason and not the quota.
func TestOnePerSession(t *testing.T) {
	e := newEnv(t, envOptions{noGuac: true})
	ctx := context.Background()
	ref := e.experiment(t, e.user, "one", nil, nil)
	first, err := e.svc.Launch(ctx, e.user, ref, desktopImage)
	if err != nil {
		t.Fatalf("first Launch: %v", err)
	}
	_, err = e.svc.Launch(ctx, e.user, ref, notebookImage)
	var qe *store.QuotaError
	if !errors.Is(err, store.ErrConflict) || errors.As(err, &qe) {
		t.Fatalf("second Launch = %v, want a conflict that is not a quota error", err)
	}
	if q := e.usage(t, e.user); q.MaxSimultaneous != 1 {
		t.Errorf("usage = %+v, want 1", q)
	}
	if n := len(e.containers(t)); n != 1 {
		t.Errorf("%d containers, want 1", n)
	}
	// Once the first is stopped the session is free again.
	if _, err := e.svc.Stop(ctx, first); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	second, err := e.svc.Launch(ctx, e.user, ref, desktopImage)
	if err != nil {
		t.Fatalf("Launch after Stop: %v", err)
	}
	for _, r := range []calipso.Resource{first, second} {
		if _, err := e.svc.Remove(ctx, r); err != nil {
			t.Fatalf("Remove: %v", err)
		}
	}
	e.assertNothingLeft(t, e.user)
}

// vncBanner reads the first line the server at 127.0.0.1:port sends ("" on error).
func vncBanner(port string) string {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", port), 5*time.Second)
	if err != nil {
		return ""
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(conn).ReadString('\n')
	return line
}
