package calipso

import "time"

// Lifetime is a site's lifetime policy: how long a resource lives before it is
// stopped or removed, unless its user extends it.
type Lifetime struct {
	// Default is a resource's lifetime unless its image says otherwise; 0: none.
	Default time.Duration
	// Images override Default per public name (0: that image's resources have none).
	Images map[string]time.Duration
	// TieToSession ends a session's resources SessionGrace after the session's end
	// date, when that comes first (beamtime over, data taken home).
	TieToSession bool
	SessionGrace time.Duration
}

// ExpiresAt is when a resource of publicName launched at now, by a holder of a, for
// session (nil: an own resource), reaches its lifetime; nil when it has none. The
// roles' MaxLifetime bounds the lifetime (and gives one to images without).
func (l Lifetime) ExpiresAt(now time.Time, publicName string, a Access, session *Session) *time.Time {
	life, ok := l.Images[publicName]
	if !ok {
		life = l.Default
	}
	if a.MaxLifetime > 0 && (life == 0 || life > a.MaxLifetime) {
		life = a.MaxLifetime
	}
	var at *time.Time
	if life > 0 {
		t := now.Add(life)
		at = &t
	}
	if l.TieToSession && session != nil && !session.EndDate.IsZero() {
		end := session.EndDate.Add(l.SessionGrace)
		if end.Before(now) {
			end = now // launched after the beamtime's grace: it ends at the first check
		}
		if at == nil || end.Before(*at) {
			at = &end
		}
	}
	return at
}

// WithinLimit says whether a resource created at created may live until until under
// a: the roles' MaxLifetime, when they set one.
func (a Access) WithinLimit(created, until time.Time) bool {
	return a.MaxLifetime == 0 || until.Sub(created) <= a.MaxLifetime
}

// The causes of a reclaim, as metrics and notices name them.
const (
	CauseExpired          = "expired"
	CauseIdle             = "idle"
	CauseExtensionRefused = "extension_refused"
)

// The actions of a reclaim.
const (
	ActionStop   = "stop"
	ActionRemove = "remove"
)

// Reclaim is what the policies do to resources, and when.
type Reclaim struct {
	ExpiryAction string        // at the lifetime's end
	IdleAfter    time.Duration // idle this long (0: idleness is not acted on)
	IdleAction   string
	WarnBefore   time.Duration // the warning comes this long before the action
}

// Next is the next action due to r: its cause, what, and when; ok is false when
// none is (no lifetime, not idle, not live).
func (p Reclaim) Next(r Resource) (cause, action string, at time.Time, ok bool) {
	if !r.State.Live() {
		return "", "", time.Time{}, false
	}
	if r.IdleSince != nil && p.IdleAfter > 0 {
		cause, action, at, ok = CauseIdle, p.IdleAction, r.IdleSince.Add(p.IdleAfter), true
	}
	if r.ExpiresAt != nil && (!ok || !r.ExpiresAt.After(at)) {
		cause, action, at, ok = CauseExpired, p.ExpiryAction, *r.ExpiresAt, true
	}
	return cause, action, at, ok
}

// Notice tells r's user what is coming, once they have been warned ("" otherwise).
func (p Reclaim) Notice(r Resource) string {
	cause, action, at, ok := p.Next(r)
	if !ok || r.WarnedAt == nil {
		return ""
	}
	done := map[string]string{ActionStop: "stopped", ActionRemove: "removed"}[action]
	when := at.UTC().Format("2006-01-02 15:04 MST")
	if cause == CauseIdle {
		return "Idle since " + r.IdleSince.UTC().Format("2006-01-02 15:04 MST") + ": it will be " + done + " at " + when +
			" unless it is used. Results in the output folder are kept."
	}
	return "Its lifetime ends at " + when + ": it will be " + done + " then. Ask for an extension to keep it longer. " +
		"Results in the output folder are kept."
}
