package settings

import (
	"slices"
	"sort"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/quotas"
)

// Access is [access]: the roles, how logins map to them, and personal API tokens.
type Access struct {
	// DefaultRole is held by every account ("user" unless set).
	DefaultRole string `toml:"default_role"`
	// OfficeRole is held by the accounts the user office authorises to use the
	// facility's privileged resources (its "is authorised" answer, login/type/);
	// empty: the office grants no role (login/type/ still answers it).
	OfficeRole string `toml:"office_role"`
	// SAMLAttribute names the SAML attribute (or, in header mode, the header) whose
	// values map to roles through each role's saml_values; empty: SAML maps none.
	SAMLAttribute string `toml:"saml_attribute"`
	// Roles change the built-in roles (user, staff, admin) and define the site's own.
	Roles map[string]RoleSettings `toml:"roles"`
	// TokenLifetime is a token's life when its creator names none; TokenMaxLifetime
	// the longest one may ask for.
	TokenLifetime    Duration `toml:"token_lifetime"`
	TokenMaxLifetime Duration `toml:"token_max_lifetime"`

	// Policy is the roles as the domain uses them, made when the settings load.
	Policy calipso.Policy `toml:"-"`
}

// RoleSettings is one [access.roles.<name>] table. A built-in role keeps what a key
// leaves out; a site's role starts with nothing.
type RoleSettings struct {
	// Permissions: launch, launch_own, manage_images, manage_quotas,
	// see_all_resources, support_access, admin.
	Permissions *[]string `toml:"permissions"`
	// The role's quota, for holders without their own; a key left out keeps the site's
	// default ([quotas]). With several roles, each limit is the largest of theirs.
	MaxSimultaneous *int   `toml:"max_simultaneous"`
	CPU             string `toml:"cpu"`
	Memory          string `toml:"memory"`
	HDD             string `toml:"hdd"`
	// Images are the public names holders may launch; empty: every image.
	Images []string `toml:"images"`
	// MaxLifetime bounds how long holders' resources live (0: no bound of its own).
	MaxLifetime Duration `toml:"max_lifetime"`
	// OIDCGroups and SAMLValues give the role at login: an OpenID groups claim
	// ([oidc] groups_claim) holding one of OIDCGroups, or the SAML attribute
	// saml_attribute holding one of SAMLValues.
	OIDCGroups []string `toml:"oidc_groups"`
	SAMLValues []string `toml:"saml_values"`
}

// policy checks [access] and makes the Policy; def is the site's default quota.
func (a *Access) policy(def calipso.Quota, bad func(key, format string, args ...any)) {
	roles := calipso.BuiltinRoles()
	if a.DefaultRole == "" {
		a.DefaultRole = calipso.RoleUser
	}
	names := make([]string, 0, len(a.Roles))
	for name := range a.Roles {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		rs, key := a.Roles[name], "access.roles."+name
		if !calipso.ValidRoleName(name) {
			bad(key, "a role's name is 1 to 64 lowercase letters, digits, - and _")
			continue
		}
		r, builtin := roles[name]
		r.Name = name
		switch {
		case rs.Permissions != nil:
			r.Permissions = nil
			for _, p := range *rs.Permissions {
				perm, err := calipso.ParsePermission(p)
				if err != nil {
					bad(key+".permissions", "%v", calipso.ErrorMessage(err))
					continue
				}
				if !slices.Contains(r.Permissions, perm) {
					r.Permissions = append(r.Permissions, perm)
				}
			}
		case !builtin:
			bad(key+".permissions", "a site's own role must list its permissions (an empty list for none)")
		}
		if name == calipso.RoleAdmin && !slices.Contains(r.Permissions, calipso.PermAdmin) {
			bad(key+".permissions", "the admin role keeps the admin permission (it is the is_admin flag)")
		}
		if rs.MaxSimultaneous != nil || rs.CPU != "" || rs.Memory != "" || rs.HDD != "" {
			q := def
			var err error
			if rs.MaxSimultaneous != nil {
				if q.MaxSimultaneous = *rs.MaxSimultaneous; q.MaxSimultaneous < 0 {
					bad(key+".max_simultaneous", "must not be negative")
				}
			}
			if rs.CPU != "" {
				if q.CPUs, err = quotas.ParseCPUs(rs.CPU); err != nil {
					bad(key+".cpu", "%v", err)
				}
			}
			if rs.Memory != "" {
				if q.MemoryBytes, err = quotas.ParseGiB(rs.Memory); err != nil {
					bad(key+".memory", "%v", err)
				}
			}
			if rs.HDD != "" {
				if q.DiskBytes, err = quotas.ParseGiB(rs.HDD); err != nil {
					bad(key+".hdd", "%v", err)
				}
			}
			r.Quota = &q
		}
		if rs.Images != nil {
			r.Images = rs.Images
		}
		if rs.MaxLifetime.Duration < 0 {
			bad(key+".max_lifetime", "must not be negative")
		}
		if rs.MaxLifetime.Duration != 0 {
			r.MaxLifetime = rs.MaxLifetime.Duration
		}
		r.OIDCGroups, r.SAMLValues = rs.OIDCGroups, rs.SAMLValues
		roles[name] = r
	}
	for _, k := range []struct{ key, role string }{{"access.default_role", a.DefaultRole}, {"access.office_role", a.OfficeRole}} {
		if _, ok := roles[k.role]; k.role != "" && !ok {
			bad(k.key, "names no role (built-in: user, staff, admin; or define [access.roles.%s])", k.role)
		}
	}
	if a.TokenLifetime.Duration <= 0 || a.TokenMaxLifetime.Duration <= 0 {
		bad("access.token_lifetime", "and access.token_max_lifetime must be positive")
	} else if a.TokenLifetime.Duration > a.TokenMaxLifetime.Duration {
		bad("access.token_lifetime", "must not exceed access.token_max_lifetime (%v)", a.TokenMaxLifetime.Duration)
	}
	a.Policy = calipso.Policy{Roles: roles, DefaultRole: a.DefaultRole, OfficeRole: a.OfficeRole}
}

// defaultAccess is [access] when the file says nothing.
func defaultAccess() Access {
	return Access{DefaultRole: calipso.RoleUser, TokenLifetime: Duration{30 * 24 * time.Hour},
		TokenMaxLifetime: Duration{365 * 24 * time.Hour}}
}
