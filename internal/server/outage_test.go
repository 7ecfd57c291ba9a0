package server_test

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/calipsoplus/calipso/internal/testenv"
	"github.com/calipsoplus/calipso/settings"
)

// privateMariaDB is a throwaway MariaDB server of one test's own (as deploy/test.sh
// starts the shared one), on a socket, so that the test can stop it: the shared
// server is never stopped.
type privateMariaDB struct {
	t    testing.TB
	sock string
	cmd  *exec.Cmd
	done chan error
}

func startPrivateMariaDB(t testing.TB) *privateMariaDB {
	t.Helper()
	for _, tool := range []string{"mariadbd", "mariadb-install-db"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat("/usr/sbin/" + tool); err != nil {
				testenv.Missing(t, tool, "not installed")
			}
		}
	}
	// A short directory: a unix socket's path is limited to ~100 bytes.
	dir, err := os.MkdirTemp("", "mdb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data, tmp := filepath.Join(dir, "data"), filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	// A temporary directory of its own: servers installed at once in a shared /tmp
	// collide on their temporary tables' names.
	install := exec.Command("mariadb-install-db", "--no-defaults", "--user=root", "--datadir="+data, "--tmpdir="+tmp,
		"--auth-root-authentication-method=normal")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	m := &privateMariaDB{t: t, sock: filepath.Join(dir, "m.sock"), done: make(chan error, 1)}
	bin := "mariadbd"
	if _, err := exec.LookPath(bin); err != nil {
		bin = "/usr/sbin/mariadbd"
	}
	m.cmd = exec.Command(bin, "--no-defaults", "--user=root", "--datadir="+data, "--tmpdir="+tmp, "--socket="+m.sock, "--skip-networking",
		"--pid-file="+filepath.Join(dir, "m.pid"), "--log-error="+filepath.Join(dir, "m.err"), "--innodb-flush-log-at-trx-commit=2")
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("mariadbd: %v", err)
	}
	go func() { m.done <- m.cmd.Wait() }()
	t.Cleanup(m.stop)
	db, err := sql.Open("mysql", "root@unix("+m.sock+")/")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err = db.Ping(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "m.err"))
			t.Fatalf("private mariadbd did not start: %v\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := db.Exec("CREATE DATABASE calipso CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *privateMariaDB) dsn() string {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr, cfg.DBName = "root", "unix", m.sock, "calipso"
	cfg.Timeout = time.Second
	return cfg.FormatDSN()
}

// stop shuts the server down as an operator or a crash would end it (SIGTERM: a clean
// shutdown that closes every connection), and waits for it.
func (m *privateMariaDB) stop() {
	if m.cmd.ProcessState != nil {
		return
	}
	select {
	case <-m.done:
		return
	default:
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	m.done <- errors.New("stopped") // later calls return at once
}

// outageNet is a MySQL network (mysql.RegisterDialContext) in front of a private
// server, whose outage the test chooses: until cut, it dials the server; cut closes
// every connection it made (as the network or the server's end does in an outage)
// and makes each later dial fail the way that outage does, for real.
type outageNet struct {
	name string
	m    *privateMariaDB
	mu   sync.Mutex
	dial func(ctx context.Context) (net.Conn, error)
	open []net.Conn
}

func newOutageNet(t testing.TB, m *privateMariaDB) *outageNet {
	o := &outageNet{name: "outage" + testenv.RandomHex(4), m: m}
	o.dial = func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", m.sock)
	}
	mysql.RegisterDialContext(o.name, func(ctx context.Context, _ string) (net.Conn, error) {
		o.mu.Lock()
		dial := o.dial
		o.mu.Unlock()
		c, err := dial(ctx)
		if err == nil {
			o.mu.Lock()
			o.open = append(o.open, c)
			o.mu.Unlock()
		}
		return c, err
	})
	t.Cleanup(func() { mysql.DeregisterDialContext(o.name) })
	return o
}

func (o *outageNet) dsn() string {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr, cfg.DBName = "root", o.name, "db", "calipso"
	cfg.Timeout = time.Second
	return cfg.FormatDSN()
}

// cut starts the outage: dial is how connecting fails from now on.
func (o *outageNet) cut(dial func(ctx context.Context) (net.Conn, error)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dial = dial
	for _, c := range o.open {
		c.Close()
	}
	o.open = nil
}

// resettingListener accepts connections and resets them at once, as a proxy (or a
// load balancer) in front of a database that is gone does.
func resettingListener(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	return l.Addr().String()
}

// TestDatabaseOutage (security review, finding 11): while the database cannot be
// reached, every call that needs it answers 503 {"error"}, never a 500: logging in,
// the user's own record, a launch (and a favourite, a logout). Outages are real: the
// server stopped, its host name gone from DNS (a container or Kubernetes service
// removed), a proxy in front of it resetting connections, connections refused.
func TestDatabaseOutage(t *testing.T) {
	// The driver logs each connection it drops (set before the parallel subtests).
	_ = mysql.SetLogger(log.New(io.Discard, "", 0))
	dialer := &net.Dialer{}
	outages := []struct {
		name string
		// start begins the outage.
		start func(t *testing.T, o *outageNet)
	}{
		{"server stopped", func(t *testing.T, o *outageNet) {
			o.m.stop()
			o.cut(func(ctx context.Context) (net.Conn, error) { return dialer.DialContext(ctx, "unix", o.m.sock) })
		}},
		{"host name gone", func(t *testing.T, o *outageNet) {
			o.cut(func(ctx context.Context) (net.Conn, error) {
				return dialer.DialContext(ctx, "tcp", "calipso-db.invalid:3306") // RFC 6761: never resolves
			})
		}},
		{"proxy resets", func(t *testing.T, o *outageNet) {
			addr := resettingListener(t)
			o.cut(func(ctx context.Context) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", addr) })
		}},
		{"connection refused", func(t *testing.T, o *outageNet) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			l.Close() // nothing listens there now
			o.cut(func(ctx context.Context) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", addr) })
		}},
	}
	for _, outage := range outages {
		t.Run(outage.name, func(t *testing.T) {
			t.Parallel()
			o := newOutageNet(t, startPrivateMariaDB(t))
			// No session cache: each request reads the database, as once cache_ttl passed.
			h := newHarness(t, withMySQLAt(o.dsn()), withSettings(func(s *settings.Settings) { s.Server.CacheTTL.Duration = 0 }))
			alice, bob := h.loggedIn("alice"), h.loggedIn("bob")
			wantStatus(t, alice.do(http.MethodGet, "users/alice/", nil), http.StatusOK)
			fresh := h.browser()
			fresh.csrfToken()

			outage.start(t, o)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := h.db.Ping(ctx); err == nil {
				t.Fatal("the database still answers")
			}
			for _, call := range []struct {
				b            *browser
				method, path string
				body         any
			}{
				{fresh, http.MethodPost, "login/", map[string]string{"username": "carol", "password": "carol-demo"}},
				{alice, http.MethodGet, "users/alice/", nil},
				{alice, http.MethodGet, "resource/run/alice/2019002~2019002-01/static_link/", nil},
				{bob, http.MethodGet, "resource/list/bob/", nil},
				{bob, http.MethodPut, "favorite/1/", map[string]string{"favorite": "1"}},
				{bob, http.MethodGet, "logout/", nil}, // the session cannot be ended: not "Logout OK"
			} {
				a := call.b.do(call.method, call.path, call.body)
				if a.status != http.StatusServiceUnavailable {
					t.Errorf("%s %s: %d %s, want 503", call.method, call.path, a.status, a.body)
					continue
				}
				wantError(t, a, http.StatusServiceUnavailable)
			}
		})
	}
}
