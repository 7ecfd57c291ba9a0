package lifecycle_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/launch"
	"github.com/calipsoplus/calipso/internal/lifecycle"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/provisioner/static"
	"github.com/calipsoplus/calipso/settings"
)

// mailbox records what was sent (the SMTP tests use a real server: mail_test.go).
type mailbox struct {
	mu   sync.Mutex
	sent []sentMail
}

type sentMail struct {
	to            []string
	subject, body string
}

func (m *mailbox) Notify(_ context.Context, to []string, subject, body string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sent = append(m.sent, sentMail{to, subject, body})
	return nil
}

func (m *mailbox) count() int { m.mu.Lock(); defer m.mu.Unlock(); return len(m.sent) }

// clock is the controlled time of a test: passes read it, nothing sleeps.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// fixture is a store, a launch service with the static-link engine, and alice.
type fixture struct {
	db    *store.Store
	svc   *launch.Service
	alice calipso.User
	clock *clock
	mail  *mailbox
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, "sqlite", filepath.Join(t.TempDir(), "calipso.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := db.Migrate(ctx, quiet); err != nil {
		t.Fatal(err)
	}
	if err := db.SeedImages(ctx); err != nil {
		t.Fatal(err)
	}
	alice, err := db.EnsureUser(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.SetProfile(ctx, "test", "alice", "alice@facility.example", alice.UUID); err != nil {
		t.Fatal(err)
	}
	cfg := settings.Defaults()
	cfg.Instance = "lifecycle"
	cfg.Quotas.Default = calipso.Quota{MaxSimultaneous: 10, CPUs: 10, MemoryBytes: 30 << 30, DiskBytes: 80 << 30}
	svc := launch.New(db, map[calipso.ResourceType]provisioner.Provisioner{calipso.StaticLink: static.New()}, nil, launch.ConfigFrom(cfg), quiet)
	return &fixture{db: db, svc: svc, alice: alice, clock: &clock{t: time.Now()}, mail: &mailbox{}}
}

// launch starts a static link (an own resource) and gives it an expiry (nil: none).
func (f *fixture) launch(t *testing.T, id string, expires *time.Time) calipso.Resource {
	t.Helper()
	r, err := f.svc.Launch(context.Background(), f.alice, id, "static_link")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.db.SetExpiry(context.Background(), r.ID, expires); err != nil {
		t.Fatal(err)
	}
	return r
}

func (f *fixture) state(t *testing.T, r calipso.Resource) calipso.State {
	t.Helper()
	got, err := f.db.Resource(context.Background(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	return got.State
}

func (f *fixture) controller(reclaim calipso.Reclaim, resources calipso.ResourceService, signals ...lifecycle.Signal) *lifecycle.Controller {
	return lifecycle.New(lifecycle.Config{Reclaim: reclaim, Interval: time.Minute, Now: f.clock.now, Admins: []string{"ops@facility.example"},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, f.db, resources, f.mail, signals...)
}

func pass(t *testing.T, c *lifecycle.Controller) lifecycle.Report {
	t.Helper()
	rep := c.Check(context.Background())
	for _, err := range rep.Errors {
		t.Errorf("pass: %v", err)
	}
	return rep
}

var policy = calipso.Reclaim{ExpiryAction: calipso.ActionStop, IdleAfter: 4 * time.Hour, IdleAction: calipso.ActionRemove, WarnBefore: 24 * time.Hour}

// TestExpiry: a resource is warned warn_before its lifetime ends and stopped when it
// has ended, in a later pass than its warning; the others are spared.
func TestExpiry(t *testing.T) {
	f := newFixture(t)
	c := f.controller(policy, f.svc)
	now := f.clock.now()
	in := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
	soon := f.launch(t, "soon", in(time.Hour))
	never := f.launch(t, "never", nil)
	later := f.launch(t, "later", in(10*24*time.Hour))
	late := f.launch(t, "late", in(-time.Hour)) // ended before any warning: warned first

	if rep := pass(t, c); rep.Warned != 2 || rep.Reclaimed != 0 {
		t.Fatalf("first pass: %+v", rep)
	}
	if n := f.mail.count(); n != 2 {
		t.Fatalf("%d mails, want 2", n)
	}
	if m := f.mail.sent[0]; m.to[0] != "alice@facility.example" || !strings.Contains(m.subject, "stopped") || !strings.Contains(m.body, "lifetime ends") {
		t.Errorf("warning = %+v", m)
	}
	f.clock.add(30 * time.Minute)
	if rep := pass(t, c); rep.Warned != 0 || rep.Reclaimed != 1 || f.state(t, late) != calipso.Stopped {
		t.Fatalf("second pass: %+v, late is %s", rep, f.state(t, late))
	}
	f.clock.add(31 * time.Minute)
	pass(t, c)
	for r, want := range map[calipso.Resource]calipso.State{soon: calipso.Stopped, never: calipso.Running, later: calipso.Running} {
		if got := f.state(t, r); got != want {
			t.Errorf("%s is %s, want %s", r.Experiment, got, want)
		}
	}
	if got := metric(t, c, "calipso_resources_reclaimed_total", calipso.CauseExpired, calipso.ActionStop); got != 2 {
		t.Errorf("reclaimed as expired: %v, want 2", got)
	}
}

// metric is the value of the controller's counter name with the labels cause and
// action.
func metric(t *testing.T, c *lifecycle.Controller, name, cause, action string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c.Collectors()...)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["cause"] == cause && labels["action"] == action {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// idleSignal says what a test wants of one source of activity.
type idleSignal struct {
	name   string
	active func(calipso.Resource) bool
	last   time.Time
	err    error
}

func (s idleSignal) Name() string { return s.name }
func (s idleSignal) Activity(_ context.Context, r calipso.Resource, _ time.Time) (bool, time.Time, error) {
	return s.active != nil && s.active(r), s.last, s.err
}

// TestIdle: a resource every signal calls idle gets idle_since (its latest activity),
// a warning, then its action idle_after later; one signal that says active, or
// cannot be read, spares it.
func TestIdle(t *testing.T) {
	f := newFixture(t)
	quiet := f.launch(t, "quiet", nil)
	busy := f.launch(t, "busy", nil)
	// Five hours on, the last disconnect three hours ago: due at idle_after (4h) after it.
	lastSeen := f.clock.now().Add(2 * time.Hour)
	f.clock.add(5 * time.Hour)
	signals := []lifecycle.Signal{
		idleSignal{name: "guacamole", last: lastSeen},
		idleSignal{name: "notebook", active: func(r calipso.Resource) bool { return r.ID == busy.ID }},
		idleSignal{name: "cpu"},
	}
	c := f.controller(policy, f.svc, signals...)
	if rep := pass(t, c); rep.Warned != 1 {
		t.Fatalf("first pass: %+v", rep) // due at lastSeen+4h, within warn_before
	}
	r, _ := f.db.Resource(context.Background(), quiet.ID)
	if r.IdleSince == nil || r.IdleSince.Sub(lastSeen).Abs() > time.Millisecond {
		t.Fatalf("idle since %v, want %v (the latest activity a signal knows of)", r.IdleSince, lastSeen)
	}
	if b, _ := f.db.Resource(context.Background(), busy.ID); b.IdleSince != nil {
		t.Fatalf("the busy one is idle since %v", b.IdleSince)
	}
	f.clock.add(30 * time.Minute)
	if rep := pass(t, c); rep.Reclaimed != 0 {
		t.Fatalf("acted before idle_after: %+v", rep)
	}
	f.clock.add(31 * time.Minute)
	if rep := pass(t, c); rep.Reclaimed != 1 || f.state(t, quiet) != calipso.Removed || f.state(t, busy) != calipso.Running {
		t.Fatalf("after idle_after: %+v; quiet %s, busy %s", rep, f.state(t, quiet), f.state(t, busy))
	}

	t.Run("a signal that cannot be read spares it", func(t *testing.T) {
		f := newFixture(t)
		r := f.launch(t, "unknown", nil)
		c := f.controller(policy, f.svc, idleSignal{name: "guacamole"}, idleSignal{name: "cpu", err: errors.New("engine down")})
		f.clock.add(24 * time.Hour)
		pass(t, c)
		pass(t, c)
		if got, _ := f.db.Resource(context.Background(), r.ID); got.IdleSince != nil || got.State != calipso.Running {
			t.Fatalf("idle since %v, %s", got.IdleSince, got.State)
		}
	})
}

// failingStop is a ResourceService whose stops fail (the engine is down).
type failingStop struct{ calipso.ResourceService }

func (failingStop) Stop(context.Context, calipso.Resource) (calipso.Resource, error) {
	return calipso.Resource{}, provisioner.ErrUnavailable
}

// TestFailedActionTellsAdmins: an action that fails is counted, the admins are told,
// and the next pass tries again.
func TestFailedActionTellsAdmins(t *testing.T) {
	f := newFixture(t)
	past := f.clock.now().Add(-time.Hour)
	r := f.launch(t, "stuck", &past)
	c := f.controller(policy, failingStop{f.svc})
	pass(t, c) // the warning
	f.clock.add(time.Minute)
	if rep := c.Check(context.Background()); len(rep.Errors) != 1 {
		t.Fatalf("a failed stop: %+v", rep)
	}
	if m := f.mail.sent[len(f.mail.sent)-1]; m.to[0] != "ops@facility.example" || !strings.Contains(m.body, "could not stop") {
		t.Fatalf("admins' mail = %+v", m)
	}
	ok := f.controller(policy, f.svc)
	f.clock.add(time.Minute)
	if rep := pass(t, ok); rep.Reclaimed != 1 || f.state(t, r) != calipso.Stopped {
		t.Fatalf("retry: %+v, %s", rep, f.state(t, r))
	}
}

// TestExtensionRefusedCause: a resource whose extension an admin refused is
// reclaimed, at its lifetime's end, as "extension_refused".
func TestExtensionRefusedCause(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	soon := f.clock.now().Add(time.Hour)
	r := f.launch(t, "refused", &soon)
	e, err := f.db.RequestExtension(ctx, "alice", r.ID, 48*time.Hour, "more beamtime", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.DecideExtension(ctx, "carol", e.ID, false); err != nil {
		t.Fatal(err)
	}
	c := f.controller(policy, f.svc)
	pass(t, c)
	f.clock.add(2 * time.Hour)
	pass(t, c)
	if got := metric(t, c, "calipso_resources_reclaimed_total", calipso.CauseExtensionRefused, calipso.ActionStop); got != 1 {
		t.Fatalf("reclaimed as extension_refused: %v", got)
	}
}
