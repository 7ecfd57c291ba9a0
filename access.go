package calipso

import (
	"fmt"
	"slices"
	"time"
)

// Permission is one thing a role allows. Checks name a permission, never a role, so
// that a site's own roles work everywhere the built-in ones do.
type Permission string

// The permissions.
const (
	// PermLaunch: launch resources for one's own experiment sessions.
	PermLaunch Permission = "launch"
	// PermLaunchOwn: launch an own resource (no experiment session), the frontend's
	// "own resource" launcher; login/type/ answers it.
	PermLaunchOwn Permission = "launch_own"
	// PermManageImages: create, change and delete images.
	PermManageImages Permission = "manage_images"
	// PermManageQuotas: read and set other users' quotas.
	PermManageQuotas Permission = "manage_quotas"
	// PermSeeAllResources: read every user's resources and their records.
	PermSeeAllResources Permission = "see_all_resources"
	// PermSupportAccess: connect to another user's desktop, to help them (audited).
	PermSupportAccess Permission = "support_access"
	// PermAdmin: everything else an admin does (users, roles, tokens of others). The
	// admin role has it; a token scoped without it cannot act as an admin.
	PermAdmin Permission = "admin"
)

// Permissions are every permission, in the order documents list them.
var Permissions = []Permission{PermLaunch, PermLaunchOwn, PermManageImages, PermManageQuotas,
	PermSeeAllResources, PermSupportAccess, PermAdmin}

// ParsePermission checks a permission's name.
func ParsePermission(s string) (Permission, error) {
	if p := Permission(s); slices.Contains(Permissions, p) {
		return p, nil
	}
	return "", NewError(EINVALID, fmt.Sprintf("unknown permission %q (want one of %v)", s, Permissions))
}

// The built-in roles. Every account has RoleUser (settings may name another default
// role); RoleAdmin is the account's is_admin flag, the frontend's is_superuser.
const (
	RoleUser  = "user"
	RoleStaff = "staff" // a beamline scientist
	RoleAdmin = "admin"
)

// ValidRoleName says whether name can name a role: 1 to 64 lowercase letters,
// digits, - and _.
func ValidRoleName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Role is a set of permissions with its own limits.
type Role struct {
	Name        string
	Permissions []Permission
	// Quota applies to holders without a quota of their own; nil: the site's default.
	Quota *Quota
	// Images are the public names holders may launch; empty: every image.
	Images []string
	// MaxLifetime bounds how long holders' resources may live; 0: no bound of its own.
	MaxLifetime time.Duration
	// OIDCGroups and SAMLValues map the role from a login: an OpenID groups claim
	// holding one of OIDCGroups, or the SAML role attribute one of SAMLValues.
	OIDCGroups []string
	SAMLValues []string
}

// BuiltinRoles returns the roles every site has, before its settings change them.
func BuiltinRoles() map[string]Role {
	return map[string]Role{
		RoleUser:  {Name: RoleUser, Permissions: []Permission{PermLaunch}},
		RoleStaff: {Name: RoleStaff, Permissions: []Permission{PermLaunch, PermLaunchOwn, PermSeeAllResources, PermSupportAccess}},
		RoleAdmin: {Name: RoleAdmin, Permissions: slices.Clone(Permissions)},
	}
}

// Access is what one request may do: the union of its account's roles, narrowed by
// the scope of the token it came with. The zero Access may do nothing.
type Access struct {
	Roles       []string     // the account's roles, sorted
	Permissions []Permission // sorted as Permissions lists them
	// Quota is the roles' quota (each limit the largest of theirs, a role without a
	// quota counting as the site's default: see QuotaOr); nil when no role
	// sets one, and the site's default applies. A user's own quota overrides both.
	Quota *Quota
	// withDefault: some role sets no quota, so the site's default counts too.
	withDefault bool
	// AllImages is true when some role allows every image; otherwise Images lists
	// the public names allowed.
	AllImages bool
	Images    []string
	// MaxLifetime is the largest of the roles' bounds; 0 when none sets one.
	MaxLifetime time.Duration
}

// AccessOf combines the named roles of roles; names it does not define are ignored
// (the settings check that mapped names exist).
func AccessOf(roles map[string]Role, names []string) Access {
	var a Access
	perms := map[Permission]bool{}
	for _, n := range names {
		r, ok := roles[n]
		if !ok || slices.Contains(a.Roles, n) {
			continue
		}
		a.Roles = append(a.Roles, n)
		for _, p := range r.Permissions {
			perms[p] = true
		}
		if r.Quota == nil {
			a.withDefault = true
		} else {
			if a.Quota == nil {
				q := *r.Quota
				a.Quota = &q
			} else {
				a.Quota.MaxSimultaneous = max(a.Quota.MaxSimultaneous, r.Quota.MaxSimultaneous)
				a.Quota.CPUs = max(a.Quota.CPUs, r.Quota.CPUs)
				a.Quota.MemoryBytes = max(a.Quota.MemoryBytes, r.Quota.MemoryBytes)
				a.Quota.DiskBytes = max(a.Quota.DiskBytes, r.Quota.DiskBytes)
			}
		}
		if len(r.Images) == 0 {
			a.AllImages = true
		}
		for _, im := range r.Images {
			if !slices.Contains(a.Images, im) {
				a.Images = append(a.Images, im)
			}
		}
		a.MaxLifetime = max(a.MaxLifetime, r.MaxLifetime)
	}
	for _, p := range Permissions {
		if perms[p] {
			a.Permissions = append(a.Permissions, p)
		}
	}
	slices.Sort(a.Roles)
	slices.Sort(a.Images)
	return a
}

// Can reports whether the access includes p.
func (a Access) Can(p Permission) bool { return slices.Contains(a.Permissions, p) }

// MayUse reports whether the access allows launching the image of publicName.
func (a Access) MayUse(publicName string) bool {
	return a.AllImages || slices.Contains(a.Images, publicName)
}

// Within narrows the access to the permissions of scope (a token's).
func (a Access) Within(scope []Permission) Access {
	a.Permissions = slices.DeleteFunc(slices.Clone(a.Permissions), func(p Permission) bool { return !slices.Contains(scope, p) })
	return a
}

// QuotaOr is the limit for a user without a quota of their own, def being the
// site's: each limit the largest of the roles', a role without a quota counting as
// def. Roles add to what one may do, never take away: a site lowers its visitors'
// limits through the role every account holds.
func (a Access) QuotaOr(def Quota) Quota {
	if a.Quota == nil {
		return def
	}
	q := *a.Quota
	if a.withDefault {
		q = Quota{MaxSimultaneous: max(q.MaxSimultaneous, def.MaxSimultaneous), CPUs: max(q.CPUs, def.CPUs),
			MemoryBytes: max(q.MemoryBytes, def.MemoryBytes), DiskBytes: max(q.DiskBytes, def.DiskBytes)}
	}
	return q
}

// Policy is a site's roles and the role every account has.
type Policy struct {
	Roles       map[string]Role
	DefaultRole string
	// OfficeRole is held by the accounts the user office authorises to use the
	// facility's privileged resources (login/type/); "": the office grants no role.
	OfficeRole string
}

// OIDCRoles are the roles an OpenID login with groups maps to, sorted.
func (p Policy) OIDCRoles(groups []string) []string {
	return p.mapped(groups, func(r Role) []string { return r.OIDCGroups })
}

// SAMLRoles are the roles a SAML login whose role attribute has values maps to, sorted.
func (p Policy) SAMLRoles(values []string) []string {
	return p.mapped(values, func(r Role) []string { return r.SAMLValues })
}

func (p Policy) mapped(have []string, of func(Role) []string) []string {
	var names []string
	for name, r := range p.Roles {
		if slices.ContainsFunc(of(r), func(v string) bool { return slices.Contains(have, v) }) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// DefaultPolicy is the built-in roles, with RoleUser for every account.
func DefaultPolicy() Policy { return Policy{Roles: BuiltinRoles(), DefaultRole: RoleUser} }

// RoleNames are u's roles under p: the default role, those granted or mapped, and
// admin when u is an admin.
func (p Policy) RoleNames(u User) []string {
	names := slices.Clone(u.Roles)
	if p.DefaultRole != "" {
		names = append(names, p.DefaultRole)
	}
	if u.IsAdmin {
		names = append(names, RoleAdmin)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// Access is what u may do under p (before any token's scope narrows it). The zero
// Policy is DefaultPolicy.
func (p Policy) Access(u User) Access {
	if p.Roles == nil {
		p = DefaultPolicy()
	}
	return AccessOf(p.Roles, p.RoleNames(u))
}

// Token is a personal API token: a secret shown once, stored hashed, that stands for
// its user on the v2 API with at most the permissions of its scope.
type Token struct {
	ID        int64
	UserID    int64
	Username  string
	Name      string // what its owner calls it
	Scope     []Permission
	CreatedBy string // the owner, or the admin who made it for a service account
	Created   time.Time
	Expires   time.Time
	LastUsed  *time.Time
	Revoked   *time.Time
}

// Valid reports whether the token may be used at now: neither revoked nor expired.
func (t Token) Valid(now time.Time) bool { return t.Revoked == nil && now.Before(t.Expires) }
