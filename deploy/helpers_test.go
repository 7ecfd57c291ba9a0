package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// calipsoBinary is the server, built once for the whole package as a static binary
// (the container image test packs the same file).
var calipsoBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "calipso-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	calipsoBinary = filepath.Join(dir, "calipso")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", calipsoBinary, "./cmd/calipso")
	build.Dir = repoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/calipso: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// repoRoot is the module's root, found from this file.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

func deployFile(parts ...string) string {
	return filepath.Join(append([]string{repoRoot(), "deploy"}, parts...)...)
}

// freePort returns a TCP port free on host right now.
func freePort(t *testing.T, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// calipsoOptions are the few settings the deployment tests vary.
type calipsoOptions struct {
	listen         string
	dataDir        string
	frontendURL    string
	trustedProxies []string
	umbrellaLogin  string // header mode on when set
}

func (o calipsoOptions) toml() string {
	proxies, _ := json.Marshal(o.trustedProxies)
	s := fmt.Sprintf(`environment = "test"
instance = "deploytest"
listen = %q
base_path = "/calipsoplus-services/"
data_dir = %[2]q
frontend_url = %[3]q
backend_url = "%[3]s/calipsoplus-services/"
allowed_hosts = ["*"]
trusted_proxies = %[4]s
secret_key_file = "%[2]s/secret_key"
log_level = "warn"

[auth]
local_login = true
admins = ["carol"]

[database]
driver = "sqlite"
dsn = "%[2]s/calipso.db"

[user_office]
embedded = true
dynamic_experiments = true
username = "calipso"
password = "local-demo"

[pagination]
experiments = 1
users = 1

[workloads]
datasets_root = "%[2]s/datasets"
output_root = "%[2]s/results"

[docker]
enabled = false
`, o.listen, o.dataDir, o.frontendURL, proxies)
	if o.umbrellaLogin != "" {
		s += fmt.Sprintf("\n[umbrella]\nenabled = true\nmode = \"header\"\nlogin_url = %q\n", o.umbrellaLogin)
	}
	return s
}

// startCalipso writes the settings and runs the server until the test ends.
func startCalipso(t *testing.T, o calipsoOptions) {
	t.Helper()
	if o.dataDir == "" {
		o.dataDir = t.TempDir()
	}
	path := filepath.Join(o.dataDir, "settings.toml")
	if err := os.WriteFile(path, []byte(o.toml()), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	cmd := exec.Command(calipsoBinary, "--settings", path, "serve")
	cmd.Dir = o.dataDir
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start calipso: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("calipso log:\n%s", logs.String())
		}
	})
	waitHTTP(t, "http://"+o.listen+"/healthz", done, &logs)
}

// waitHTTP polls url until it answers 200, failing early when the process exits.
func waitHTTP(t *testing.T, url string, exited <-chan error, logs fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			t.Fatalf("exited before answering %s: %v\n%s", url, err, logs)
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not answer 200 within a minute\n%s", url, logs)
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// browser is an HTTP client with a cookie jar that does not follow redirects, so
// that tests see Location headers.
type browser struct {
	t    *testing.T
	base string // ends with the base path
	c    *http.Client
}

func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, base: base, c: &http.Client{
		Jar:           jar,
		Timeout:       time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// do sends a request to base+path with extra headers; it returns the response (body
// already read) and the body.
func (b *browser) do(method, path string, body any, headers map[string]string) (*http.Response, []byte) {
	b.t.Helper()
	var r io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			b.t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, b.base+path, r)
	if err != nil {
		b.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if u, err := url.Parse(b.base); err == nil {
		for _, c := range b.c.Jar.Cookies(u) {
			if c.Name == "csrftoken" && method != http.MethodGet {
				req.Header.Set("X-CSRFToken", c.Value)
			}
		}
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatalf("%s %s: read: %v", method, path, err)
	}
	return resp, data
}

// login gets a CSRF cookie, logs in, and returns the login response.
func (b *browser) login(user, password string) *http.Response {
	b.t.Helper()
	if resp, body := b.do(http.MethodGet, "settings/", nil, nil); resp.StatusCode != http.StatusOK {
		b.t.Fatalf("settings/: %s %s", resp.Status, body)
	}
	resp, body := b.do(http.MethodPost, "login/", map[string]string{"username": user, "password": password}, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "Login OK") {
		b.t.Fatalf("login %s: %s %s", user, resp.Status, body)
	}
	return resp
}

// page reads a paginated answer's next link.
func (b *browser) next(path string, headers map[string]string) string {
	b.t.Helper()
	resp, body := b.do(http.MethodGet, path, nil, headers)
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("GET %s: %s %s", path, resp.Status, body)
	}
	var page struct {
		Next  *string `json:"next"`
		Count int     `json:"count"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		b.t.Fatalf("GET %s: %v: %s", path, err, body)
	}
	if page.Next == nil {
		b.t.Fatalf("GET %s: no next link (count %d): %s", path, page.Count, body)
	}
	return *page.Next
}

func cookieNamed(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}
