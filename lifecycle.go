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
