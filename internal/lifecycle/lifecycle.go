// Package lifecycle ends resources by policy: at the end of their lifetime, and
// after they have been idle by every activity signal, each time after a warning to
// their user (by mail and in the v2 API). It runs on the leader of the replicas
// (launch.Service.WhileLeading), one pass every check_interval; a pass converges
// whatever the one before it left, since what it does is read off the records.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/store"
)

// Notifier sends messages: warnings to users, failures to admins (internal/mail).
type Notifier interface {
	// Notify sends subject and body to the addresses, returning once the server took
	// it or refused; bounded by ctx.
	Notify(ctx context.Context, to []string, subject, body string) error
}

// A Signal reads one source of activity of a resource. Active says it is in use
// now; last is the latest activity the source knows of (zero: none). A resource is
// idle only when every signal says so: a signal that cannot be read counts as
// active, so that busy work is never culled for want of an answer.
type Signal interface {
	Name() string
	Activity(ctx context.Context, r calipso.Resource, now time.Time) (active bool, last time.Time, err error)
}

// Config is what the controller uses of the settings.
type Config struct {
	Reclaim     calipso.Reclaim
	Interval    time.Duration // between passes
	CallTimeout time.Duration // bounds each signal's read and each mail
	Admins      []string      // told about actions that failed
	Now         func() time.Time
	Log         *slog.Logger
}

// Controller runs the policies.
type Controller struct {
	cfg       Config
	db        *store.Store
	resources calipso.ResourceService
	notifier  Notifier // nil: warnings only in the v2 API
	signals   []Signal
	reclaimed *prometheus.CounterVec
	failed    *prometheus.CounterVec
	warned    prometheus.Counter
}

// New returns a controller; notifier may be nil, and without signals idleness is
// never judged.
func New(cfg Config, db *store.Store, resources calipso.ResourceService, notifier Notifier, signals ...Signal) *Controller {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 10 * time.Second
	}
	return &Controller{cfg: cfg, db: db, resources: resources, notifier: notifier, signals: signals,
		reclaimed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "calipso_resources_reclaimed_total",
			Help: "Resources the lifecycle policies stopped or removed, by cause (expired, idle, extension_refused) and action."}, []string{"cause", "action"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "calipso_reclaim_failures_total",
			Help: "Policy actions that failed (retried at the next pass), by cause."}, []string{"cause"}),
		warned: prometheus.NewCounter(prometheus.CounterOpts{Name: "calipso_reclaim_warnings_total",
			Help: "Warnings sent to users before an action."}),
	}
}

// Collectors are the controller's metrics.
func (c *Controller) Collectors() []prometheus.Collector {
	return []prometheus.Collector{c.reclaimed, c.failed, c.warned}
}

// Run passes every Interval until ctx ends (on the leader: launch.Service.WhileLeading).
func (c *Controller) Run(ctx context.Context) {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		rep := c.Check(ctx)
		if rep.Warned+rep.Reclaimed > 0 || len(rep.Errors) > 0 {
			c.cfg.Log.InfoContext(ctx, "lifecycle pass", "warned", rep.Warned, "reclaimed", rep.Reclaimed, "errors", len(rep.Errors))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Report is what a pass did.
type Report struct {
	Warned, Reclaimed int
	Errors            []error
}

// Check is one pass over the running resources: idleness read, warnings sent,
// actions due taken.
func (c *Controller) Check(ctx context.Context) Report {
	var rep Report
	start := c.cfg.Now()
	rs, err := c.db.Resources(ctx, store.ResourceFilter{States: []calipso.State{calipso.Running}})
	if err != nil {
		rep.Errors = append(rep.Errors, fmt.Errorf("lifecycle: list resources: %w", err))
		return rep
	}
	for _, r := range rs {
		if ctx.Err() != nil {
			break
		}
		if err := c.one(ctx, r, start, &rep); err != nil {
			rep.Errors = append(rep.Errors, err)
		}
	}
	return rep
}

// one converges one resource: its idleness, its warning, its action.
func (c *Controller) one(ctx context.Context, r calipso.Resource, start time.Time, rep *Report) error {
	p := c.cfg.Reclaim
	if p.IdleAfter > 0 && len(c.signals) > 0 {
		idle, err := c.idleSince(ctx, r, start)
		if err != nil {
			return err
		}
		if !sameTime(idle, r.IdleSince) {
			// Activity moved the idleness (or ended it): a warning about it is void.
			// One about the lifetime's end stands.
			cause, _, _, _ := p.Next(r)
			if err := c.db.SetIdleSince(ctx, r.ID, idle, r.WarnedAt != nil && cause == calipso.CauseIdle); err != nil {
				return err
			}
			if r, err = c.db.Resource(ctx, r.ID); err != nil {
				return err
			}
		}
	}
	cause, action, at, ok := p.Next(r)
	if !ok || action == "" || start.Before(at.Add(-p.WarnBefore)) {
		return nil
	}
	// A new deadline (an extension, a user back and idle again) clears the warning:
	// the store does it with the change.
	if r.WarnedAt == nil {
		rep.Warned++
		return c.warn(ctx, r, action, start)
	}
	// The action comes after the warning, in a later pass: a user warned now is never
	// culled in the same breath.
	if start.Before(at) || !r.WarnedAt.Before(start) {
		return nil
	}
	if cause == calipso.CauseExpired {
		if refused, err := c.db.Extensions(ctx, r.ID, calipso.ExtensionRefused); err == nil && len(refused) > 0 {
			cause = calipso.CauseExtensionRefused
		}
	}
	var err error
	switch action {
	case calipso.ActionRemove:
		_, err = c.resources.Remove(ctx, r)
	default:
		_, err = c.resources.Stop(ctx, r)
	}
	if err != nil {
		c.failed.WithLabelValues(cause).Inc()
		c.tellAdmins(ctx, r, cause, action, err)
		return fmt.Errorf("lifecycle: %s resource %d (%s): %w", action, r.ID, cause, err)
	}
	c.reclaimed.WithLabelValues(cause, action).Inc()
	rep.Reclaimed++
	c.cfg.Log.InfoContext(ctx, "resource reclaimed by policy", "resource", r.ID, "user", r.Username, "cause", cause, "action", action)
	return nil
}

// sameTime reports whether a and b are both nil or the same instant (to the
// microsecond the databases keep).
func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Truncate(time.Microsecond).Equal(b.Truncate(time.Microsecond))
}

// idleSince reads every signal: nil when one says active (or cannot be read), else
// the latest activity any of them knows of, or when the resource started.
func (c *Controller) idleSince(ctx context.Context, r calipso.Resource, now time.Time) (*time.Time, error) {
	since := r.Created
	if r.Started != nil {
		since = *r.Started
	}
	for _, s := range c.signals {
		sctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
		active, last, err := s.Activity(sctx, r, now)
		cancel()
		if err != nil {
			c.cfg.Log.WarnContext(ctx, "activity signal unreadable: counted as active", "signal", s.Name(), "resource", r.ID, "err", err)
			return nil, nil
		}
		if active {
			return nil, nil
		}
		if last.After(since) {
			since = last
		}
	}
	return &since, nil
}

// warn tells r's user what is coming and marks the record warned (the v2 API's
// notice). A user without an address, or a mail that fails, is logged: the notice
// stands, and the action waits for it, not for the mail.
func (c *Controller) warn(ctx context.Context, r calipso.Resource, action string, now time.Time) error {
	if err := c.db.SetWarned(ctx, r.ID, now); err != nil {
		return err
	}
	c.warned.Inc()
	if c.notifier == nil {
		return nil
	}
	u, err := c.db.User(ctx, r.Username)
	if err != nil {
		return err
	}
	if u.Email == "" {
		c.cfg.Log.InfoContext(ctx, "lifecycle warning: no address for the user, notice in the API only", "user", u.Username, "resource", r.ID)
		return nil
	}
	r.WarnedAt = &now
	subject := fmt.Sprintf("Calipso: your %s (%s) will be %s", r.PublicName, r.Experiment, pastTense(action))
	body := fmt.Sprintf("Hello %s,\n\n%s\n\nResource: %s, launched %s for %s.\n",
		u.Username, c.cfg.Reclaim.Notice(r), r.PublicName, r.Created.UTC().Format("2006-01-02 15:04 MST"), r.Experiment)
	mctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	if err := c.notifier.Notify(mctx, []string{u.Email}, subject, body); err != nil {
		c.cfg.Log.WarnContext(ctx, "lifecycle warning: mail failed, notice in the API only", "user", u.Username, "resource", r.ID, "err", err)
	}
	return nil
}

// tellAdmins mails the admins an action that failed (it is retried at the next pass).
func (c *Controller) tellAdmins(ctx context.Context, r calipso.Resource, cause, action string, failure error) {
	if c.notifier == nil || len(c.cfg.Admins) == 0 {
		return
	}
	mctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	body := fmt.Sprintf("The lifecycle policy could not %s resource %d (%s of %s, %s): %v\nIt is tried again at every pass.\n",
		action, r.ID, r.PublicName, r.Username, cause, failure)
	if err := c.notifier.Notify(mctx, c.cfg.Admins, "Calipso: a policy action failed", body); err != nil && !errors.Is(err, context.Canceled) {
		c.cfg.Log.WarnContext(ctx, "lifecycle: mail to the admins failed", "err", err)
	}
}

func pastTense(action string) string {
	if action == calipso.ActionRemove {
		return "removed"
	}
	return "stopped"
}
