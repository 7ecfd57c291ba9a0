package launch_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/experiments"
	"github.com/calipsoplus/calipso/guacamole"
	"github.com/calipsoplus/calipso/internal/launch"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/settings"
)

// TestRefusedBeforeReserving: launches that cannot be made are refused before any
// quota is taken or the engine is asked: no record, no container.
func TestRefusedBeforeReserving(t *testing.T) {
	e := newEnv(t, envOptions{noGuac: true})
	ctx := context.Background()
	other := e.newUser(t, "olga")
	e.experiment(t, other, "not-anas", nil, nil)
	mine := e.experiment(t, e.user, "mine", nil, nil)
	volume := func(n, def string) string {
		return e.experiment(t, e.user, "vol-"+n, nil, nil, calipso.Session{SessionNumber: "1", DataSetPath: def})
	}
	// A link planted in the datasets directory that leads out of it.
	mkdirAll(t, filepath.Join(e.datasets, "planted"), 0o755)
	if err := os.Symlink(t.TempDir(), filepath.Join(e.datasets, "planted", "out")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, ref, image string
		want             error
	}{
		{"unknown image", mine, "no-such-image", store.ErrNotFound},
		{"symbolic link out of the datasets root", volume("link", `{'/planted/out': {'bind': '/data', 'mode': 'ro'}}`), desktopImage, experiments.ErrInvalidVolume},
		{"dataset directory missing", volume("missing", `{'/planted/nothing': {'bind': '/data', 'mode': 'ro'}}`), desktopImage, experiments.ErrInvalidVolume},
		{"experiment not the user's", "not-anas~1", desktopImage, store.ErrNotFound},
		{"unknown session", "mine~99", desktopImage, store.ErrNotFound},
		{"dot-dot in a dataset path", volume("dotdot", `{'/p/../../etc': {'bind': '/data', 'mode': 'ro'}}`), desktopImage, experiments.ErrInvalidVolume},
		{"tilde in a dataset path", volume("tilde", `{'~root/x': {'bind': '/data', 'mode': 'ro'}}`), desktopImage, experiments.ErrInvalidVolume},
		{"escape from the output root", volume("escape", `{'/a/../../../x': {'bind': '/results', 'mode': 'rw'}}`), desktopImage, experiments.ErrInvalidVolume},
		{"system directory in the container", volume("system", `{'/p': {'bind': '/etc', 'mode': 'ro'}}`), desktopImage, experiments.ErrInvalidVolume},
		{"unknown mode", volume("mode", `{'/p': {'bind': '/data', 'mode': 'rx'}}`), desktopImage, experiments.ErrInvalidVolume},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.svc.Launch(ctx, e.user, tt.ref, tt.image)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Launch = %v, want %v", err, tt.want)
			}
			if n := len(e.records(t)); n != 0 {
				t.Errorf("%d records made, want none", n)
			}
			e.assertNothingLeft(t, e.user)
		})
	}
}

// TestRootIdentityRefused: a workload never runs as root's user or group, whoever
// gives the id 0 (the user office for an experiment, the account for an own
// resource), unless workloads.allow_root is set: refused before anything is reserved,
// saying whose id it is.
func TestRootIdentityRefused(t *testing.T) {
	e := newEnv(t, envOptions{noGuac: true})
	ctx := context.Background()
	zeroGroup := e.newUser(t, "zoe")
	if err := e.db.SetIdentity(ctx, "test", "zoe", intp(2001), intp(0), ""); err != nil {
		t.Fatal(err)
	}
	zeroGroup, err := e.db.User(ctx, "zoe")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		user calipso.User
		ref  string
		want string
	}{
		{"experiment's gid 0", e.user, e.experiment(t, e.user, "rootgrp", intp(4242), intp(0)), "proposal rootgrp's group id is 0"},
		{"experiment's uid 0", e.user, e.experiment(t, e.user, "rootusr", intp(0), intp(4343)), "proposal rootusr's user id is 0"},
		{"experiment's uid and gid 0", e.user, e.experiment(t, e.user, "rootall", intp(0), intp(0)), "proposal rootall's user and group ids are 0"},
		{"account's gid 0, own resource", zeroGroup, "own1", "your account's group id is 0"},
		{"account's gid 0, experiment without identity", zeroGroup, e.experiment(t, zeroGroup, "noid", nil, nil), "your account's group id is 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.svc.Launch(ctx, tt.user, tt.ref, desktopImage)
			if !errors.Is(err, launch.ErrRootIdentity) || calipso.ErrorCode(err) != calipso.EUNLAUNCHABLE || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Launch = %v, want ErrRootIdentity saying %q", err, tt.want)
			}
			if n := len(e.records(t)); n != 0 {
				t.Errorf("%d records made, want none", n)
			}
			e.assertNothingLeft(t, tt.user)
		})
	}

	t.Run("allowed by workloads.allow_root", func(t *testing.T) {
		e := newEnv(t, envOptions{noGuac: true, edit: func(s *settings.Settings) { s.Workloads.AllowRoot = true }})
		ref := e.experiment(t, e.user, "rootgrp", intp(4242), intp(0))
		r, err := e.svc.Launch(ctx, e.user, ref, desktopImage)
		if err != nil {
			t.Fatalf("Launch: %v", err)
		}
		t.Cleanup(func() { _, _ = e.svc.Remove(context.Background(), r) })
		if info, ok := e.inspect(t, r.EngineName); !ok || info.Config.User != "4242:0" {
			t.Errorf("container user = %q, want 4242:0", info.Config.User)
		}
	})
}

// TestEngineErrors: when the engine refuses, the record ends in error with the quota
// released and no container left.
func TestEngineErrors(t *testing.T) {
	tests := []struct {
		name      string
		dockerURL string
		image     string
		want      error
	}{
		{"image not on the engine", "", missingImage, provisioner.ErrInvalid},
		{"engine unreachable", "unix:///nonexistent.sock", desktopImage, provisioner.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{dockerURL: tt.dockerURL})
			ctx := context.Background()
			ref := e.experiment(t, e.user, "p", nil, nil)
			_, err := e.svc.Launch(ctx, e.user, ref, tt.image)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Launch = %v, want %v", err, tt.want)
			}
			assertFailedRecord(t, e)
			e.assertNothingLeft(t, e.user)
		})
	}
}

// TestFailureMessages: a launch the engine fails is answered, and recorded, with the
// kind of failure and the resource to quote to the facility's support, never with the
// engine's own text (which holds host paths, image references, socket paths); that
// text goes to the log. The error keeps the cause's code (the HTTP status) and its
// sentinels.
func TestFailureMessages(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "site-software")
	tests := []struct {
		name       string
		opts       envOptions
		image      string
		code       string
		cause      error
		engineSays []string // in the log, never in the error nor the record
		userSees   string
	}{
		{"image not on the engine", envOptions{}, missingImage, calipso.EUNLAUNCHABLE, provisioner.ErrInvalid,
			[]string{"No such image", "calipso-test-no-such-image"}, "the image could not be started: ask the facility's support, quoting resource "},
		{"bind source missing on the engine's host", envOptions{edit: func(s *settings.Settings) {
			s.Workloads.Mounts = []provisioner.Mount{{Source: missing, Target: "/opt/site", ReadOnly: true}}
		}}, desktopImage, calipso.EUNLAUNCHABLE, provisioner.ErrInvalid,
			[]string{missing, "bind source path does not exist"}, "the image could not be started: ask the facility's support, quoting resource "},
		{"engine unreachable", envOptions{dockerURL: "unix:///nonexistent.sock"}, desktopImage, calipso.EUNAVAILABLE, provisioner.ErrUnavailable,
			[]string{"/nonexistent.sock"}, "the engine that runs docker resources is unavailable: try again later; if it keeps failing, ask the facility's support, quoting resource "},
		{"never ready", envOptions{edit: func(s *settings.Settings) { s.Workloads.ReadyTimeout = settings.Duration{Duration: time.Second} }},
			"silent", calipso.ETIMEOUT, provisioner.ErrNotReady,
			[]string{"no log line matched", "never-printed"}, "the workload did not become ready in time: try again later; if it keeps failing, ask the facility's support, quoting resource "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logged lockedBuffer
			tt.opts.noGuac = true
			tt.opts.log = slog.New(slog.NewTextHandler(&logged, nil))
			e := newEnv(t, tt.opts)
			ctx := context.Background()
			if _, err := e.db.PutImage(ctx, "test", calipso.Image{PublicName: "silent", Image: e.workload, Protocol: "http", CPU: 0.25, Memory: "32M", HDD: "1G",
				ResourceType: "docker", LogRegex: "never-printed"}); err != nil {
				t.Fatal(err)
			}
			_, err := e.svc.Launch(ctx, e.user, e.experiment(t, e.user, "p", nil, nil), tt.image)
			if err == nil {
				t.Fatal("Launch succeeded")
			}
			assertFailedRecord(t, e)
			rec := e.records(t)[0]
			want := "launch failed: " + tt.userSees + strconv.FormatInt(rec.ID, 10)
			if err.Error() != want || rec.Error != want {
				t.Errorf("Launch error = %q\nrecord error = %q\nwant          %q", err, rec.Error, want)
			}
			// What internal/server answers: the text of a 4xx, ErrorMessage of a 5xx.
			if calipso.ErrorCode(err) != tt.code || calipso.ErrorMessage(err) != want {
				t.Errorf("code %s, message %q; want %s, %q", calipso.ErrorCode(err), calipso.ErrorMessage(err), tt.code, want)
			}
			if !errors.Is(err, tt.cause) {
				t.Errorf("Launch = %v, not %v", err, tt.cause)
			}
			var f *launch.Failure
			if !errors.As(err, &f) || f.ResourceID != rec.ID || !errors.Is(f.Cause(), tt.cause) {
				t.Errorf("Launch = %#v, want a launch.Failure of resource %d", err, rec.ID)
			}
			for _, text := range tt.engineSays {
				if strings.Contains(err.Error(), text) || strings.Contains(rec.Error, text) {
					t.Errorf("the user is shown the engine's %q: %q", text, err)
				}
				if !strings.Contains(logged.String(), text) {
					t.Errorf("the log lacks the engine's %q:\n%s", text, logged.String())
				}
			}
			e.assertNothingLeft(t, e.user)
		})
	}
}

// lockedBuffer is a log destination safe for the launch's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestGuacamoleDown: a launch whose Guacamole record cannot be written is rolled
// back: container removed, quota released, record in error.
func TestGuacamoleDown(t *testing.T) {
	// Nothing listens on port 1: every statement fails to connect, at once.
	down, err := sql.Open("mysql", "root@tcp(127.0.0.1:1)/guacamole_db?timeout=2s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { down.Close() })
	gs := guacamole.New(down, guacamole.MySQL, guacamole.Options{Logger: slog.New(slog.DiscardHandler)})
	e := newEnv(t, envOptions{desktops: gs})
	ctx := context.Background()
	ref := e.experiment(t, e.user, "p", nil, nil)
	_, err = e.svc.Launch(ctx, e.user, ref, desktopImage)
	if !errors.Is(err, guacamole.ErrUnavailable) {
		t.Fatalf("Launch = %v, want %v", err, guacamole.ErrUnavailable)
	}
	assertFailedRecord(t, e)
	if rec := e.records(t)[0]; !strings.Contains(err.Error(), "the remote desktop connection could not be set up") || err.Error() != rec.Error ||
		strings.Contains(rec.Error, "127.0.0.1:1") {
		t.Errorf("Launch error %q, record error %q; want the kind of failure, not the database's address", err, rec.Error)
	}
	e.assertNothingLeft(t, e.user)
}

// TestNoEngine: a resource type without an engine is refused before reserving.
func TestNoEngine(t *testing.T) {
	db := openStore(t, "")
	svc := launch.New(db, nil, nil, launch.Config{}, slog.New(slog.DiscardHandler))
	svc.ExplainMissing(calipso.Docker, "docker is disabled in the settings")
	ctx := context.Background()
	u, err := db.EnsureUser(ctx, "ana")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.SeedImages(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = svc.Launch(ctx, u, "x~1", "base_image")
	if !errors.Is(err, launch.ErrNoEngine) || !strings.Contains(err.Error(), "disabled in the settings") {
		t.Errorf("Launch = %v, want ErrNoEngine with the reason", err)
	}
}

// assertFailedRecord checks that the one record of e is in error with a message.
func assertFailedRecord(t *testing.T, e *env) {
	t.Helper()
	recs := e.records(t)
	if len(recs) != 1 {
		t.Fatalf("%d records, want the failed launch's", len(recs))
	}
	if r := recs[0]; r.State != calipso.Failed || !strings.HasPrefix(r.Error, "launch failed: ") {
		t.Errorf("record = %s %q, want error with a reason", r.State, r.Error)
	}
}

// TestUnenforcedShareRefused: Docker cannot limit disk, so an image with a disk share
// is refused there unless the operator allows it; one without launches.
func TestUnenforcedShareRefused(t *testing.T) {
	e := newEnv(t, envOptions{noGuac: true, edit: func(c *settings.Settings) { c.Workloads.AllowUnenforced = nil }})
	ctx := context.Background()
	ref := e.experiment(t, e.user, "shares", nil, nil)
	_, err := e.svc.Launch(ctx, e.user, ref, desktopImage)
	if !errors.Is(err, launch.ErrUnenforced) || !strings.Contains(err.Error(), "disk") || !strings.Contains(err.Error(), "workloads.allow_unenforced") {
		t.Fatalf("Launch = %v, want ErrUnenforced naming the disk share and the setting", err)
	}
	if n := len(e.records(t)); n != 0 {
		t.Errorf("%d records made, want none", n)
	}
	if _, err := e.db.PutImage(ctx, "test", calipso.Image{PublicName: "no-disk", Image: e.workload, Protocol: "vnc", CPU: 0.5, Memory: "64M", HDD: "0G", ResourceType: "docker"}); err != nil {
		t.Fatal(err)
	}
	r, err := e.svc.Launch(ctx, e.user, ref, "no-disk")
	if err != nil {
		t.Fatalf("an image without a disk share: %v", err)
	}
	if _, err := e.svc.Remove(ctx, r); err != nil {
		t.Fatal(err)
	}
}
