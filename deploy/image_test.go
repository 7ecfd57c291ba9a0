package deploy_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/client"
	"github.com/docker/go-connections/nat"

	"github.com/calipsoplus/calipso/internal/testenv"
)

// imageLabel marks every image and container the deploy tests make.
const imageLabel = "calipso.test"

// imageContext is what deploy/Dockerfile's header says to prepare, as a tar stream.
func imageContext(t *testing.T) io.Reader {
	t.Helper()
	dockerfile, err := os.ReadFile(deployFile("Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	binary, err := os.ReadFile(calipsoBinary)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		certs = nil // an image without them still serves; only https clients need them
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
		dir  bool
	}{
		{name: "Dockerfile", mode: 0o644, data: dockerfile},
		{name: "calipso", mode: 0o755, data: binary},
		{name: "ca-certificates.crt", mode: 0o644, data: certs},
		{name: "data/", mode: 0o700, dir: true},
		{name: "tmp/", mode: 0o1777, dir: true},
	} {
		h := &tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), Typeflag: tar.TypeReg, ModTime: time.Now()}
		if f.dir {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

func buildOutput(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var msg struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		if msg.Error != "" {
			return errors.New(msg.Error)
		}
	}
}

// TestContainerImage builds deploy/Dockerfile on the local engine, runs it with a
// mounted settings file and the image's own data volume, and checks /healthz through
// the published port and the image's HEALTHCHECK.
func TestContainerImage(t *testing.T) {
	cli := testenv.DockerClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := "r" + testenv.RandomHex(5)
	labels := map[string]string{imageLabel: "deploy-image", imageLabel + ".run": run}
	ref := "calipso-deploy-test:" + run
	t.Cleanup(func() { cleanupDocker(t, cli, run) })

	resp, err := cli.ImageBuild(ctx, imageContext(t), build.ImageBuildOptions{
		Tags: []string{ref}, Dockerfile: "Dockerfile", Remove: true, ForceRemove: true, Labels: labels,
	})
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	err = buildOutput(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	inspect, err := cli.ImageInspect(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("image %s: %.1f MB", ref, float64(inspect.Size)/1e6)
	if inspect.Config.User != "65532:65532" {
		t.Errorf("image user = %q, want 65532:65532", inspect.Config.User)
	}

	// The settings file must be readable by the container's user; its directory is the
	// test's private one, mounted as a single file.
	settingsPath := filepath.Join(t.TempDir(), "settings.toml")
	settingsText := `environment = "test"
listen = "0.0.0.0:8000"
base_path = "/calipsoplus-services/"
data_dir = "/var/lib/calipso"
frontend_url = "http://localhost:4200"
backend_url = "http://localhost:8000/calipsoplus-services/"
allowed_hosts = ["*"]
trusted_proxies = ["127.0.0.1"]
secret_key_file = "/var/lib/calipso/secret_key"
[database]
driver = "sqlite"
dsn = "/var/lib/calipso/calipso.db"
[user_office]
embedded = true
[workloads]
datasets_root = "/var/lib/calipso/datasets"
output_root = "/var/lib/calipso/results"
[docker]
enabled = false
`
	if err := os.WriteFile(settingsPath, []byte(settingsText), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t, "127.0.0.1")
	created, err := cli.ContainerCreate(ctx, &container.Config{
		Image:        ref,
		Labels:       labels,
		ExposedPorts: nat.PortSet{"8000/tcp": {}},
		// The image's own probe, checked often so the test need not wait 30 s.
		Healthcheck: &container.HealthConfig{Test: []string{"CMD", "/calipso", "healthcheck"}, Interval: time.Second, Timeout: 5 * time.Second, Retries: 30},
	}, &container.HostConfig{
		Mounts:         []mount.Mount{{Type: mount.TypeBind, Source: settingsPath, Target: "/etc/calipso/settings.toml", ReadOnly: true}},
		PortBindings:   nat.PortMap{"8000/tcp": {{HostIP: "127.0.0.1", HostPort: fmt.Sprint(port)}}},
		ReadonlyRootfs: true,
	}, nil, nil, "calipso-deploy-"+run)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatalf("start: %v", err)
	}

	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", port)
	var status int
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if status = resp.StatusCode; status == http.StatusOK {
				break
			}
		}
	}
	if status != http.StatusOK {
		t.Fatalf("GET %s through the published port: last status %d\n%s", url, status, containerLogs(ctx, cli, created.ID))
	}
	var health string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		c, err := cli.ContainerInspect(ctx, created.ID)
		if err != nil {
			t.Fatal(err)
		}
		if c.State.Health != nil {
			if health = c.State.Health.Status; health == "healthy" {
				break
			}
		}
	}
	if health != "healthy" {
		t.Errorf("health = %q, want healthy\n%s", health, containerLogs(ctx, cli, created.ID))
	}
}

func containerLogs(ctx context.Context, cli *client.Client, id string) string {
	r, err := cli.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return err.Error()
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	return strings.ToValidUTF8(string(b), "?")
}

// cleanupDocker removes the containers (with their anonymous volumes) and images this run made.
func cleanupDocker(t *testing.T, cli *client.Client, run string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := filters.NewArgs(filters.Arg("label", imageLabel+".run="+run))
	list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err == nil {
		for _, c := range list {
			if err := cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
				t.Logf("remove container %s: %v", c.ID, err)
			}
		}
	}
	images, err := cli.ImageList(ctx, image.ListOptions{Filters: f})
	if err == nil {
		for _, im := range images {
			if _, err := cli.ImageRemove(ctx, im.ID, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil {
				t.Logf("remove image %s: %v", im.ID, err)
			}
		}
	}
}
