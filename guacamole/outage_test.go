package guacamole

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
)

// proxy forwards TCP connections to a database server until stop, which also cuts
// every open connection: to the Store the server has gone down.
type proxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startProxy(t *testing.T, network, addr string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	t.Cleanup(p.stop)
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial(network, addr)
			if err != nil {
				client.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, client, server)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(server, client); server.Close() }()
			go func() { _, _ = io.Copy(client, server); client.Close() }()
		}
	}()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) stop() {
	p.ln.Close()
	p.cut()
}

// cut closes the open connections; new ones are still forwarded.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// viaProxy starts a proxy to the server of dsn and returns a DSN that goes through it.
func viaProxy(t *testing.T, d Dialect, dsn string) (string, *proxy) {
	t.Helper()
	switch d {
	case MySQL:
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			t.Fatal(err)
		}
		p := startProxy(t, cfg.Net, cfg.Addr)
		cfg.Net, cfg.Addr = "tcp", p.addr()
		return cfg.FormatDSN(), p
	case Postgres:
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			t.Fatal(err)
		}
		network, addr := "tcp", net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port))
		if strings.HasPrefix(cfg.Host, "/") {
			network, addr = "unix", filepath.Join(cfg.Host, fmt.Sprintf(".s.PGSQL.%d", cfg.Port))
		}
		p := startProxy(t, network, addr)
		host, port, _ := net.SplitHostPort(p.addr())
		return fmt.Sprintf("%s host=%s port=%s sslmode=disable", dsn, host, port), p
	}
	t.Fatalf("no proxy for %s", d)
	return "", nil
}

// Connections lost while idle are replaced; a server that goes down under a working
// Store yields ErrUnavailable, and a new pool works when it comes back.
func TestServerGoesDown(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		fresh, dsn := b.open(t)
		loadSchema(t, fresh, b.dialect)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()

		proxied, p := viaProxy(t, b.dialect, dsn)
		db, err := Open(ctx, string(b.dialect), proxied)
		if err != nil {
			t.Fatalf("Open through proxy: %v", err)
		}
		defer db.Close()
		s := New(db, b.dialect, testOptions(testPrefix))
		mustCreate(t, s, rdpConnection(1))

		// Pooled connections that died while idle are replaced without an error.
		p.cut()
		mustCreate(t, s, rdpConnection(3))
		if err := s.Delete(ctx, rdpConnection(3).Name); err != nil {
			t.Errorf("Delete after the pool's connections were cut: %v", err)
		}

		p.stop()
		calls := []struct {
			name string
			call func() error
		}{
			{"Create", func() error { return s.Create(ctx, rdpConnection(2)) }},
			{"Delete", func() error { return s.Delete(ctx, rdpConnection(1).Name) }},
			{"List", func() error { _, err := s.List(ctx); return err }},
			{"Ping", func() error { return s.Ping(ctx) }},
		}
		for _, tt := range calls {
			if err := tt.call(); !errors.Is(err, ErrUnavailable) {
				t.Errorf("%s with the server down = %v, want ErrUnavailable", tt.name, err)
			}
		}

		// The server is back (at a new address: a new pool, as after a restart).
		back, _ := viaProxy(t, b.dialect, dsn)
		db2, err := Open(ctx, string(b.dialect), back)
		if err != nil {
			t.Fatalf("Open after restart: %v", err)
		}
		defer db2.Close()
		names, err := New(db2, b.dialect, testOptions(testPrefix)).List(ctx)
		if err != nil || len(names) != 1 {
			t.Errorf("List after restart = %v, %v; want the one connection", names, err)
		}
	})
}
