package testenv

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/docker/go-connections/nat"
)

// WorkloadRepository is the repository of the test workload image; its tag is a hash
// of what the image is built from.
const WorkloadRepository = "calipso-test-workload"

// workloadDockerfile packs the static workload binary into an image with nothing
// else: the engine here cannot pull base images.
const workloadDockerfile = `FROM scratch
COPY workload /workload
USER 65534:65534
EXPOSE 5901 3389 8888
ENTRYPOINT ["/workload"]
`

// LabelInstance is provisioner.LabelInstance, repeated so that testenv does not
// import the package it helps to test.
const labelInstance = "calipso.instance"

// DockerClient returns a client of the Docker engine the environment points at
// (DOCKER_HOST or the default socket), with API version negotiation, and skips the
// test (fails it under CI) when the engine does not answer.
func DockerClient(t testing.TB) *client.Client {
	t.Helper()
	cli, err := newDockerClient()
	if err != nil {
		Missing(t, "Docker engine", err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx); err != nil {
		cli.Close()
		Missing(t, "Docker engine", err.Error())
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func newDockerClient() (*client.Client, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return cli, nil
}

var workload struct {
	once sync.Once
	ref  string
	err  error
}

// WorkloadImage returns the reference of the test workload image
// (provisioner/docker/testdata/workload in a FROM scratch image), building it on the
// engine unless an image of the same content hash is already there. It is built at
// most once per test process.
func WorkloadImage(t testing.TB) string {
	t.Helper()
	cli := DockerClient(t)
	workload.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		workload.ref, workload.err = ensureWorkloadImage(ctx, cli)
	})
	if workload.err != nil {
		t.Fatalf("test workload image: %v", workload.err)
	}
	return workload.ref
}

func ensureWorkloadImage(ctx context.Context, cli *client.Client) (string, error) {
	src, err := workloadSource()
	if err != nil {
		return "", err
	}
	source, err := os.ReadFile(filepath.Join(src, "main.go"))
	if err != nil {
		return "", fmt.Errorf("read workload source: %w", err)
	}
	sum := sha256.New()
	fmt.Fprintf(sum, "%s\n%s/%s\n%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH, workloadDockerfile)
	sum.Write(source)
	ref := WorkloadRepository + ":" + hex.EncodeToString(sum.Sum(nil))[:16]

	if _, err := cli.ImageInspect(ctx, ref); err == nil {
		return ref, nil
	} else if !cerrdefs.IsNotFound(err) {
		return "", fmt.Errorf("inspect %s: %w", ref, err)
	}

	binary, err := buildWorkload(ctx, src)
	if err != nil {
		return "", err
	}
	buildCtx, err := tarContext(map[string][]byte{"Dockerfile": []byte(workloadDockerfile), "workload": binary})
	if err != nil {
		return "", err
	}
	resp, err := cli.ImageBuild(ctx, buildCtx, build.ImageBuildOptions{
		Tags:        []string{ref},
		Dockerfile:  "Dockerfile",
		Remove:      true,
		ForceRemove: true,
		Labels:      map[string]string{"calipso.test": "workload"},
	})
	if err != nil {
		return "", fmt.Errorf("build %s: %w", ref, err)
	}
	defer resp.Body.Close()
	if err := readBuildOutput(resp.Body); err != nil {
		return "", fmt.Errorf("build %s: %w", ref, err)
	}
	return ref, nil
}

// workloadSource finds provisioner/docker/testdata/workload from this file's path.
func workloadSource() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the testenv source (built with -trimpath?)")
	}
	dir := filepath.Join(filepath.Dir(file), "..", "..", "provisioner", "docker", "testdata", "workload")
	if _, err := os.Stat(filepath.Join(dir, "main.go")); err != nil {
		return "", fmt.Errorf("workload source: %w", err)
	}
	return dir, nil
}

// buildWorkload compiles the workload as a static Linux binary for the engine's
// usual architecture (this machine's).
func buildWorkload(ctx context.Context, src string) ([]byte, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("build the test workload: %w", err)
	}
	out := filepath.Join(os.TempDir(), "calipso-workload-"+RandomHex(6))
	defer os.Remove(out)
	cmd := exec.CommandContext(ctx, goTool, "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if output, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build workload: %w: %s", err, output)
	}
	binary, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("read workload binary: %w", err)
	}
	return binary, nil
}

func tarContext(files map[string][]byte) (io.Reader, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range []string{"Dockerfile", "workload"} {
		data := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(data))}); err != nil {
			return nil, fmt.Errorf("tar %s: %w", name, err)
		}
		if _, err := tw.Write(data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("tar: %w", err)
	}
	return &buf, nil
}

// readBuildOutput drains the build's JSON message stream and returns the error it
// reports, if any (the HTTP status is 200 even when the build fails).
func readBuildOutput(r io.Reader) error {
	dec := json.NewDecoder(r)
	var last string
	for {
		var msg struct {
			Stream      string `json:"stream"`
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("read build output: %w (last: %s)", err, last)
		}
		if msg.Error != "" || msg.ErrorDetail.Message != "" {
			return fmt.Errorf("%s%s", msg.Error, msg.ErrorDetail.Message)
		}
		if msg.Stream != "" {
			last = msg.Stream
		}
	}
}

// Instance returns an installation label unique to this test, so that parallel tests
// never see each other's workloads, and force-removes every container carrying it
// when the test ends (whatever the test left behind).
func Instance(t testing.TB) string {
	t.Helper()
	instance := "t" + RandomHex(5)
	t.Cleanup(func() {
		cli, err := newDockerClient()
		if err != nil {
			return
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		list, err := cli.ContainerList(ctx, container.ListOptions{
			All:     true,
			Filters: filters.NewArgs(filters.Arg("label", labelInstance+"="+instance)),
		})
		if err != nil {
			return // no engine: nothing of ours can be on it
		}
		for _, c := range list {
			err := cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
			if err != nil && !cerrdefs.IsNotFound(err) {
				t.Errorf("clean up container %s of %s: %v", c.ID, instance, err)
			}
		}
	})
	return instance
}

// StartDirect creates and starts a container of image straight on the engine, the
// way the Docker provisioner configures a desktop (user 1000:1000, 64M and half a CPU,
// the VNC port published on loopback, hardening, labels): the baseline that launch
// benchmarks compare Calipso's launches with. Remove it with RemoveDirect.
func StartDirect(ctx context.Context, cli *client.Client, image, name string, labels map[string]string) error {
	return startDirect(ctx, cli, image, name, labels, false)
}

// StartDirectWithSecret is StartDirect with the VNC password written into the
// container as a file between create and start, as the provisioner delivers it (an
// engine call that mounts the container's filesystem once more).
func StartDirectWithSecret(ctx context.Context, cli *client.Client, image, name string, labels map[string]string) error {
	return startDirect(ctx, cli, image, name, labels, true)
}

func startDirect(ctx context.Context, cli *client.Client, image, name string, labels map[string]string, secret bool) error {
	port := nat.Port("5901/tcp")
	created, err := cli.ContainerCreate(ctx, &container.Config{
		Image: image, User: "1000:1000", Labels: labels, ExposedPorts: nat.PortSet{port: struct{}{}},
		Env: []string{"VNC_PASSWORD=x"},
	}, &container.HostConfig{
		PortBindings:  nat.PortMap{port: []nat.PortBinding{{HostIP: "127.0.0.1"}}},
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
		CapDrop:       []string{"ALL"}, SecurityOpt: []string{"no-new-privileges"}, GroupAdd: []string{"100"},
		Resources: container.Resources{Memory: 64 << 20, MemorySwap: 64 << 20, NanoCPUs: 5e8},
	}, nil, nil, name)
	if err != nil {
		return err
	}
	if secret {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range []*tar.Header{
			{Typeflag: tar.TypeDir, Name: "run/calipso/", Mode: 0o755},
			{Typeflag: tar.TypeReg, Name: "run/calipso/vnc-password", Mode: 0o400, Size: 1, Uid: 1000, Gid: 1000},
		} {
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
		}
		if _, err := tw.Write([]byte("x")); err != nil {
			return err
		}
		if err := tw.Close(); err != nil {
			return err
		}
		if err := cli.CopyToContainer(ctx, created.ID, "/", &buf, container.CopyToContainerOptions{}); err != nil {
			return err
		}
	}
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return err
	}
	_, err = cli.ContainerInspect(ctx, created.ID) // the provisioner reads the port back too
	return err
}

// RemoveDirect removes what StartDirect made.
func RemoveDirect(ctx context.Context, cli *client.Client, name string) {
	_ = cli.ContainerRemove(ctx, name, container.RemoveOptions{Force: true})
}
