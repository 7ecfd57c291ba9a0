package server_test

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/experiments/useroffice"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/settings"
)

// The demo accounts as the access tests use them: alice holds the default role
// (user), bob is granted staff, carol is an admin (settings auth.admins). Each has
// an experiment session of its own.
var accessSessions = map[string]string{"alice": "2019002~2019002-01", "bob": "2020002~2020002-01", "carol": "2021001~2021001-01"}

// otherOf is whom a caller acts for in the "another user's" rows.
var otherOf = map[string]string{"alice": "bob", "bob": "alice", "carol": "alice"}

// credential is one way of calling the API: a browser with the login session, or a
// bearer credential (an API token, an OpenID JWT).
type credential struct {
	name   string
	user   string
	bearer string // "": the browser's cookies
	b      *browser
}

func (c credential) do(t *testing.T, method, path string, body any) answer {
	t.Helper()
	return c.b.in(t).do(method, path, body)
}

// bearerBrowser is a script's client: no cookies, no Origin, the token on every call.
func bearerBrowser(h *harness, token string) *browser {
	b := h.browser()
	b.origin = ""
	b.header.Set("Authorization", "Bearer "+token)
	b.header.Set("X-CSRFToken", "") // none: a bearer credential needs none
	return b
}

// makeToken creates an API token through the API, as b's user, and returns its secret.
func makeToken(t *testing.T, b *browser, body map[string]any) string {
	t.Helper()
	a := b.in(t).do(http.MethodPost, "api/v2/tokens", body)
	wantStatus(t, a, http.StatusCreated)
	secret, _ := a.object(t)["secret"].(string)
	if !strings.HasPrefix(secret, store.TokenPrefix) {
		t.Fatalf("token answer without its secret: %s", a.body)
	}
	return secret
}

// accessSetup logs the three accounts in, grants bob staff, fetches everyone's
// experiments, and launches one static link per account (record ids in launched).
type accessSetup struct {
	h        *harness
	cookies  map[string]*browser
	launched map[string]int64
}

func newAccessSetup(t *testing.T, opts ...harnessOption) *accessSetup {
	t.Helper()
	s := &accessSetup{h: newHarness(t, opts...), cookies: map[string]*browser{}, launched: map[string]int64{}}
	grantStaff(t, s.h, "bob")
	for _, u := range []string{"alice", "bob", "carol"} {
		s.cookies[u] = s.h.loggedIn(u)
		wantStatus(t, s.cookies[u].do(http.MethodGet, "users/"+u+"/experiments/", nil), http.StatusOK)
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		a := s.cookies[u].do(http.MethodPost, "api/v2/resources", map[string]string{"experiment": accessSessions[u], "image": "static_link"})
		wantStatus(t, a, http.StatusAccepted)
		s.launched[u] = int64(a.object(t)["id"].(float64))
	}
	for u, id := range s.launched {
		waitRunning(t, s.h, id, u)
	}
	return s
}

// grantStaff grants user the staff role, as `calipso user role add` does, before
// the user logs in (a server sees another process's changes within cache_ttl).
func grantStaff(t *testing.T, h *harness, user string) {
	t.Helper()
	ctx := context.Background()
	if _, err := h.db.EnsureUser(ctx, user); err != nil {
		t.Fatal(err)
	}
	if _, err := h.db.SetRoles(ctx, "test", user, store.RoleGranted, []string{calipso.RoleStaff}); err != nil {
		t.Fatal(err)
	}
}

func waitRunning(t *testing.T, h *harness, id int64, who string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := h.db.Resource(context.Background(), id)
		if err == nil && r.State == calipso.Running {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's static link %d did not run: %+v, %v", who, id, r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAccessMatrix: every endpoint that needs a permission, called by the user, staff
// and admin roles, through the login session's cookie, a full-scope API token and,
// for the v2 API, tokens of narrower scopes. What each role may do is what
// settings/local.toml documents; a token never does more than its scope.
func TestAccessMatrix(t *testing.T) {
	s := newAccessSetup(t)
	h := s.h
	other := func(u string) int64 { return s.launched[otherOf[u]] }
	quota := map[string]any{"cpu": "2", "memory": "4G", "hdd": "10G", "max_simultaneous": 3}

	type row struct {
		name, method string
		path         func(me string) string
		body         any
		// want is the status for user, staff and admin, in that order.
		want [3]int
		v2   bool // tokens are accepted (v2 API)
	}
	p := func(format string) func(string) string {
		return func(me string) string {
			return strings.NewReplacer("{me}", me, "{other}", otherOf[me], "{session}", accessSessions[me],
				"{other_id}", strconv.FormatInt(other(me), 10)).Replace(format)
		}
	}
	const ok, created, accepted, forbidden, notFound = http.StatusOK, http.StatusCreated, http.StatusAccepted, http.StatusForbidden, http.StatusNotFound
	rows := []row{
		// Users (admin).
		{name: "list users", method: "GET", path: p("users/"), want: [3]int{forbidden, forbidden, ok}},
		{name: "another user", method: "GET", path: p("users/{other}/"), want: [3]int{forbidden, forbidden, ok}},
		{name: "own user", method: "GET", path: p("users/{me}/"), want: [3]int{ok, ok, ok}},
		{name: "another's admin flag", method: "GET", path: p("users/{other}/admin"), want: [3]int{forbidden, forbidden, ok}},
		{name: "another's experiments", method: "GET", path: p("users/{other}/experiments/"), want: [3]int{forbidden, forbidden, ok}},
		// Quotas (manage_quotas).
		{name: "own quota", method: "GET", path: p("quota/{me}/"), want: [3]int{ok, ok, ok}},
		{name: "another's quota", method: "GET", path: p("quota/{other}/"), want: [3]int{forbidden, forbidden, ok}},
		{name: "another's used quota", method: "GET", path: p("used_quota/{other}/"), want: [3]int{forbidden, forbidden, ok}},
		{name: "set a quota", method: "PUT", path: p("quota/{other}/"), body: quota, want: [3]int{forbidden, forbidden, ok}},
		// Images (manage_images): a missing image is 404 only to those who may change it.
		{name: "delete an image", method: "DELETE", path: p("images/no_such_image/"), want: [3]int{forbidden, forbidden, notFound}},
		// Resources (see_all_resources; acting for another: admin).
		{name: "another's resources", method: "GET", path: p("resource/list/{other}/"), want: [3]int{forbidden, ok, ok}},
		{name: "another's containers", method: "GET", path: p("users/{other}/containers/"), want: [3]int{forbidden, ok, ok}},
		{name: "all containers", method: "GET", path: p("containers/"), want: [3]int{forbidden, ok, ok}},
		{name: "active containers", method: "GET", path: p("activecontainers/"), want: [3]int{forbidden, ok, ok}},
		{name: "a container by id", method: "GET", path: p("containers/{other_id}/"), want: [3]int{forbidden, ok, ok}},
		{name: "launch for another", method: "GET", path: p("resource/run/{other}/x1/static_link/"), want: [3]int{forbidden, forbidden, created}},
		{name: "launch own session", method: "GET", path: p("resource/run/{me}/{session}/static_link/"), want: [3]int{http.StatusConflict, http.StatusConflict, http.StatusConflict}},
		// An own resource: launch_own (staff, admin); alice's office does not authorise her.
		{name: "launch an own resource", method: "GET", path: p("resource/run/{me}/own1/static_link/"), want: [3]int{forbidden, created, created}},
		// v2.
		{name: "v2 me", method: "GET", path: p("api/v2/me"), want: [3]int{ok, ok, ok}, v2: true},
		{name: "v2 own resources", method: "GET", path: p("api/v2/resources"), want: [3]int{ok, ok, ok}, v2: true},
		{name: "v2 all resources", method: "GET", path: p("api/v2/resources?all=true"), want: [3]int{forbidden, ok, ok}, v2: true},
		{name: "v2 another's record", method: "GET", path: p("api/v2/resources/{other_id}"), want: [3]int{notFound, ok, ok}, v2: true},
		{name: "v2 another's connection", method: "GET", path: p("api/v2/resources/{other_id}/connection"), want: [3]int{notFound, ok, ok}, v2: true},
		{name: "v2 another's roles", method: "GET", path: p("api/v2/users/{other}/roles"), want: [3]int{forbidden, forbidden, ok}, v2: true},
		{name: "v2 grant roles", method: "PUT", path: p("api/v2/users/{other}/roles"), body: map[string]any{"roles": []string{}}, want: [3]int{forbidden, forbidden, ok}, v2: true},
		{name: "v2 launch", method: "POST", path: p("api/v2/resources"), body: map[string]string{"experiment": "zz9", "image": "static_link"}, want: [3]int{forbidden, accepted, accepted}, v2: true},
	}
	roles := []string{"alice", "bob", "carol"}
	creds := []credential{}
	for _, u := range roles {
		creds = append(creds, credential{name: "cookie", user: u, b: s.cookies[u]})
	}
	for _, u := range roles {
		secret := makeToken(t, s.cookies[u], map[string]any{"name": "matrix"})
		creds = append(creds, credential{name: "token", user: u, bearer: secret, b: bearerBrowser(h, secret)})
	}
	for _, c := range creds {
		for _, r := range rows {
			if c.bearer != "" && !r.v2 {
				continue
			}
			want := r.want[slices.Index(roles, c.user)]
			if r.name == "v2 launch" {
				// Each launch needs an own resource id of its own.
				r.body = map[string]string{"experiment": "m" + c.name + c.user, "image": "static_link"}
			}
			t.Run(c.name+"/"+c.user+"/"+r.name, func(t *testing.T) {
				a := c.do(t, r.method, r.path(c.user), r.body)
				if a.status != want {
					t.Fatalf("%s %s = %d %s, want %d", r.method, r.path(c.user), a.status, a.body, want)
				}
				if want >= 400 {
					wantError(t, a, want)
				}
			})
		}
	}

	t.Run("support access is audited", func(t *testing.T) {
		id := s.launched["alice"] // bob's "another's connection" rows read it
		entries, err := h.db.Audit(context.Background(), "resource", strconv.FormatInt(id, 10), 10)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(entries, func(e store.AuditEntry) bool { return e.Action == "support_access" && e.Actor == "bob" }) {
			t.Errorf("bob's support access to alice's resource is not audited: %+v", entries)
		}
	})

	t.Run("cookie API ignores bearer credentials", func(t *testing.T) {
		b := bearerBrowser(h, makeToken(t, s.cookies["carol"], map[string]any{"name": "cookie-api"}))
		wantError(t, b.in(t).do(http.MethodGet, "users/", nil), http.StatusUnauthorized)
	})
}

// TestAccessTokens: a token's scope limits what it does; expired and revoked tokens
// are 401; a token never makes tokens; a scope beyond the owner's is refused; an admin
// makes a service account's token; the secret is stored hashed and shown once; last
// use is recorded.
func TestAccessTokens(t *testing.T) {
	s := newAccessSetup(t)
	h, ctx := s.h, context.Background()
	alice, carol := s.cookies["alice"], s.cookies["carol"]

	t.Run("scope", func(t *testing.T) {
		none := bearerBrowser(h, makeToken(t, alice, map[string]any{"name": "read only", "scope": []string{}}))
		wantStatus(t, none.in(t).do(http.MethodGet, "api/v2/me", nil), http.StatusOK)
		wantError(t, none.in(t).do(http.MethodPost, "api/v2/resources", map[string]string{"experiment": accessSessions["alice"], "image": "static_link"}), http.StatusForbidden)
		// An admin's token scoped to launch is no admin.
		launcher := bearerBrowser(h, makeToken(t, carol, map[string]any{"name": "launcher", "scope": []string{"launch"}}))
		wantError(t, launcher.in(t).do(http.MethodGet, "api/v2/users/alice/roles", nil), http.StatusForbidden)
		wantError(t, launcher.in(t).do(http.MethodGet, "api/v2/resources?all=true", nil), http.StatusForbidden)
		// Nor may it launch an own resource through the office's authorisation.
		wantError(t, launcher.in(t).do(http.MethodPost, "api/v2/resources", map[string]string{"experiment": "tok1", "image": "static_link"}), http.StatusForbidden)
		var me map[string]any
		launcher.in(t).do(http.MethodGet, "api/v2/me", nil).json(t, &me)
		if perms, _ := me["permissions"].([]any); len(perms) != 1 || perms[0] != "launch" || me["via"] != "token" {
			t.Errorf("me with a launch-scoped token = %v", me)
		}
	})
	t.Run("scope beyond the owner's", func(t *testing.T) {
		a := alice.in(t).do(http.MethodPost, "api/v2/tokens", map[string]any{"name": "greedy", "scope": []string{"launch", "admin"}})
		wantError(t, a, http.StatusForbidden)
		wantError(t, alice.in(t).do(http.MethodPost, "api/v2/tokens", map[string]any{"name": "bad", "scope": []string{"fly"}}), http.StatusBadRequest)
		wantError(t, alice.in(t).do(http.MethodPost, "api/v2/tokens", map[string]any{"name": ""}), http.StatusBadRequest)
		wantError(t, alice.in(t).do(http.MethodPost, "api/v2/tokens", map[string]any{"name": "long", "expires_in": 1 << 40}), http.StatusBadRequest)
		wantError(t, alice.in(t).do(http.MethodPost, "api/v2/tokens", map[string]any{"name": "for bob", "username": "bob"}), http.StatusForbidden)
	})
	t.Run("tokens do not make tokens", func(t *testing.T) {
		tok := bearerBrowser(h, makeToken(t, carol, map[string]any{"name": "all"}))
		wantError(t, tok.in(t).do(http.MethodPost, "api/v2/tokens", map[string]any{"name": "child"}), http.StatusForbidden)
		wantError(t, tok.in(t).do(http.MethodGet, "api/v2/tokens", nil), http.StatusForbidden)
	})
	t.Run("expired", func(t *testing.T) {
		secret := makeToken(t, alice, map[string]any{"name": "short", "expires_in": 1})
		b := bearerBrowser(h, secret)
		wantStatus(t, b.in(t).do(http.MethodGet, "api/v2/me", nil), http.StatusOK)
		time.Sleep(1100 * time.Millisecond) // the shortest life a token can have
		a := b.in(t).do(http.MethodGet, "api/v2/me", nil)
		wantError(t, a, http.StatusUnauthorized)
		if !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("WWW-Authenticate = %q", a.header.Get("WWW-Authenticate"))
		}
	})
	t.Run("revoked, and last use", func(t *testing.T) {
		secret := makeToken(t, alice, map[string]any{"name": "to revoke"})
		b := bearerBrowser(h, secret)
		wantStatus(t, b.in(t).do(http.MethodGet, "api/v2/me", nil), http.StatusOK)
		tok, err := h.db.TokenBySecret(ctx, secret)
		if err != nil {
			t.Fatal(err)
		}
		if tok.LastUsed == nil {
			t.Error("the token's use is not recorded")
		}
		// Another user cannot revoke it (nor learn that it exists).
		id := strconv.FormatInt(tok.ID, 10)
		wantError(t, s.cookies["bob"].in(t).do(http.MethodDelete, "api/v2/tokens/"+id, nil), http.StatusNotFound)
		wantStatus(t, alice.in(t).do(http.MethodDelete, "api/v2/tokens/"+id, nil), http.StatusNoContent)
		wantStatus(t, alice.in(t).do(http.MethodDelete, "api/v2/tokens/"+id, nil), http.StatusNoContent) // again: success
		wantError(t, b.in(t).do(http.MethodGet, "api/v2/me", nil), http.StatusUnauthorized)
		var list []map[string]any
		alice.in(t).do(http.MethodGet, "api/v2/tokens", nil).json(t, &list)
		for _, l := range list {
			if _, leaked := l["secret"]; leaked {
				t.Errorf("the list shows a secret: %v", l)
			}
		}
	})
	t.Run("unknown and malformed", func(t *testing.T) {
		wantError(t, bearerBrowser(h, store.TokenPrefix+"nosuchtoken").in(t).do(http.MethodGet, "api/v2/me", nil), http.StatusUnauthorized)
		wantError(t, bearerBrowser(h, "not-a-jwt").in(t).do(http.MethodGet, "api/v2/me", nil), http.StatusUnauthorized)
	})
	t.Run("service account", func(t *testing.T) {
		a := carol.in(t).do(http.MethodPost, "api/v2/tokens", map[string]any{"name": "ingest", "username": "svc-ingest", "scope": []string{"launch"}})
		wantStatus(t, a, http.StatusCreated)
		svc := bearerBrowser(h, a.object(t)["secret"].(string))
		var me map[string]any
		svc.in(t).do(http.MethodGet, "api/v2/me", nil).json(t, &me)
		if me["username"] != "svc-ingest" {
			t.Errorf("service account's token acts as %v", me["username"])
		}
		// Its scope cannot exceed what the account's roles hold.
		wantError(t, carol.in(t).do(http.MethodPost, "api/v2/tokens", map[string]any{"name": "x", "username": "svc-ingest", "scope": []string{"admin"}}), http.StatusForbidden)
	})
}

// TestPerRoleQuotas: a role's quota and images bind its holders who have no quota
// of their own; another role's holders are not bound by them; a user's own quota
// overrides the role's.
func TestPerRoleQuotas(t *testing.T) {
	one := calipso.Quota{MaxSimultaneous: 1, CPUs: 1, MemoryBytes: 1 << 30, DiskBytes: 1 << 30}
	h := newHarness(t, withSettings(func(c *settings.Settings) {
		user := c.Access.Policy.Roles[calipso.RoleUser]
		user.Quota, user.Images = &one, []string{"static_link"}
		c.Access.Policy.Roles[calipso.RoleUser] = user
	}))
	ctx := context.Background()
	grantStaff(t, h, "bob")
	alice, bob := h.loggedIn("alice"), h.loggedIn("bob")
	for u, b := range map[string]*browser{"alice": alice, "bob": bob} {
		wantStatus(t, b.do(http.MethodGet, "users/"+u+"/experiments/", nil), http.StatusOK)
	}
	var q map[string]any
	alice.do(http.MethodGet, "quota/alice/", nil).json(t, &q)
	if q["max_simultaneous"] != float64(1) {
		t.Errorf("alice's quota = %v, want her role's", q)
	}
	launch := func(b *browser, session string) answer {
		return b.do(http.MethodPost, "api/v2/resources", map[string]string{"experiment": session, "image": "static_link"})
	}
	wantStatus(t, launch(alice, accessSessions["alice"]), http.StatusAccepted)
	wantError(t, launch(alice, "2019001~2019001-01"), http.StatusConflict) // her role allows one at once
	// bob holds staff too, whose quota is the default: the user role's does not bind him.
	wantStatus(t, launch(bob, accessSessions["bob"]), http.StatusAccepted)
	wantStatus(t, launch(bob, "2019001~2019001-01"), http.StatusAccepted)
	// Images: the role's only.
	msg := wantError(t, alice.do(http.MethodPost, "api/v2/resources", map[string]string{"experiment": "2020001~2020001-01", "image": "base_image"}), http.StatusForbidden)
	if !strings.Contains(msg, "base_image") {
		t.Errorf("refusal %q does not name the image", msg)
	}
	var images []map[string]any
	alice.do(http.MethodGet, "images/", nil).json(t, &images)
	if len(images) != 1 || images[0]["public_name"] != "static_link" {
		t.Errorf("alice's image list = %v, want her role's image only", images)
	}
	bob.do(http.MethodGet, "images/", nil).json(t, &images)
	if len(images) < 2 {
		t.Errorf("bob's image list = %v, want every image", images)
	}
	// Her own quota overrides the role's.
	if err := h.db.SetQuota(ctx, "test", mustUser(t, h, "alice").ID, calipso.Quota{MaxSimultaneous: 3, CPUs: 1, MemoryBytes: 1 << 30, DiskBytes: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, launch(alice, "2019001~2019001-01"), http.StatusAccepted)
}

func mustUser(t *testing.T, h *harness, name string) calipso.User {
	t.Helper()
	u, err := h.db.User(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestOfficeRole: with access.office_role, the user office's "is authorised" answer
// gives the role and takes it back, at login/type/ (which every Resources page asks).
func TestOfficeRole(t *testing.T) {
	h := newHarness(t, withSettings(func(c *settings.Settings) {
		c.Access.Policy.Roles["operator"] = calipso.Role{Name: "operator", Permissions: []calipso.Permission{calipso.PermLaunch, calipso.PermLaunchOwn}}
		c.Access.Policy.OfficeRole = "operator"
	}))
	data, err := useroffice.Demo()
	if err != nil {
		t.Fatal(err)
	}
	authorise := func(yes bool) {
		for i := range data.Accounts {
			if data.Accounts[i].Username == "alice" {
				data.Accounts[i].Authorized = yes
			}
		}
		h.setOfficeData(data)
	}
	alice := h.loggedIn("alice")
	check := func(t *testing.T, want bool) {
		t.Helper()
		var lt struct{ Result bool }
		alice.in(t).do(http.MethodGet, "login/type/", nil).json(t, &lt)
		var me struct{ Roles []string }
		alice.in(t).do(http.MethodGet, "api/v2/me", nil).json(t, &me)
		if lt.Result != want || slices.Contains(me.Roles, "operator") != want {
			t.Fatalf("login/type/ = %v, roles %v; want authorised %v", lt.Result, me.Roles, want)
		}
	}
	check(t, false)
	authorise(true)
	check(t, true)
	authorise(false)
	check(t, false) // the office's role is asked again, not taken as an answer
}

// TestGuacamoleCredentialsNeedSupportAccess: seeing another user's desktop in a list
// (see_all_resources) is not connecting to it: its Guacamole credentials go only to
// its owner and to holders of support_access.
func TestGuacamoleCredentialsNeedSupportAccess(t *testing.T) {
	h := newHarness(t, withDocker(), withSettings(func(c *settings.Settings) {
		c.Access.Policy.Roles["auditor"] = calipso.Role{Name: "auditor", Permissions: []calipso.Permission{calipso.PermLaunch, calipso.PermSeeAllResources}}
	}))
	ctx := context.Background()
	if _, err := h.db.EnsureUser(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.db.SetRoles(ctx, "test", "bob", store.RoleGranted, []string{"auditor"}); err != nil {
		t.Fatal(err)
	}
	alice, bob, carol := h.loggedIn("alice"), h.loggedIn("bob"), h.loggedIn("carol")
	wantStatus(t, alice.do(http.MethodGet, "users/alice/experiments/", nil), http.StatusOK)
	a := alice.do(http.MethodPost, "api/v2/resources", map[string]string{"experiment": accessSessions["alice"], "image": desktopImage})
	wantStatus(t, a, http.StatusAccepted)
	id := strconv.FormatInt(int64(a.object(t)["id"].(float64)), 10)
	alice.readEvents(t, "api/v2/resources/"+id+"/events", "")
	password := func(b *browser) string {
		t.Helper()
		var list []map[string]any
		b.in(t).do(http.MethodGet, "resource/list/alice/", nil).json(t, &list)
		if len(list) != 1 {
			t.Fatalf("list = %v", list)
		}
		p, _ := list[0]["guacamole_password"].(string)
		return p
	}
	if password(alice) == "" {
		t.Fatal("the owner's desktop has no Guacamole password: the test proves nothing")
	}
	if p := password(bob); p != "" {
		t.Errorf("see_all_resources alone shows another's Guacamole password %q", p)
	}
	if password(carol) == "" {
		t.Error("support_access does not show the Guacamole password")
	}
	wantError(t, bob.do(http.MethodGet, "api/v2/resources/"+id+"/connection", nil), http.StatusForbidden)
	var conn map[string]any
	carol.do(http.MethodGet, "api/v2/resources/"+id+"/connection", nil).json(t, &conn)
	if conn["guacamole_password"] != password(alice) {
		t.Errorf("carol's connection = %v", conn)
	}
}
