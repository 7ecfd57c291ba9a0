package guacamole

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func rdpConnection(n int) Connection {
	return Connection{
		Name:     fmt.Sprintf("%s%d", testPrefix, n),
		Protocol: "rdp",
		Params: map[string]string{
			"hostname": fmt.Sprintf("10.0.0.%d", n%250+1), "port": "3389", "password": "desk-pw",
			"security": "any", "ignore-cert": "true",
		},
		Username: fmt.Sprintf("%suser-%d", testPrefix, n),
		Password: rand.Text(),
	}
}

// assertStored checks that exactly c is in the database, as Guacamole expects it.
func assertStored(t *testing.T, s *Store, db *sql.DB, c Connection) {
	t.Helper()
	st := readBack(t, s, db, c.Name, c.Username)
	if st.connections != 1 {
		t.Fatalf("%d connections named %s, want 1", st.connections, c.Name)
	}
	if st.protocol != c.Protocol || !st.parentNull {
		t.Errorf("connection protocol %q parent null %v, want %q at root", st.protocol, st.parentNull, c.Protocol)
	}
	if !maps.Equal(st.params, c.Params) {
		t.Errorf("parameters %v, want %v", st.params, c.Params)
	}
	if want := map[string][]string{c.Username: {"READ"}}; !maps.EqualFunc(st.permissions, want, slices.Equal) {
		t.Errorf("permissions %v, want %v", st.permissions, want)
	}
	if st.entityType != "USER" || st.disabled {
		t.Errorf("entity type %q disabled %v, want an enabled USER", st.entityType, st.disabled)
	}
	if len(st.salt) != SaltSize {
		t.Errorf("salt has %d bytes, want %d", len(st.salt), SaltSize)
	}
	if !bytes.Equal(st.hash, HashPassword(c.Password, st.salt)) {
		t.Errorf("stored hash does not verify the password")
	}
	if st.marker != c.Username || st.userMarker != c.Name {
		t.Errorf("markers: connection %q user %q, want %q and %q", st.marker, st.userMarker, c.Username, c.Name)
	}
}

func TestCreateWritesWhatGuacamoleReads(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s, db := newStore(t, b)
		ctx := context.Background()
		base := counts(t, db)
		vnc := Connection{Name: testPrefix + "vnc", Protocol: "vnc", Username: "vnc-user", Password: rand.Text(),
			Params: map[string]string{"hostname": "desk", "port": "5901", "password": "x"}}
		rdp := rdpConnection(1)
		for _, c := range []Connection{vnc, rdp} {
			if err := s.Create(ctx, c); err != nil {
				t.Fatalf("Create: %v", err)
			}
		}
		assertStored(t, s, db, vnc)
		assertStored(t, s, db, rdp)
		if got, want := counts(t, db), plus(base, 2, 8); !maps.Equal(got, want) {
			t.Errorf("row counts %v, want %v", got, want)
		}
		// guacadmin is untouched.
		admin := readBack(t, s, db, "none", "guacadmin")
		if !bytes.Equal(admin.hash, HashPassword("guacadmin", admin.salt)) {
			t.Errorf("guacadmin password changed")
		}
	})
}

func TestCreateConverges(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		tests := []struct {
			name   string
			before func(t *testing.T, s *Store, db *sql.DB, old Connection)
		}{
			{"nothing there", func(*testing.T, *Store, *sql.DB, Connection) {}},
			{"all there with old password and params", func(t *testing.T, s *Store, db *sql.DB, old Connection) {
				mustCreate(t, s, old)
			}},
			{"connection gone, user left", func(t *testing.T, s *Store, db *sql.DB, old Connection) {
				mustCreate(t, s, old)
				mustExec(t, db, s.q(`DELETE FROM guacamole_connection WHERE connection_name = ?`), old.Name)
			}},
			{"user gone, connection left", func(t *testing.T, s *Store, db *sql.DB, old Connection) {
				mustCreate(t, s, old)
				mustExec(t, db, s.q(`DELETE FROM guacamole_entity WHERE name = ?`), old.Username)
			}},
			{"entity without user row", func(t *testing.T, s *Store, db *sql.DB, old Connection) {
				mustExec(t, db, s.q(`INSERT INTO guacamole_entity (name, type) VALUES (?, 'USER')`), old.Username)
			}},
			{"parameters and permission gone", func(t *testing.T, s *Store, db *sql.DB, old Connection) {
				mustCreate(t, s, old)
				mustExec(t, db, `DELETE FROM guacamole_connection_parameter`)
				mustExec(t, db, `DELETE FROM guacamole_connection_permission`)
			}},
			{"made earlier for another user name", func(t *testing.T, s *Store, db *sql.DB, old Connection) {
				old.Username += "-before"
				mustCreate(t, s, old)
			}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s, db := newStore(t, b)
				base := counts(t, db)
				old := rdpConnection(7)
				old.Protocol = "vnc"
				old.Params = map[string]string{"hostname": "old-host", "port": "5901", "stale": "yes"}
				tt.before(t, s, db, old)

				want := rdpConnection(7)
				for range 2 { // and a plain retry
					if err := s.Create(ctx, want); err != nil {
						t.Fatalf("Create: %v", err)
					}
				}
				assertStored(t, s, db, want)
				if got, wantCounts := counts(t, db), plus(base, 1, len(want.Params)); !maps.Equal(got, wantCounts) {
					t.Errorf("row counts %v, want %v", got, wantCounts)
				}
				st := readBack(t, s, db, want.Name, want.Username)
				if bytes.Equal(st.hash, HashPassword(old.Password, st.salt)) {
					t.Errorf("old password still verifies")
				}
			})
		}
	})
}

func TestDeleteRemovesEverythingOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s, db := newStore(t, b)
		ctx := context.Background()
		base := counts(t, db)
		keep, gone := rdpConnection(1), rdpConnection(2)
		mustCreate(t, s, keep)
		mustCreate(t, s, gone)
		for i := range 2 {
			if err := s.Delete(ctx, gone.Name); err != nil {
				t.Fatalf("Delete #%d: %v", i+1, err)
			}
		}
		if got, want := counts(t, db), plus(base, 1, len(keep.Params)); !maps.Equal(got, want) {
			t.Errorf("row counts after Delete %v, want %v", got, want)
		}
		assertStored(t, s, db, keep)
		if err := s.Delete(ctx, keep.Name); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if got := counts(t, db); !maps.Equal(got, base) {
			t.Errorf("row counts after deleting all %v, want %v", got, base)
		}
		if err := s.Delete(ctx, testPrefix+"never-made"); err != nil {
			t.Errorf("Delete of nothing: %v", err)
		}
	})
}

// handMade adds a connection, with a READ permission for guacadmin, as an
// administrator would through Guacamole's UI.
func handMade(t *testing.T, s *Store, db *sql.DB, name string) {
	t.Helper()
	id, err := func() (int64, error) {
		tx, err := db.Begin()
		if err != nil {
			return 0, err
		}
		defer tx.Rollback()
		id, err := s.insertID(context.Background(), tx, "connection_id",
			`INSERT INTO guacamole_connection (connection_name, protocol) VALUES (?, 'ssh')`, name)
		if err != nil {
			return 0, err
		}
		return id, tx.Commit()
	}()
	if err != nil {
		t.Fatalf("hand-made connection %s: %v", name, err)
	}
	mustExec(t, db, s.q(`INSERT INTO guacamole_connection_parameter VALUES (?, 'hostname', 'bastion')`), id)
	mustExec(t, db, s.q(`INSERT INTO guacamole_connection_permission (entity_id, connection_id, permission)
		SELECT entity_id, ?, 'READ' FROM guacamole_entity WHERE name = 'guacadmin'`), id)
}

func TestListAndLeaveHandMadeAlone(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s, db := newStore(t, b)
		ctx := context.Background()
		manualWithPrefix, manual := testPrefix+"manual", "bastion"
		handMade(t, s, db, manualWithPrefix)
		handMade(t, s, db, manual)
		base := counts(t, db)

		names, err := s.List(ctx)
		if err != nil || len(names) != 0 {
			t.Fatalf("List on a database without ours = %v, %v; want none", names, err)
		}
		var want []string
		for i := range 3 {
			c := rdpConnection(i)
			mustCreate(t, s, c)
			want = append(want, c.Name)
		}
		// Another installation's connections (other prefix) are not ours either.
		other := New(db, b.dialect, testOptions("calipso-other-"))
		if err := other.Create(ctx, Connection{Name: "calipso-other-1", Protocol: "vnc", Username: "other-1", Password: "pw"}); err != nil {
			t.Fatalf("Create in another installation: %v", err)
		}
		// A user left without its connection is still listed, so that the reconciler
		// removes it.
		orphan := rdpConnection(9)
		mustCreate(t, s, orphan)
		mustExec(t, db, s.q(`DELETE FROM guacamole_connection WHERE connection_name = ?`), orphan.Name)
		want = append(want, orphan.Name)
		slices.Sort(want)

		names, err = s.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if !slices.Equal(names, want) {
			t.Errorf("List = %v, want %v", names, want)
		}

		conflicts := []struct {
			name string
			c    Connection
		}{
			{"connection made by hand", Connection{Name: manualWithPrefix, Protocol: "vnc", Username: "u-new", Password: "pw"}},
			{"user made by hand", Connection{Name: testPrefix + "new", Protocol: "vnc", Username: "guacadmin", Password: "pw"}},
			{"user of another connection", Connection{Name: testPrefix + "new", Protocol: "vnc", Username: rdpConnection(0).Username, Password: "pw"}},
		}
		for _, tt := range conflicts {
			t.Run(tt.name, func(t *testing.T) {
				if err := s.Create(ctx, tt.c); !errors.Is(err, ErrConflict) {
					t.Errorf("Create = %v, want ErrConflict", err)
				}
			})
		}
		for _, name := range append(want, manualWithPrefix, manual) {
			if err := s.Delete(ctx, name); err != nil {
				t.Fatalf("Delete %s: %v", name, err)
			}
		}
		// Only the other installation's connection and the hand-made ones remain.
		if got, wantCounts := counts(t, db), plus(base, 1, 0); !maps.Equal(got, wantCounts) {
			t.Errorf("row counts %v, want %v", got, wantCounts)
		}
		admin := readBack(t, s, db, manual, "guacadmin")
		if admin.connections != 1 || admin.params["hostname"] != "bastion" || !slices.Equal(admin.permissions["guacadmin"], []string{"READ"}) {
			t.Errorf("hand-made connection changed: %+v", admin)
		}
		if !bytes.Equal(admin.hash, HashPassword("guacadmin", admin.salt)) {
			t.Errorf("guacadmin password changed")
		}
	})
}

func TestConcurrentCreateDelete(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s, db := newStore(t, b)
		ctx := context.Background()
		base := counts(t, db)
		const workers = 20
		var wg sync.WaitGroup
		errs := make(chan error, 4*workers)
		for i := range workers {
			wg.Go(func() {
				c := rdpConnection(i)
				if err := s.Create(ctx, c); err != nil {
					errs <- err
					return
				}
				if i%2 == 0 {
					if err := s.Delete(ctx, c.Name); err != nil {
						errs <- err
					}
				}
			})
			// The same connection written by several at once ends up once.
			wg.Go(func() {
				if err := s.Create(ctx, rdpConnection(100)); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("concurrent: %v", err)
		}
		names, err := s.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if len(names) != workers/2+1 {
			t.Errorf("List has %d names, want %d: %v", len(names), workers/2+1, names)
		}
		for _, n := range []int{1, 19, 100} {
			c := rdpConnection(n)
			st := readBack(t, s, db, c.Name, c.Username)
			if st.connections != 1 || st.marker != c.Username || len(st.params) != len(c.Params) {
				t.Errorf("%s after concurrent writes: %+v", c.Name, st)
			}
		}
		if got, want := counts(t, db), plus(base, workers/2+1, (workers/2+1)*5); !maps.Equal(got, want) {
			t.Errorf("row counts %v, want %v", got, want)
		}
	})
}

func TestUnavailable(t *testing.T) {
	// A listener that accepts and hangs up at once, like a server going down.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	// A port nobody listens on.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	closedHost, closedPort, _ := net.SplitHostPort(closedAddr)
	hangHost, hangPort, _ := net.SplitHostPort(ln.Addr().String())
	missingSock := filepath.Join(t.TempDir(), "gone.sock")

	tests := []struct {
		name, driver, dsn string
	}{
		{"mysql missing socket", "mysql", "u:p@unix(" + missingSock + ")/guac?timeout=2s"},
		{"mysql closed port", "mysql", "u:p@tcp(" + closedAddr + ")/guac?timeout=2s"},
		{"mysql hangs up", "mysql", "u:p@tcp(" + ln.Addr().String() + ")/guac?timeout=2s&readTimeout=2s"},
		{"postgres missing socket", "postgres", "host=" + filepath.Dir(missingSock) + " user=u dbname=guac connect_timeout=2"},
		{"postgres closed port", "postgres", fmt.Sprintf("host=%s port=%s user=u dbname=guac sslmode=disable connect_timeout=2", closedHost, closedPort)},
		{"postgres hangs up", "postgres", fmt.Sprintf("host=%s port=%s user=u dbname=guac sslmode=disable connect_timeout=2", hangHost, hangPort)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The deadline only keeps a broken test from hanging: an expired context is
			// not ErrUnavailable, so a slow failure fails the test.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if _, err := Open(ctx, tt.driver, tt.dsn); !errors.Is(err, ErrUnavailable) {
				t.Errorf("Open = %v, want ErrUnavailable", err)
			}
			dialect, _ := ParseDialect(tt.driver)
			driverName := map[Dialect]string{MySQL: "mysql", Postgres: "pgx"}[dialect]
			db, err := sql.Open(driverName, tt.dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			s := New(db, dialect, testOptions(testPrefix))
			calls := map[string]func() error{
				"Ping":   func() error { return s.Ping(ctx) },
				"Create": func() error { return s.Create(ctx, rdpConnection(1)) },
				"Delete": func() error { return s.Delete(ctx, testPrefix+"1") },
				"List":   func() error { _, err := s.List(ctx); return err },
			}
			for name, call := range calls {
				if err := call(); !errors.Is(err, ErrUnavailable) {
					t.Errorf("%s = %v, want ErrUnavailable", name, err)
				}
			}
		})
	}
}

func TestOpenAndPing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		_, dsn := b.open(t)
		if dsn == "" {
			t.Skip("no DSN for this backend")
		}
		ctx := context.Background()
		db, err := Open(ctx, string(b.dialect), dsn)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer db.Close()
		if err := New(db, b.dialect, testOptions("")).Ping(ctx); err != nil {
			t.Errorf("Ping: %v", err)
		}
	})
}

func TestCreateRejectsBadInput(t *testing.T) {
	s := New(nil, MySQL, testOptions(testPrefix)) // never reaches the database
	good := rdpConnection(1)
	tests := []struct {
		name   string
		change func(c *Connection)
	}{
		{"empty name", func(c *Connection) { c.Name = "" }},
		{"foreign prefix", func(c *Connection) { c.Name = "bastion" }},
		{"long name", func(c *Connection) { c.Name = testPrefix + strings.Repeat("x", 128) }},
		{"unknown protocol", func(c *Connection) { c.Protocol = "http" }},
		{"empty username", func(c *Connection) { c.Username = "" }},
		{"long username", func(c *Connection) { c.Username = strings.Repeat("u", 129) }},
		{"empty password", func(c *Connection) { c.Password = "" }},
		{"empty parameter name", func(c *Connection) { c.Params = map[string]string{"": "x"} }},
		{"invalid UTF-8 in parameter", func(c *Connection) { c.Params = map[string]string{"k": "\xff"} }},
		{"long parameter value", func(c *Connection) { c.Params = map[string]string{"k": strings.Repeat("v", 4097)} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.change(&c)
			if err := s.Create(context.Background(), c); !errors.Is(err, ErrInvalid) {
				t.Errorf("Create = %v, want ErrInvalid", err)
			}
		})
	}
	if err := s.Delete(context.Background(), ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("Delete(\"\") = %v, want ErrInvalid", err)
	}
	if err := s.Validate(good); err != nil {
		t.Errorf("Validate(good) = %v", err)
	}
}

func TestParseDialect(t *testing.T) {
	for in, want := range map[string]Dialect{"mysql": MySQL, "MariaDB": MySQL, "pgx": Postgres, "postgresql": Postgres} {
		if got, err := ParseDialect(in); err != nil || got != want {
			t.Errorf("ParseDialect(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseDialect("sqlite"); err == nil {
		t.Errorf("ParseDialect(sqlite) succeeded")
	}
}

func mustCreate(t *testing.T, s *Store, c Connection) {
	t.Helper()
	if err := s.Create(context.Background(), c); err != nil {
		t.Fatalf("Create %s: %v", c.Name, err)
	}
}

func mustExec(t *testing.T, db *sql.DB, query string, args ...any) {
	t.Helper()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func BenchmarkCreateDelete(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			s, _ := newStore(b, be)
			ctx := context.Background()
			c := rdpConnection(1)
			for b.Loop() {
				if err := s.Create(ctx, c); err != nil {
					b.Fatal(err)
				}
				if err := s.Delete(ctx, c.Name); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestActivity reads the history as Guacamole writes it: a row when a user connects,
// its end_date when they disconnect; an open row means in use now.
func TestActivity(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s, db := newStore(t, b)
		ctx := context.Background()
		c := rdpConnection(7)
		if err := s.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		open, last, err := s.Activity(ctx, c.Name)
		if err != nil || open || !last.IsZero() {
			t.Fatalf("never used: %v %v %v", open, last, err)
		}
		var connID int64
		if err := db.QueryRowContext(ctx, s.q(`SELECT connection_id FROM guacamole_connection WHERE connection_name = ?`), c.Name).Scan(&connID); err != nil {
			t.Fatal(err)
		}
		// Guacamole's own rows: user and connection by id and name, dates in UTC.
		connect := func(start time.Time) {
			t.Helper()
			if _, err := db.ExecContext(ctx, s.q(`INSERT INTO guacamole_connection_history (user_id, username, remote_host, connection_id, connection_name, start_date, end_date)
				VALUES (NULL, ?, '10.0.0.9', ?, ?, ?, NULL)`), c.Username, connID, c.Name, start); err != nil {
				t.Fatal(err)
			}
		}
		disconnect := func(end time.Time) {
			t.Helper()
			if _, err := db.ExecContext(ctx, s.q(`UPDATE guacamole_connection_history SET end_date = ? WHERE connection_name = ? AND end_date IS NULL`), end, c.Name); err != nil {
				t.Fatal(err)
			}
		}
		t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
		connect(t0)
		if open, _, err := s.Activity(ctx, c.Name); err != nil || !open {
			t.Fatalf("a connected user: open %v, %v", open, err)
		}
		disconnect(t0.Add(2 * time.Hour))
		connect(t0.Add(3 * time.Hour))
		disconnect(t0.Add(5 * time.Hour))
		open, last, err = s.Activity(ctx, c.Name)
		if err != nil || open || !last.Equal(t0.Add(5*time.Hour)) {
			t.Fatalf("after two sessions: open %v, last %v (want %v), %v", open, last, t0.Add(5*time.Hour), err)
		}
		// The connection deleted (history rows keep their names): still read by name.
		if err := s.Delete(ctx, c.Name); err != nil {
			t.Fatal(err)
		}
		if _, last, err := s.Activity(ctx, c.Name); err != nil || !last.Equal(t0.Add(5*time.Hour)) {
			t.Fatalf("after the delete: %v %v", last, err)
		}
	})
}
