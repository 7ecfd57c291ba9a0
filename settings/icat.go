package settings

import (
	"strings"
	"time"
)

// ICAT is [icat]: experiments from an ICAT data catalogue (its ICAT+ REST
// interface) instead of the user office, as CalipsoPlus' ICAT plugin read them.
// Logins stay as they are (local, Umbrella, OpenID Connect).
type ICAT struct {
	// Enabled takes experiments from the catalogue (with user_office.dynamic_experiments;
	// stored locally like the office's: favourites persist, a stale copy serves when the
	// catalogue is down).
	Enabled bool   `toml:"enabled"`
	URL     string `toml:"url"`
	Plugin  string `toml:"plugin"` // ICAT's authentication plugin (db, ldap, ...)
	// Username and Password are a reader's service credentials; the password may come
	// from CALIPSO_ICAT_PASSWORD or PasswordFile.
	Username     string `toml:"username"`
	Password     string `toml:"password"`
	PasswordFile string `toml:"password_file"`
	// OpenIDConnect opens the catalogue session with the user's OpenID access token
	// (for users logged in through [oidc]): the catalogue itself limits what they see.
	OpenIDConnect bool `toml:"openid_connect"`
	// IncludeReleased adds the released (public) investigations to every user's list.
	IncludeReleased bool     `toml:"include_released"`
	Timeout         Duration `toml:"timeout"`
	Retries         int      `toml:"retries"` // more attempts for reads only
	// Embedded serves the reference ICAT+ server in-process with its demo data (not in
	// prod), as user_office.embedded does.
	Embedded bool `toml:"embedded"`
}

func defaultICAT() ICAT { return ICAT{Timeout: Duration{10 * time.Second}, Retries: 2} }

// icat checks [icat].
func (s *Settings) icat(bad func(key, format string, args ...any), checkURL func(key, value string, required bool)) {
	c := s.ICAT
	if !c.Enabled {
		return
	}
	if !c.Embedded {
		checkURL("icat.url", c.URL, true)
		if c.Plugin == "" {
			bad("icat.plugin", "is required (the catalogue's authentication plugin)")
		}
		if c.Username == "" || c.Password == "" {
			bad("icat.username", "and icat.password (or CALIPSO_ICAT_PASSWORD / icat.password_file) are required: a reader's service credentials")
		}
	}
	if c.Embedded && s.Environment == "prod" {
		bad("icat.embedded", "the demo catalogue is not for prod: set the facility's ICAT+ URL")
	}
	if c.Timeout.Duration <= 0 || c.Timeout.Duration > time.Minute {
		bad("icat.timeout", "must be between 0s and 1m")
	}
	if c.Retries < 0 || c.Retries > 5 {
		bad("icat.retries", "must be between 0 and 5")
	}
	if c.OpenIDConnect && !s.OIDC.Enabled {
		bad("icat.openid_connect", "needs [oidc] enabled: the user's token comes from its login")
	}
	if s.Environment == "prod" && strings.HasPrefix(c.URL, "http://") {
		bad("icat.url", "prod needs an https catalogue")
	}
}
