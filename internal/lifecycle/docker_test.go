package lifecycle_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/guacamole"
	"github.com/calipsoplus/calipso/internal/demo"
	"github.com/calipsoplus/calipso/internal/launch"
	"github.com/calipsoplus/calipso/internal/lifecycle"
	"github.com/calipsoplus/calipso/internal/mail"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/internal/testenv"
	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/provisioner/docker"
	"github.com/calipsoplus/calipso/settings"
)

// TestMain lets this test binary be the demo images' executable too (as in
// internal/demo): the images run it as `/calipso demo-workload notebook|desktop`.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == demo.Subcommand {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := demo.Run(ctx, os.Args[2:], os.Getenv, os.Stdout)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestPoliciesOnRealParts: the idleness policy on the Docker engine, with Guacamole's
// real schema and a real SMTP server (mailpit). A notebook its user works in (page
// views move its /api/status last_activity) survives although no Guacamole connection
// and no CPU say it is busy; a desktop with an open Guacamole connection survives; an
// idle desktop is stopped, after its warning mail was received. The durations are
// seconds: the policy is the same at hours.
func TestPoliciesOnRealParts(t *testing.T) {
	smtp := testenv.StartSMTPServer(t)
	testenv.DockerClient(t)
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	instance := testenv.Instance(t)

	db, err := store.Open(ctx, "sqlite", filepath.Join(t.TempDir(), "calipso.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx, quiet); err != nil {
		t.Fatal(err)
	}
	if err := demo.Provide(ctx, demo.Config{Logger: quiet}, db); err != nil {
		t.Fatal(err)
	}
	engine, err := docker.New(ctx, docker.Config{Instance: instance, HostAddress: "127.0.0.1", PublishAddress: "127.0.0.1",
		ReadyTimeout: 30 * time.Second, StopTimeout: 3 * time.Second, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { engine.Close() })
	fresh, dsn := testenv.MySQL(t)
	testenv.LoadGuacamoleSchema(t, fresh, "mysql")
	gdb, err := guacamole.Open(ctx, "mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gdb.Close() })
	history := guacamole.New(gdb, guacamole.MySQL, guacamole.Options{NamePrefix: "calipso-" + instance + "-", Logger: quiet})

	cfg := settings.Defaults()
	cfg.Instance = instance
	cfg.Quotas.Default = calipso.Quota{MaxSimultaneous: 10, CPUs: 10, MemoryBytes: 30 << 30, DiskBytes: 80 << 30}
	cfg.Workloads.AllowUnenforced = []string{"disk"}
	svc := launch.New(db, map[calipso.ResourceType]provisioner.Provisioner{calipso.Docker: engine}, history, launch.ConfigFrom(cfg), quiet)
	t.Cleanup(func() {
		for _, r := range must(db.Resources(context.Background(), store.ResourceFilter{})) {
			svc.Remove(context.Background(), r)
		}
	})
	alice, err := db.EnsureUser(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.SetProfile(ctx, "test", "alice", "alice@facility.example", alice.UUID); err != nil {
		t.Fatal(err)
	}
	launchAs := func(id, image string) calipso.Resource {
		t.Helper()
		r, err := svc.Launch(ctx, alice, id, image)
		if err != nil {
			t.Fatalf("launch %s: %v", image, err)
		}
		return r
	}
	idle, connected, notebook := launchAs("idle1", demo.DesktopRecord), launchAs("conn1", demo.DesktopRecord), launchAs("nb1", demo.NotebookRecord)
	// Guacamole's own row for a user connected to the second desktop (end_date NULL).
	if _, err := fresh.ExecContext(ctx, `INSERT INTO guacamole_connection_history (user_id, username, remote_host, connection_id, connection_name, start_date, end_date)
		VALUES (NULL, ?, '10.0.0.9', NULL, ?, ?, NULL)`, connected.GuacamoleUsername, connected.EngineName, time.Now().UTC()); err != nil {
		t.Fatal(err)
	}
	// The notebook's user works in it: a page now and then.
	workCtx, stopWork := context.WithCancel(ctx)
	t.Cleanup(stopWork)
	go func() {
		for workCtx.Err() == nil {
			if resp, err := http.Get(notebook.HostPort); err == nil {
				resp.Body.Close()
			}
			select {
			case <-workCtx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()

	mailer, err := mail.New(mail.Config{Host: smtp.Host, Port: smtp.Port, TLS: "none", From: "calipso@facility.example", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	policy := calipso.Reclaim{ExpiryAction: calipso.ActionStop, IdleAfter: 4 * time.Second, IdleAction: calipso.ActionStop, WarnBefore: 2 * time.Second}
	c := lifecycle.New(lifecycle.Config{Reclaim: policy, Interval: time.Second, CallTimeout: 5 * time.Second, Log: quiet}, db, svc, mailer,
		lifecycle.GuacamoleSignal{History: history}, lifecycle.NotebookSignal{Client: &http.Client{Timeout: 5 * time.Second}},
		&lifecycle.CPUSignal{Engines: map[calipso.ResourceType]lifecycle.CPUTimes{calipso.Docker: engine}, Threshold: 0.05})

	state := func(r calipso.Resource) calipso.Resource {
		t.Helper()
		got, err := db.Resource(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	mailSeen := false
	deadline := time.Now().Add(60 * time.Second)
	for state(idle).State == calipso.Running {
		if time.Now().After(deadline) {
			t.Fatalf("the idle desktop still runs: %+v", state(idle))
		}
		if rep := c.Check(ctx); len(rep.Errors) > 0 {
			t.Fatalf("pass: %v", rep.Errors)
		}
		if s := state(idle); s.WarnedAt != nil && !mailSeen {
			m := smtp.WaitFor(t, "alice@facility.example", demo.DesktopRecord)
			if m.From != "calipso@facility.example" || m.Text == "" {
				t.Errorf("warning mail = %+v", m)
			}
			mailSeen = true
			continue // the next pass may act: the mail is in
		}
		if s := state(idle); s.State != calipso.Running && !mailSeen {
			t.Fatal("the idle desktop was stopped before its warning mail arrived")
		}
		time.Sleep(500 * time.Millisecond)
	}
	if got := state(idle).State; got != calipso.Stopped && got != calipso.Stopping {
		t.Fatalf("the idle desktop ended %s, want stopped", got)
	}
	if !mailSeen {
		t.Fatal("stopped with no warning mail")
	}
	for name, r := range map[string]calipso.Resource{"the desktop with a connection": connected, "the notebook in use": notebook} {
		if s := state(r); s.State != calipso.Running || s.WarnedAt != nil {
			t.Errorf("%s: %s, warned %v, idle since %v", name, s.State, s.WarnedAt, s.IdleSince)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
