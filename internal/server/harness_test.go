package server_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/experiments"
	"github.com/calipsoplus/calipso/experiments/icat"
	"github.com/calipsoplus/calipso/experiments/useroffice"
	"github.com/calipsoplus/calipso/guacamole"
	"github.com/calipsoplus/calipso/internal/launch"
	"github.com/calipsoplus/calipso/internal/server"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/internal/testenv"
	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/provisioner/docker"
	"github.com/calipsoplus/calipso/provisioner/static"
	"github.com/calipsoplus/calipso/settings"
)

// frontendOrigin is where the web frontend is served from in the test settings.
const frontendOrigin = "http://localhost:4200"

// basePath is the API's mount point in the test settings.
const basePath = "/calipsoplus-services/"

// harnessConfig shapes one harness.
type harnessConfig struct {
	driver string // "sqlite" (default) or "mysql"
	dsn    string // with "mysql": this database instead of a fresh one on the shared server
	office *useroffice.Data
	tweak  []func(*settings.Settings)
	checks []server.Check
	docker bool
	log    io.Writer // the server's log (text, debug level); nil: discarded
	openID server.OpenID
	// catalogue, when set, is the ICAT+ server experiments come from (withCatalogue).
	catalogue http.Handler
}

type harnessOption func(*harnessConfig)

// withCatalogue takes experiments from the ICAT+ server h (the reference one, or one
// that misbehaves) instead of the user office.
func withCatalogue(h http.Handler) harnessOption { return func(c *harnessConfig) { c.catalogue = h } }

func withMySQL() harnessOption { return func(c *harnessConfig) { c.driver = "mysql" } }

// onBothDatabases runs test as subtests "sqlite" and "mysql", each with a fresh
// harness on that application database.
func onBothDatabases(t *testing.T, test func(t *testing.T, h *harness)) {
	for _, driver := range []string{"sqlite", "mysql"} {
		t.Run(driver, func(t *testing.T) {
			var opts []harnessOption
			if driver == "mysql" {
				opts = append(opts, withMySQL())
			}
			test(t, newHarness(t, opts...))
		})
	}
}

// withMySQLAt uses the MySQL database at dsn (a private server the test may stop).
func withMySQLAt(dsn string) harnessOption {
	return func(c *harnessConfig) { c.driver, c.dsn = "mysql", dsn }
}

// withDocker adds the real Docker engine, with the test workload as image "desktop"
// (VNC), and Guacamole's real schema on MariaDB for its connection records.
func withDocker() harnessOption { return func(c *harnessConfig) { c.docker = true } }

// desktopImage is the public name of withDocker's VNC desktop.
const desktopImage = "desktop"

func withOffice(d *useroffice.Data) harnessOption { return func(c *harnessConfig) { c.office = d } }

func withSettings(f func(*settings.Settings)) harnessOption {
	return func(c *harnessConfig) { c.tweak = append(c.tweak, f) }
}

// withLogTo sends the server's log (not the other parts') to w.
func withLogTo(w io.Writer) harnessOption { return func(c *harnessConfig) { c.log = w } }

// withOpenID logs users in through this OpenID provider too (oidc/...).
func withOpenID(o server.OpenID) harnessOption { return func(c *harnessConfig) { c.openID = o } }

func withChecks(cs ...server.Check) harnessOption {
	return func(c *harnessConfig) { c.checks = append(c.checks, cs...) }
}

// trustLoopback makes 127.0.0.1 (the test clients) a trusted proxy.
func trustLoopback() harnessOption {
	return withSettings(func(s *settings.Settings) {
		s.TrustedPrefixes = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
}

// harness is the real server on a real TCP port, with a fresh migrated database, the
// reference user office reached through the real client, and the real launch service
// with the static-link engine.
type harness struct {
	t        testing.TB
	srv      *httptest.Server
	handler  http.Handler // what srv serves (tests that need a client address of their own call it)
	db       *store.Store
	cfg      *settings.Settings
	office   *httptest.Server
	officeH  atomic.Pointer[http.Handler] // swapped to change the office's data
	creds    useroffice.BasicCredentials
	officeOp []useroffice.Option
	guacDB   *sql.DB // Guacamole's database (withDocker)
}

func newHarness(t testing.TB, opts ...harnessOption) *harness {
	t.Helper()
	hc := harnessConfig{driver: "sqlite"}
	for _, o := range opts {
		o(&hc)
	}
	ctx := context.Background()
	cfg, err := settings.Load("test", func(k string) string {
		if k == "CALIPSO_SECRET_KEY" {
			return "test-secret-key-0123456789abcdef0123456789abcdef"
		}
		return ""
	})
	if err != nil {
		t.Fatalf("settings: %v", err)
	}
	dir := t.TempDir()
	cfg.DataDir = dir
	cfg.TrustedPrefixes = nil // the test clients are untrusted unless a test says otherwise
	cfg.Workloads.DatasetsRoot = filepath.Join(dir, "datasets")
	cfg.Workloads.OutputRoot = filepath.Join(dir, "results")
	cfg.UserOffice.Timeout = settings.Duration{Duration: 2 * time.Second}
	cfg.UserOffice.DynamicExperiments = true
	cfg.UserOffice.RefreshInterval = settings.Duration{Duration: time.Minute}
	for _, f := range hc.tweak {
		f(cfg)
	}

	dsn := filepath.Join(dir, "calipso.db")
	if hc.driver == "mysql" {
		dsn = hc.dsn
		if dsn == "" {
			dsn = testenv.MySQLDSN(t)
		}
	}
	db, err := store.Open(ctx, hc.driver, dsn)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := db.Migrate(ctx, quiet); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if err := db.SeedImages(ctx); err != nil {
		t.Fatalf("seed images: %v", err)
	}
	for _, name := range cfg.Auth.Admins { // as cmd/calipso does at start
		if _, err := db.EnsureUser(ctx, name); err != nil {
			t.Fatalf("admin %s: %v", name, err)
		}
		if err := db.SetAdmin(ctx, "settings", name, true); err != nil {
			t.Fatalf("admin %s: %v", name, err)
		}
	}

	h := &harness{t: t, db: db, cfg: cfg, creds: useroffice.BasicCredentials{Username: "calipso", Password: "office-secret"}}
	h.officeOp = append(h.officeOp, useroffice.WithLogger(quiet))
	data := hc.office
	if data == nil {
		if data, err = useroffice.Demo(); err != nil {
			t.Fatalf("demo data: %v", err)
		}
	}
	h.setOfficeData(data)
	h.office = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*h.officeH.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(h.office.Close)
	ccfg := useroffice.ClientConfig(h.office.URL, h.creds)
	ccfg.Timeout = cfg.UserOffice.Timeout.Duration
	ccfg.Retries = 2
	ccfg.RetryBackoff = 10 * time.Millisecond
	ccfg.Logger = quiet
	client, err := experiments.NewClient(ccfg)
	if err != nil {
		t.Fatalf("office client: %v", err)
	}

	engines := map[calipso.ResourceType]provisioner.Provisioner{calipso.StaticLink: static.New()}
	var desktops launch.Desktops
	if hc.docker {
		desktops = h.addDocker(ctx, engines, quiet)
	}
	resources := launch.New(db, engines, desktops, launch.ConfigFrom(cfg), quiet)
	checks := append([]server.Check{{Name: "database", Fn: db.Ping}}, hc.checks...)
	serverLog := quiet
	if hc.log != nil {
		serverLog = slog.New(slog.NewTextHandler(hc.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	deps := server.Deps{Config: server.ConfigFrom(cfg), Store: db, Office: client, Resources: resources, Checks: checks, Log: serverLog,
		OpenID: hc.openID}
	if hc.catalogue != nil {
		srv := httptest.NewServer(hc.catalogue)
		t.Cleanup(srv.Close)
		demo, _ := icat.Demo()
		c, err := icat.New(icat.Config{URL: srv.URL, Plugin: demo.Reader.Plugin, Username: demo.Reader.Username, Password: demo.Reader.Password,
			Timeout: 2 * time.Second, Retries: 1, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		deps.Experiments, deps.Catalogue = c, c
	}
	handler, err := server.New(deps)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	h.handler = handler
	h.srv = httptest.NewServer(handler)
	t.Cleanup(h.srv.Close)
	return h
}

// addDocker wires the Docker engine and Guacamole (see withDocker).
func (h *harness) addDocker(ctx context.Context, engines map[calipso.ResourceType]provisioner.Provisioner, log *slog.Logger) launch.Desktops {
	t := h.t
	t.Helper()
	image := testenv.WorkloadImage(t)
	h.cfg.Instance = testenv.Instance(t)
	engine, err := docker.New(ctx, docker.Config{Instance: h.cfg.Instance, HostAddress: "127.0.0.1", PublishAddress: "127.0.0.1",
		ReadyTimeout: 30 * time.Second, StopTimeout: 3 * time.Second, Logger: log})
	if err != nil {
		t.Fatalf("docker.New: %v", err)
	}
	t.Cleanup(func() { engine.Close() })
	engines[calipso.Docker] = engine
	fresh, dsn := testenv.MySQL(t)
	testenv.LoadGuacamoleSchema(t, fresh, "mysql")
	gdb, err := guacamole.Open(ctx, "mysql", dsn)
	if err != nil {
		t.Fatalf("guacamole.Open: %v", err)
	}
	t.Cleanup(func() { gdb.Close() })
	h.guacDB = fresh
	if _, err := h.db.PutImage(ctx, "test", calipso.Image{PublicName: desktopImage, Image: image, Protocol: "vnc", CPU: 1, Memory: "1G", HDD: "1G", ResourceType: "docker"}); err != nil {
		t.Fatalf("PutImage: %v", err)
	}
	return guacamole.New(gdb, guacamole.MySQL, guacamole.Options{NamePrefix: "calipso-" + h.cfg.Instance + "-", Logger: log})
}

// setOfficeData changes what the user office serves from now on.
func (h *harness) setOfficeData(d *useroffice.Data) {
	h.t.Helper()
	if err := d.Validate(); err != nil {
		h.t.Fatalf("office data: %v", err)
	}
	handler := useroffice.NewServer(d, h.creds, h.officeOp...)
	h.officeH.Store(&handler)
}

// api is the absolute URL of an API path (relative to the base path).
func (h *harness) api(path string) string { return h.srv.URL + basePath + path }

// browser behaves like the frontend: a cookie jar, the csrftoken cookie echoed as
// X-CSRFToken on unsafe methods, and the frontend's Origin.
type browser struct {
	t      testing.TB
	h      *harness
	c      *http.Client
	origin string
	header http.Header // extra headers on every request
}

func (h *harness) browser() *browser {
	h.t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		h.t.Fatal(err)
	}
	c := *h.srv.Client() // a copy: each browser has its own jar
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &browser{t: h.t, h: h, c: &c, origin: frontendOrigin, header: http.Header{}}
}

// csrfToken is the csrftoken cookie the browser holds, fetched first if need be.
func (b *browser) csrfToken() string {
	b.t.Helper()
	u, _ := url.Parse(b.h.srv.URL + "/")
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == "csrftoken" {
			return c.Value
		}
	}
	b.do(http.MethodGet, "settings/", nil) // the frontend's first call sets it
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == "csrftoken" {
			return c.Value
		}
	}
	b.t.Fatal("no csrftoken cookie after GET settings/")
	return ""
}

// answer is a response with its body read.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body into v, failing the test when it is not JSON.
func (a answer) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(a.body, v); err != nil {
		t.Fatalf("body is not JSON (%v): %q", err, a.body)
	}
}

// object decodes the body as a JSON object.
func (a answer) object(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	a.json(t, &m)
	return m
}

// do sends a request to an API path; body is JSON-encoded unless it is a string
// or []byte (sent as is).
func (b *browser) do(method, path string, body any) answer {
	b.t.Helper()
	return b.doURL(method, b.h.api(path), body)
}

func (b *browser) doURL(method, target string, body any) answer {
	b.t.Helper()
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	case []byte:
		rd = bytes.NewReader(v)
	default:
		raw, err := json.Marshal(v)
		if err != nil {
			b.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, target, rd)
	if err != nil {
		b.t.Fatalf("request %s %s: %v", method, target, err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if b.origin != "" {
		req.Header.Set("Origin", b.origin)
	}
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		req.Header.Set("X-CSRFToken", b.csrfToken())
	}
	for k, vs := range b.header {
		req.Header[k] = vs
	}
	return b.send(req)
}

func (b *browser) send(req *http.Request) answer {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: raw}
}

// login logs the browser in as user (demo password "<user>-demo" unless given).
func (b *browser) login(user string, password ...string) {
	b.t.Helper()
	pw := user + "-demo"
	if len(password) > 0 {
		pw = password[0]
	}
	a := b.do(http.MethodPost, "login/", map[string]string{"username": user, "password": pw})
	if a.status != http.StatusOK {
		b.t.Fatalf("login %s: %d %s", user, a.status, a.body)
	}
}

// loggedIn returns a browser logged in as user.
func (h *harness) loggedIn(user string) *browser {
	h.t.Helper()
	b := h.browser()
	b.login(user)
	return b
}

// wantStatus fails the test unless a has the status.
func wantStatus(t testing.TB, a answer, status int) {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d; body %s", a.status, status, a.body)
	}
}

// wantError checks a 4xx answer with a JSON {"error": "..."} body.
func wantError(t testing.TB, a answer, status int) string {
	t.Helper()
	wantStatus(t, a, status)
	if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q, want JSON", ct)
	}
	m := a.object(t)
	msg, ok := m["error"].(string)
	if !ok || msg == "" || len(m) != 1 {
		t.Fatalf("body %s: want exactly {\"error\": \"...\"}", a.body)
	}
	return msg
}

// wantKeys checks that m has exactly the keys with the JSON kinds given ("string",
// "number", "bool", "object", "array", "null", or "a|b" for either).
func wantKeys(t testing.TB, m map[string]any, kinds map[string]string) {
	t.Helper()
	for k, want := range kinds {
		v, ok := m[k]
		if !ok {
			t.Errorf("key %q missing in %v", k, m)
			continue
		}
		if got := kindOf(v); !strings.Contains("|"+want+"|", "|"+got+"|") {
			t.Errorf("key %q is a %s (%v), want %s", k, got, v, want)
		}
	}
	var extra []string
	for k := range m {
		if _, ok := kinds[k]; !ok {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	if len(extra) > 0 {
		t.Errorf("unexpected keys %v in %v", extra, m)
	}
}

func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}

// demoPassword returns a fast hash of password for built data sets.
func demoPassword(password string) string {
	return useroffice.HashPassword(password, useroffice.DemoIterations)
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// in returns the browser reporting to t (a fuzz target's t, a subtest's).
func (b *browser) in(t testing.TB) *browser {
	c := *b
	c.t = t
	return &c
}
