package demo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/calipsoplus/calipso/internal/testenv"
	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/provisioner/docker"
)

// demoImages builds the demo images from this test binary (an executable like
// calipso: TestMain runs the workloads) and removes the ones it built when the test
// ends.
func demoImages(t *testing.T, cli *client.Client) map[Kind]string {
	t.Helper()
	ctx := context.Background()
	exe, err := Inspect("")
	if err != nil {
		t.Fatal(err)
	}
	refs := map[Kind]string{}
	for _, k := range Kinds {
		ref, built, err := exe.EnsureImage(ctx, cli, k)
		if err != nil {
			t.Fatal(err)
		}
		if built {
			t.Cleanup(func() {
				if _, err := cli.ImageRemove(context.Background(), ref, image.RemoveOptions{PruneChildren: true}); err != nil {
					t.Logf("remove %s: %v", ref, err)
				}
			})
		}
		if _, again, err := exe.EnsureImage(ctx, cli, k); err != nil || again {
			t.Fatalf("second EnsureImage of %s: built again %v, %v", ref, again, err)
		}
		info, err := cli.ImageInspect(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.Labels[LabelDemo] != string(k) || strings.Join(info.Config.Entrypoint, " ") != "/calipso demo-workload "+string(k) {
			t.Fatalf("%s: labels %v, entrypoint %v", ref, info.Config.Labels, info.Config.Entrypoint)
		}
		refs[k] = ref
	}
	return refs
}

func containerLog(t *testing.T, cli *client.Client, name string) string {
	t.Helper()
	rc, err := cli.ContainerLogs(context.Background(), name, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatalf("log of %s: %v", name, err)
	}
	defer rc.Close()
	var out bytes.Buffer
	stdcopy.StdCopy(&out, &out, rc)
	return out.String()
}

// The demo images started by the real Docker provisioner, as Calipso launches them:
// a non-root uid, every capability dropped, no-new-privileges, limits.
func TestDemoWorkloadsOnDocker(t *testing.T) {
	cli := testenv.DockerClient(t)
	refs := demoImages(t, cli)
	instance := testenv.Instance(t)
	ctx := context.Background()
	p, err := docker.New(ctx, docker.Config{Instance: instance, HostAddress: "127.0.0.1", PublishAddress: "127.0.0.1", ReadyTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	passwordFile := map[string]string{"VNC_PASSWORD_FILE": provisioner.SecretPath("vnc_password")}
	cases := []struct {
		name     string
		kind     Kind
		uid, gid int
		env      map[string]string
		password string // the VNC password, a secret file when env names it
	}{
		{"notebook, random token", KindNotebook, 4242, 4343, nil, ""},
		{"notebook, JUPYTER_TOKEN", KindNotebook, 2001, 2000, map[string]string{"JUPYTER_TOKEN": testToken}, ""},
		{"desktop, VNC password file (as Calipso launches it)", KindDesktop, 2001, 2000, passwordFile, "pw-4-demo"},
		{"desktop, VNC_PASSWORD", KindDesktop, 2002, 2000, map[string]string{"VNC_PASSWORD": "pw-in-env"}, "pw-in-env"},
		{"desktop, no password", KindDesktop, 31337, 31337, map[string]string{"VNC_PASSWORD": ""}, ""},
	}
	for i, c := range cases {
		t.Run("provisioner/"+c.name, func(t *testing.T) {
			im := Record(c.kind, refs[c.kind])
			spec := provisioner.Spec{
				Instance: instance, ResourceID: int64(i + 1), Owner: "alice", Experiment: "2019001~2019001-01",
				Image: im.Image, Protocol: im.Protocol, CPUs: 0.5, MemoryBytes: 256 << 20,
				UID: c.uid, GID: c.gid, ExtraGroups: []int{100}, Env: c.env, LogRegex: im.LogRegex,
			}
			if c.env["VNC_PASSWORD_FILE"] != "" {
				spec.Secrets = map[string]string{"vnc_password": c.password}
			}
			inst, err := p.Start(ctx, spec)
			t.Cleanup(func() { p.Remove(context.Background(), spec.Name()) })
			if err != nil {
				t.Fatalf("start: %v\n%s", err, containerLog(t, cli, spec.Name()))
			}

			switch c.kind {
			case KindNotebook:
				if want := c.env["JUPYTER_TOKEN"]; want != "" && inst.LogMatch != want {
					t.Errorf("token %q, want JUPYTER_TOKEN %q", inst.LogMatch, want)
				}
				if !regexp.MustCompile(`^http://127\.0\.0\.1:\d+/\?token=[0-9a-f]{48}$`).MatchString(inst.URL) {
					t.Fatalf("URL %q", inst.URL)
				}
				for url, want := range map[string]int{inst.URL: 200, strings.Split(inst.URL, "?")[0]: 403} {
					resp, err := http.Get(url)
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != want {
						t.Errorf("GET %s: %d, want %d: %s", url, resp.StatusCode, want, body)
					}
				}
			case KindDesktop:
				client, err := dialVNC(t, "127.0.0.1:"+strconv.Itoa(inst.Port), 8, c.password)
				if err != nil {
					t.Fatalf("VNC handshake: %v", err)
				}
				if client.name != DesktopName {
					t.Errorf("desktop name %q", client.name)
				}
				client.update(t, 0, 0, 16, 16, 4)
				if c.password != "" {
					if _, err := dialVNC(t, "127.0.0.1:"+strconv.Itoa(inst.Port), 8, "wrong"); err == nil {
						t.Error("a wrong VNC password was accepted")
					}
				}
			}

			identity := fmt.Sprintf("uid=%d gid=%d groups=", c.uid, c.gid)
			if log := containerLog(t, cli, spec.Name()); !strings.Contains(log, identity) || !regexp.MustCompile(`groups=(\S+,)?100\b`).MatchString(log) {
				t.Errorf("log lacks %q with group 100:\n%s", identity, log)
			}

			// SIGTERM ends it at once, with code 0 (the stop timeout would be 10s).
			start := time.Now()
			if err := p.Stop(ctx, spec.Name()); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("stop took %s", took)
			}
			if got, err := p.Inspect(ctx, spec.Name()); err != nil || got.State != provisioner.StateStopped || got.Reason != "exited with code 0" {
				t.Errorf("after stop: %+v, %v", got, err)
			}
		})
	}
	t.Run("read-only root", func(t *testing.T) { readOnlyRoot(t, cli, refs, instance) })
}

// readOnlyRoot checks that a read-only root filesystem is no problem: the
// workloads write nothing.
func readOnlyRoot(t *testing.T, cli *client.Client, refs map[Kind]string, instance string) {
	ctx := context.Background()
	for _, k := range Kinds {
		t.Run(string(k), func(t *testing.T) {
			name := "calipso-" + instance + "-ro-" + string(k)
			_, err := cli.ContainerCreate(ctx, &container.Config{
				Image: refs[k], User: "54321:54321", Labels: map[string]string{provisioner.LabelInstance: instance},
			}, &container.HostConfig{
				ReadonlyRootfs: true, CapDrop: []string{"ALL"}, SecurityOpt: []string{"no-new-privileges"},
				NetworkMode: "none",
			}, nil, nil, name)
			if err != nil {
				t.Fatal(err)
			}
			if err := cli.ContainerStart(ctx, name, container.StartOptions{}); err != nil {
				t.Fatal(err)
			}
			want := "Calipso demo " + string(k)
			deadline := time.Now().Add(20 * time.Second)
			for !strings.Contains(containerLog(t, cli, name), want) {
				if time.Now().After(deadline) {
					t.Fatalf("no %q in the log:\n%s", want, containerLog(t, cli, name))
				}
				time.Sleep(100 * time.Millisecond)
			}
			info, err := cli.ContainerInspect(ctx, name)
			if err != nil || !info.State.Running {
				t.Fatalf("not running on a read-only root: %+v %v\n%s", info.State, err, containerLog(t, cli, name))
			}
			if log := containerLog(t, cli, name); !strings.Contains(log, "uid=54321 gid=54321") {
				t.Errorf("log:\n%s", log)
			}
		})
	}
}
