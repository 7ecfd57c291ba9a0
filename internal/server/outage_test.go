package server_test

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/calipsoplus/calipso/internal/testenv"
	"github.com/calipsoplus/calipso/settings"
)

// outageNet is a MySQL network (mysql.RegisterDialContext) in front of a private
// server, whose outage the test chooses: until cut, it dials the server; cut closes
// every connection it made (as the network or the server's end does in an outage)
// and makes each later dial fail the way that outage does, for real.
type outageNet struct {
	name string
	m    *testenv.MariaDB
	mu   sync.Mutex
	dial func(ctx context.Context) (net.Conn, error)
	open []net.Conn
}

func newOutageNet(t testing.TB, m *testenv.MariaDB) *outageNet {
	o := &outageNet{name: "outage" + testenv.RandomHex(4), m: m}
	o.dial = func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", m.Sock)
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
			o.m.Stop()
			o.cut(func(ctx context.Context) (net.Conn, error) { return dialer.DialContext(ctx, "unix", o.m.Sock) })
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
			o := newOutageNet(t, testenv.StartMariaDB(t))
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
