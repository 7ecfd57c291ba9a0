package settings

import (
	"net/mail"
	"slices"
	"time"

	"github.com/calipsoplus/calipso"
)

// Lifecycle is [lifecycle]: the policies that end resources, run once across
// replicas by the leader.
type Lifecycle struct {
	// Enabled runs the policies; off, resources live until their users remove them
	// (expires_at is still computed and shown).
	Enabled bool `toml:"enabled"`
	// DefaultLifetime is a resource's lifetime; ImageLifetimes override it per image
	// public name ("0s": none). The roles' max_lifetime bounds both.
	DefaultLifetime Duration            `toml:"default_lifetime"`
	ImageLifetimes  map[string]Duration `toml:"image_lifetimes"`
	// TieToSession ends a session's resources SessionGrace after the session's end
	// date, when that comes first.
	TieToSession bool     `toml:"tie_to_session"`
	SessionGrace Duration `toml:"session_grace"`
	// ExpiryAction is what happens at the end of the lifetime: "stop" (the record and
	// its results stay; the user removes it) or "remove". Results are never deleted:
	// they are on the output root, not in the workload.
	ExpiryAction string `toml:"expiry_action"`
	// IdleAfter: a resource idle by every signal (no Guacamole connection, no notebook
	// activity, CPU under IdleCPU cores) this long is acted on with IdleAction; 0: off.
	IdleAfter  Duration `toml:"idle_after"`
	IdleAction string   `toml:"idle_action"`
	IdleCPU    float64  `toml:"idle_cpu"`
	// WarnBefore is how long before an action its user is warned (by mail and in the
	// v2 API).
	WarnBefore Duration `toml:"warn_before"`
	// CheckInterval is how often the leader looks; CallTimeout bounds each signal's
	// read (Guacamole's history, a notebook's status, an engine's stats).
	CheckInterval Duration `toml:"check_interval"`
	CallTimeout   Duration `toml:"call_timeout"`

	// Policy is the lifetime policy as the domain uses it, and Reclaim what the
	// policies do (none when off), made when the settings load.
	Policy  calipso.Lifetime `toml:"-"`
	Reclaim calipso.Reclaim  `toml:"-"`
}

// Mail is [mail]: the SMTP server warnings go out through.
type Mail struct {
	Enabled bool   `toml:"enabled"`
	Host    string `toml:"host"`
	Port    int    `toml:"port"`
	// TLS: "starttls" (required), "tls" (implicit, port 465) or "none" (a relay on
	// the loopback or a private network only; not in prod).
	TLS      string `toml:"tls"`
	Username string `toml:"username"`
	// Password may come from CALIPSO_MAIL_PASSWORD or PasswordFile.
	Password     string   `toml:"password"`
	PasswordFile string   `toml:"password_file"`
	From         string   `toml:"from"`
	Timeout      Duration `toml:"timeout"`
	// Admins are told about policy actions that failed.
	Admins []string `toml:"admins"`
}

func defaultLifecycle() Lifecycle {
	return Lifecycle{ExpiryAction: "stop", IdleAction: "stop", IdleCPU: 0.05, WarnBefore: Duration{24 * time.Hour},
		CheckInterval: Duration{5 * time.Minute}, CallTimeout: Duration{10 * time.Second}, SessionGrace: Duration{7 * 24 * time.Hour}}
}

func defaultMail() Mail { return Mail{Port: 587, TLS: "starttls", Timeout: Duration{30 * time.Second}} }

// lifecycle checks [lifecycle] and [mail] and makes the Policy.
func (s *Settings) lifecycle(bad func(key, format string, args ...any)) {
	l := &s.Lifecycle
	actions := []string{"stop", "remove"}
	if !slices.Contains(actions, l.ExpiryAction) {
		bad("lifecycle.expiry_action", "must be stop or remove")
	}
	if !slices.Contains(actions, l.IdleAction) {
		bad("lifecycle.idle_action", "must be stop or remove")
	}
	for key, d := range map[string]time.Duration{"lifecycle.default_lifetime": l.DefaultLifetime.Duration, "lifecycle.session_grace": l.SessionGrace.Duration,
		"lifecycle.idle_after": l.IdleAfter.Duration, "lifecycle.warn_before": l.WarnBefore.Duration} {
		if d < 0 {
			bad(key, "must not be negative")
		}
	}
	if l.IdleAfter.Duration > 0 && l.IdleAfter.Duration < time.Hour {
		bad("lifecycle.idle_after", "must be an hour at least: idleness is judged from signals read every check_interval")
	}
	if l.IdleCPU < 0 {
		bad("lifecycle.idle_cpu", "must not be negative")
	}
	if l.CheckInterval.Duration < time.Second || l.CheckInterval.Duration > time.Hour {
		bad("lifecycle.check_interval", "must be between 1s and 1h")
	}
	if l.CallTimeout.Duration <= 0 || l.CallTimeout.Duration > time.Minute {
		bad("lifecycle.call_timeout", "must be between 0s and 1m")
	}
	images := map[string]time.Duration{}
	for name, d := range l.ImageLifetimes {
		if d.Duration < 0 {
			bad("lifecycle.image_lifetimes."+name, "must not be negative")
		}
		images[name] = d.Duration
	}
	l.Policy = calipso.Lifetime{Default: l.DefaultLifetime.Duration, Images: images, TieToSession: l.TieToSession, SessionGrace: l.SessionGrace.Duration}
	if l.Enabled {
		l.Reclaim = calipso.Reclaim{ExpiryAction: l.ExpiryAction, IdleAfter: l.IdleAfter.Duration, IdleAction: l.IdleAction, WarnBefore: l.WarnBefore.Duration}
	}

	m := s.Mail
	if !m.Enabled {
		return
	}
	if m.Host == "" || m.Port <= 0 || m.Port > 65535 {
		bad("mail.host", "and mail.port name the SMTP server")
	}
	if !slices.Contains([]string{"starttls", "tls", "none"}, m.TLS) {
		bad("mail.tls", "must be starttls, tls or none")
	}
	if s.Environment == "prod" && m.TLS == "none" {
		bad("mail.tls", "prod sends mail over TLS")
	}
	if m.TLS == "none" && m.Username != "" {
		bad("mail.username", "credentials are not sent in clear: with a username, mail.tls must be starttls or tls")
	}
	if _, err := mail.ParseAddress(m.From); err != nil {
		bad("mail.from", "is not an address: %v", err)
	}
	for _, a := range m.Admins {
		if _, err := mail.ParseAddress(a); err != nil {
			bad("mail.admins", "%q is not an address", a)
		}
	}
	if m.Timeout.Duration <= 0 || m.Timeout.Duration > 5*time.Minute {
		bad("mail.timeout", "must be between 0s and 5m")
	}
}
