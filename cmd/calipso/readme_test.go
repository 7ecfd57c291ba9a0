package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"

	"github.com/calipsoplus/calipso/internal/demo"
	"github.com/calipsoplus/calipso/internal/testenv"
	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/settings"
)

// readmeBlock returns the first ```sh block after heading in README.md.
func readmeBlock(t *testing.T, heading string) string {
	t.Helper()
	text, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(text), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README.md has no %q", heading)
	}
	_, block, ok := strings.Cut(after, "```sh\n")
	if ok {
		block, _, ok = strings.Cut(block, "\n```")
	}
	if !ok {
		t.Fatalf("README.md: no sh block under %q", heading)
	}
	return block
}

// TestReadmeTryItWithCurl runs README.md's "Try it with curl" block as written
// (only the port changed) against calipso on the embedded local profile, built as
// `go run` builds it (cgo on: a dynamically linked executable, whose interpreter
// and libraries the demo images must carry), in a fresh working directory: the
// demo images are built at start, the block launches the demo notebook, reaches it
// with its token, then stops and removes it.
func TestReadmeTryItWithCurl(t *testing.T) {
	cli := testenv.DockerClient(t)
	for _, tool := range []string{"bash", "curl", "sed", "awk", "grep"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, tool, "not installed")
		}
	}
	block := readmeBlock(t, "### Try it with curl")
	bin := buildCalipso(t)
	instance := testenv.Instance(t)
	ctx := context.Background()

	// The images this executable makes are this test's to remove (unless they were
	// on the engine already).
	exe, err := demo.Inspect(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("demo image files: %v", exe.Files()) // with the interpreter and libc when cgo is on
	for _, k := range demo.Kinds {
		ref := exe.Reference(k)
		if _, err := cli.ImageInspect(ctx, ref); cerrdefs.IsNotFound(err) {
			t.Cleanup(func() { cli.ImageRemove(context.Background(), ref, image.RemoveOptions{PruneChildren: true}) })
		}
	}

	// The local profile, on a free port, with this test's installation label (the
	// reconciler must never take a developer's own local workloads for its own).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	local, err := settings.Embedded("local")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.NewReplacer(`listen = "127.0.0.1:8000"`, `listen = "127.0.0.1:`+port+`"`,
		`instance = "local"`, `instance = "`+instance+`"`, "localhost:8000", "localhost:"+port).Replace(string(local))
	if !strings.Contains(text, port) || !strings.Contains(text, instance) || !strings.Contains(text, "demo_images = true") {
		t.Fatalf("the local profile changed shape; this test edits its listen and instance:\n%s", local)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "settings.toml"), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}

	logs := &lockedLog{}
	server := exec.Command(bin, "--settings", "settings.toml")
	server.Dir = dir
	server.Stdout, server.Stderr = logs, logs
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- server.Wait() }()
	t.Cleanup(func() {
		server.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			server.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("calipso's log:\n%s", logs)
		}
	})
	waitHealthy(t, "http://127.0.0.1:"+port+"/healthz", done)

	script := strings.ReplaceAll(block, "127.0.0.1:8000", "127.0.0.1:"+port)
	sctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	sh := exec.CommandContext(sctx, "bash", "-e", "-c", script)
	sh.Dir = dir
	out, err := sh.CombinedOutput()
	if err != nil {
		t.Fatalf("README block: %v\n%s", err, out)
	}
	t.Logf("README block output:\n%s", out)

	// The notebook's URL, then curl's status of it.
	m := regexp.MustCompile(`(?m)^(http://localhost:\d+/\?token=[0-9a-f]{48})\n(\d{3})$`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no notebook URL followed by its status in the output:\n%s", out)
	}
	if m[2] != "200" {
		t.Fatalf("GET %s answered %s\n%s", m[1], m[2], out)
	}
	for _, want := range []string{`"Login OK"`, `"public_name":"static_link"`, `"public_name":"demo_notebook"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}
	// Both images finished (the desktop's is built after the notebook's): stopping
	// calipso in the middle of a build would leave an untagged image behind.
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(logs.String(), `msg="demo image ready" record=demo_desktop`) {
		if time.Now().After(deadline) {
			t.Fatalf("calipso did not log the demo desktop image ready:\n%s", logs)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Stopped and removed: nothing of it is left on the engine.
	list, err := cli.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", provisioner.LabelInstance+"="+instance))})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Errorf("containers left after the README's rm: %v", list)
	}
}

// waitHealthy waits until url answers 200 (or the server exits).
func waitHealthy(t *testing.T, url string, exited <-chan error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			t.Fatalf("calipso exited at start: %v", err)
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("calipso not healthy at %s after 60s", url)
}
