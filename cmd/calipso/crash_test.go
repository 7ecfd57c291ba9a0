package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/experiments/useroffice"
	"github.com/calipsoplus/calipso/internal/apiclient"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/internal/testenv"
	"github.com/calipsoplus/calipso/provisioner"
)

const (
	crashUser     = "ana"
	crashPassword = "ana-secret"
	crashImage    = "desk"
	crashProposal = "p1"
)

// binary is a command of this repository, built once per test process.
type binary struct {
	once sync.Once
	dir  string // made by MkdirTemp: the only thing TestMain removes
	path string
	err  error
}

var (
	calipsoBinary binary // with the crash hook (see buildCalipso)
	loadBinary    binary // cmd/calipso-load
)

// TestMain removes the binaries the tests built, which outlive any one test.
func TestMain(m *testing.M) {
	code := m.Run()
	for _, b := range []*binary{&calipsoBinary, &loadBinary} {
		if b.dir != "" {
			os.RemoveAll(b.dir)
		}
	}
	os.Exit(code)
}

// build compiles the package pkg (a path relative to this one) into name with the
// go build flags.
func (b *binary) build(t testing.TB, pkg, name string, flags ...string) string {
	t.Helper()
	b.once.Do(func() {
		tmp, err := os.MkdirTemp("", "calipso-bin-")
		if err != nil {
			b.err = err
			return
		}
		b.dir, b.path = tmp, filepath.Join(tmp, name)
		args := append(append([]string{"build"}, flags...), "-o", b.path, pkg)
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// buildCalipso compiles this command once per test process, with the crash hook
// (crashhook.go) that only the crashtest tag links.
func buildCalipso(t testing.TB) string {
	t.Helper()
	return calipsoBinary.build(t, ".", "calipso", "-tags", "crashtest")
}

// liveServer is a calipso process with its own settings, database, Docker
// installation label and Guacamole database, or one replica of several that share
// them (see replica).
type liveServer struct {
	t        testing.TB
	bin      string
	spec     serverSpec
	dir      string // shared by the replicas: secret key, user office data
	settings string
	dbDriver string
	dbDSN    string
	guacDSN  string
	base     string // API base URL
	addr     string // host:port it listens on
	instance string
	guacDB   *sql.DB
	cmd      *exec.Cmd
	done     chan error
	logs     *lockedLog
}

// serverSpec is what newServer sets a server up with.
type serverSpec struct {
	sessions   int      // sessions s1..sN of proposal p1, in which every user took part
	extraUsers []string // besides crashUser; password "<name>-secret"
	mysqlDSN   string   // the application database; "" for SQLite in the server's directory
	workloads  string   // more lines for the [workloads] table
	tail       string   // more tables, after the others
}

// newLiveServer prepares (not starts) a server for users ana plus extra
// (password "<name>-secret" for extras), each with sessions s1..sN of proposal p1.
func newLiveServer(t testing.TB, sessions int, extraUsers ...string) *liveServer {
	t.Helper()
	return newServer(t, serverSpec{sessions: sessions, extraUsers: extraUsers})
}

// newServer prepares (not starts) a server as spec says, with the workload image
// registered as crashImage.
func newServer(t testing.TB, spec serverSpec) *liveServer {
	t.Helper()
	image := testenv.WorkloadImage(t)
	s := &liveServer{t: t, bin: buildCalipso(t), spec: spec, instance: testenv.Instance(t), dir: t.TempDir()}
	fresh, guacDSN := testenv.MySQL(t)
	testenv.LoadGuacamoleSchema(t, fresh, "mysql")
	s.guacDB, s.guacDSN = fresh, guacDSN
	s.dbDriver, s.dbDSN = "sqlite", filepath.Join(s.dir, "calipso.db")
	if spec.mysqlDSN != "" {
		s.dbDriver, s.dbDSN = "mysql", spec.mysqlDSN
	}

	data := useroffice.Data{}
	participants := []string{crashUser}
	data.Accounts = append(data.Accounts, useroffice.Account{Username: crashUser, Password: useroffice.HashPassword(crashPassword, 1000)})
	for _, u := range spec.extraUsers {
		data.Accounts = append(data.Accounts, useroffice.Account{Username: u, Password: useroffice.HashPassword(u+"-secret", 1000)})
		participants = append(participants, u)
	}
	exp := useroffice.Experiment{ProposalID: crashProposal, Subject: "crash test", Participants: participants}
	for i := 1; i <= spec.sessions; i++ {
		exp.Sessions = append(exp.Sessions, useroffice.Session{SessionNumber: fmt.Sprintf("s%d", i), Subject: "beamtime"})
	}
	data.Experiments = []useroffice.Experiment{exp}
	writeJSONFile(t, filepath.Join(s.dir, "office.json"), data)
	s.listenAnew()

	// The seeded images are not on this engine: add one that is, as an admin would.
	ctx := context.Background()
	db := s.openStore()
	defer db.Close()
	if err := db.Migrate(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PutImage(ctx, "test", calipso.Image{PublicName: crashImage, Image: image, Protocol: "vnc", CPU: 0.5, Memory: "64M", HDD: "1G", ResourceType: "docker"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	return s
}

// replica prepares (not starts) another process of the same installation: the same
// databases, secret key, user office and Docker label, on its own port.
func (s *liveServer) replica() *liveServer {
	s.t.Helper()
	r := &liveServer{t: s.t, bin: s.bin, spec: s.spec, dir: s.dir, dbDriver: s.dbDriver, dbDSN: s.dbDSN,
		guacDSN: s.guacDSN, instance: s.instance, guacDB: s.guacDB}
	r.listenAnew()
	s.t.Cleanup(r.stop)
	return r
}

// listenAnew picks a free port and writes the settings for it.
func (s *liveServer) listenAnew() {
	s.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	ln.Close()
	s.base = "http://" + s.addr + "/calipsoplus-services/"
	settings := fmt.Sprintf(`environment = "test"
instance = %q
listen = %q
data_dir = %q
secret_key_file = %q
log_level = "info"

[database]
driver = %q
dsn = %q

[guacamole]
enabled = true
driver = "mysql"
dsn = %q
hostname = "127.0.0.1"

[user_office]
embedded = true
embedded_data = %q
username = "calipso"
password = "office-secret"
dynamic_experiments = true

[quotas]
max_simultaneous = 5

[workloads]
datasets_root = %q
output_root = %q
uid = 1000
gid = 1000
reconcile_interval = "2s"
allow_unenforced = ["disk"]
%s
[docker]
enabled = true
host_address = "127.0.0.1"
publish_address = "127.0.0.1"
%s`, s.instance, s.addr, s.dir, filepath.Join(s.dir, "secret_key"), s.dbDriver, s.dbDSN, s.guacDSN,
		filepath.Join(s.dir, "office.json"), filepath.Join(s.dir, "datasets"), filepath.Join(s.dir, "results"), s.spec.workloads, s.spec.tail)
	f, err := os.CreateTemp(s.dir, "settings-*.toml")
	if err != nil {
		s.t.Fatal(err)
	}
	s.settings = f.Name()
	if _, err := f.WriteString(settings); err != nil {
		s.t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		s.t.Fatal(err)
	}
}

// openStore opens the server's application database; the caller closes it.
func (s *liveServer) openStore() *store.Store {
	s.t.Helper()
	db, err := store.Open(context.Background(), s.dbDriver, s.dbDSN)
	if err != nil {
		s.t.Fatal(err)
	}
	return db
}

func writeJSONFile(t testing.TB, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// start runs the server with extra environment and waits until /readyz answers 200.
func (s *liveServer) start(env ...string) {
	s.t.Helper()
	s.logs = &lockedLog{}
	s.cmd = exec.Command(s.bin, "--settings", s.settings, "serve")
	s.cmd.Env = append(os.Environ(), env...)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.done = make(chan error, 1)
	go func() { s.done <- s.cmd.Wait() }()
	ready := strings.TrimSuffix(s.base, "calipsoplus-services/") + "readyz"
	deadline := time.Now().Add(60 * time.Second) // generous: proves no hang only
	for time.Now().Before(deadline) {
		select {
		case err := <-s.done:
			s.t.Fatalf("server exited at start: %v\n%s", err, s.logs)
		default:
		}
		resp, err := http.Get(ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("server not ready after 60s\n%s", s.logs)
}

// waitKilled waits for the process to die of SIGKILL (its own crash hook).
func (s *liveServer) waitKilled() {
	s.t.Helper()
	select {
	case err := <-s.done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			s.t.Fatalf("server ended with %v, want killed by SIGKILL\n%s", err, s.logs)
		}
		s.cmd = nil
	case <-time.After(2 * time.Minute):
		s.t.Fatalf("server still running after the crash point\n%s", s.logs)
	}
}

// stop ends a running server (SIGTERM, then SIGKILL).
func (s *liveServer) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// client logs crashUser in.
func (s *liveServer) client(user, password string) *apiclient.Client {
	s.t.Helper()
	c, err := apiclient.New(s.base, 3*time.Minute)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := c.Login(context.Background(), user, password); err != nil {
		s.t.Fatalf("%v\n%s", err, s.logs)
	}
	// The experiments page fetches the user's experiments from the user office.
	if _, err := c.SessionRefs(context.Background(), user); err != nil {
		s.t.Fatal(err)
	}
	return c
}

// containers lists this installation's containers, stopped ones too.
func (s *liveServer) containers() []container.Summary {
	s.t.Helper()
	list, err := testenv.DockerClient(s.t).ContainerList(context.Background(), container.ListOptions{
		All: true, Filters: filters.NewArgs(filters.Arg("label", provisioner.LabelInstance+"="+s.instance)),
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return list
}

func (s *liveServer) guacRows() int {
	s.t.Helper()
	var n int
	if err := s.guacDB.QueryRow(`SELECT (SELECT COUNT(*) FROM guacamole_connection) + (SELECT COUNT(*) FROM guacamole_connection_parameter)`).Scan(&n); err != nil {
		s.t.Fatal(err)
	}
	return n
}

// records reads the resource records straight from the database (server stopped or not).
func (s *liveServer) records() []calipso.Resource {
	s.t.Helper()
	db := s.openStore()
	defer db.Close()
	list, err := db.Resources(context.Background(), store.ResourceFilter{})
	if err != nil {
		s.t.Fatal(err)
	}
	return list
}

// lockedLog collects a process's stdout and stderr (written from two goroutines).
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestCrashDuringLaunch kills the server at three points of a launch and checks that
// the restarted server leaves no trace of it: no container, no Guacamole rows, the
// record in error and the quota free; and that launching works again.
func TestCrashDuringLaunch(t *testing.T) {
	tests := []struct {
		at string
		// atCrash checks the state the crash left, so that the test knows it crashed
		// where it meant to.
		containerState string // "" for none
	}{
		{at: "reserved", containerState: ""},
		{at: "created", containerState: "created"},
		{at: "started", containerState: "running"},
	}
	for _, tt := range tests {
		t.Run(tt.at, func(t *testing.T) {
			s := newLiveServer(t, 2)
			s.start("CALIPSO_CRASH_AT=" + tt.at)
			c := s.client(crashUser, crashPassword)
			status, body, err := c.Call(context.Background(), http.MethodGet, apiclient.LaunchPath(crashUser, crashProposal+"~s1", crashImage), nil)
			if err == nil {
				t.Fatalf("launch answered %d %s, want the server to die", status, body)
			}
			s.waitKilled()

			// What the crash left behind.
			recs := s.records()
			if len(recs) != 1 || recs[0].State != calipso.Pending {
				t.Fatalf("records after the crash = %+v, want one pending", recs)
			}
			list := s.containers()
			switch {
			case tt.containerState == "" && len(list) != 0:
				t.Fatalf("containers after crash at %s: %d, want none", tt.at, len(list))
			case tt.containerState != "" && (len(list) != 1 || list[0].State != tt.containerState):
				t.Fatalf("containers after crash at %s: %+v, want one %s", tt.at, list, tt.containerState)
			}

			// The restarted server repairs it.
			s.start()
			c = s.client(crashUser, crashPassword)
			deadline := time.Now().Add(60 * time.Second) // generous: proves no hang only
			var problems []string
			for time.Now().Before(deadline) {
				problems = s.leftovers(c, recs[0].EngineName)
				if len(problems) == 0 {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if len(problems) > 0 {
				t.Fatalf("after restart: %s\n%s", strings.Join(problems, "; "), s.logs)
			}

			// And launching works again.
			status, body, err = c.Call(context.Background(), http.MethodGet, apiclient.LaunchPath(crashUser, crashProposal+"~s2", crashImage), nil)
			if err != nil || status != http.StatusCreated {
				t.Fatalf("launch after restart = %d %s, %v", status, body, err)
			}
			var rec apiclient.Container
			if err := json.Unmarshal(body, &rec); err != nil || rec.Status != "created" {
				t.Fatalf("launch after restart answered %s", body)
			}
			if n := s.guacRows(); n == 0 {
				t.Error("no Guacamole rows for the new desktop")
			}
			if status, err := c.Remove(context.Background(), crashUser, rec); err != nil || status != http.StatusOK {
				t.Errorf("remove after restart = %d, %v", status, err)
			}
			if n := len(s.containers()); n != 0 {
				t.Errorf("%d containers after removal", n)
			}
		})
	}
}

// TestCrashDuringReclaim: the server dies (SIGKILL) while the lifecycle policy stops
// an expired desktop, the engine's stop not yet asked for; the restarted server
// converges: the record stopped, the workload stopped, its Guacamole record gone,
// the quota free. The policy warned before it acted.
func TestCrashDuringReclaim(t *testing.T) {
	s := newServer(t, serverSpec{sessions: 1, tail: `
[lifecycle]
enabled = true
default_lifetime = "3s"
warn_before = "2s"
check_interval = "1s"
`})
	s.start("CALIPSO_CRASH_AT=stop")
	c := s.client(crashUser, crashPassword)
	status, body, err := c.Call(context.Background(), http.MethodGet, apiclient.LaunchPath(crashUser, crashProposal+"~s1", crashImage), nil)
	if err != nil || status != http.StatusCreated {
		t.Fatalf("launch = %d %s, %v", status, body, err)
	}
	s.waitKilled() // the policy's stop, seconds later

	recs := s.records()
	if len(recs) != 1 || recs[0].State != calipso.Stopping || recs[0].WarnedAt == nil {
		t.Fatalf("records after the crash = %+v, want one stopping, warned first", recs)
	}
	if list := s.containers(); len(list) != 1 || list[0].State != "running" {
		t.Fatalf("containers after the crash: %+v, want the workload still running", list)
	}

	s.start()
	deadline := time.Now().Add(60 * time.Second) // generous: proves no hang only
	var problems []string
	for time.Now().Before(deadline) {
		problems = nil
		if r := s.records(); len(r) != 1 || r[0].State != calipso.Stopped {
			problems = append(problems, fmt.Sprintf("record %+v", r))
		}
		for _, ct := range s.containers() {
			if ct.State == "running" {
				problems = append(problems, "the workload runs")
			}
		}
		if n := s.guacRows(); n != 0 {
			problems = append(problems, fmt.Sprintf("%d guacamole rows", n))
		}
		if len(problems) == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(problems) > 0 {
		t.Fatalf("after restart: %s\n%s", strings.Join(problems, "; "), s.logs)
	}
	c = s.client(crashUser, crashPassword)
	status, body, err = c.Call(context.Background(), http.MethodGet, "used_quota/"+crashUser+"/", nil)
	if err != nil || status != http.StatusOK || !strings.Contains(string(body), `"max_simultaneous":0`) {
		t.Fatalf("used quota after the reclaim = %d %s, %v", status, body, err)
	}
}

// leftovers says what of the interrupted launch is still there.
func (s *liveServer) leftovers(c *apiclient.Client, name string) []string {
	var p []string
	if n := len(s.containers()); n != 0 {
		p = append(p, fmt.Sprintf("%d containers", n))
	}
	if n := s.guacRows(); n != 0 {
		p = append(p, fmt.Sprintf("%d guacamole rows", n))
	}
	status, body, err := c.Call(context.Background(), http.MethodGet, "resource/list/"+crashUser+"/", nil)
	var list []apiclient.Container
	if err != nil || status != http.StatusOK || json.Unmarshal(body, &list) != nil {
		p = append(p, fmt.Sprintf("resource/list: %d %s %v", status, body, err))
	} else if len(list) != 0 {
		// A failed launch leaves no card in the frontend: the list shows live records only.
		p = append(p, fmt.Sprintf("resource/list = %s, want [] (%s failed)", body, name))
	}
	if rs := s.records(); len(rs) != 1 || rs[0].EngineName != name || rs[0].State != calipso.Failed {
		p = append(p, fmt.Sprintf("records = %+v, want %s in error", rs, name))
	}
	status, body, err = c.Call(context.Background(), http.MethodGet, "used_quota/"+crashUser+"/", nil)
	var used struct {
		Max json.Number `json:"max_simultaneous"`
	}
	if err != nil || status != http.StatusOK || json.Unmarshal(body, &used) != nil {
		p = append(p, fmt.Sprintf("used_quota: %d %s %v", status, body, err))
	} else if used.Max.String() != "0" {
		p = append(p, "used_quota = "+string(body))
	}
	return p
}
