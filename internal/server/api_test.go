package server_test

import (
	"fmt"
	"net/http"
	"testing"
)

// Shapes of compat-api.md, as key → JSON kind.
var (
	userShape  = map[string]string{"id": "number", "calipso_uid": "string", "user_id": "number", "user": "object"}
	innerUser  = map[string]string{"username": "string", "last_login": "string|null", "is_superuser": "bool"}
	quotaShape = map[string]string{"cpu": "number", "memory": "string", "hdd": "string", "max_simultaneous": "number"}
	imageShape = map[string]string{"public_name": "string", "image": "string", "protocol": "string", "cpu": "number",
		"memory": "string", "hdd": "string", "resource_type": "string"}
	pageShape       = map[string]string{"count": "number", "next": "string|null", "previous": "string|null", "page_size": "number", "results": "array"}
	experimentShape = map[string]string{"id": "number", "favorite": "bool", "proposal_id": "string", "subject": "string",
		"body": "string", "beam_line": "string", "uid": "string", "gid": "string", "sessions": "array"}
	sessionShape = map[string]string{"session_number": "string", "start_date": "string|null", "end_date": "string|null",
		"subject": "string", "body": "string", "data_set_path": "string"}
	containerShape = map[string]string{"id": "number", "calipso_user": "number", "username": "string", "calipso_experiment": "string",
		"container_id": "string", "container_name": "string", "container_status": "string", "container_logs": "string",
		"guacamole_username": "string", "guacamole_password": "string", "creation_date": "string", "host_port": "string",
		"public_name": "string", "container_info": "string", "image": "number|null", "num_cpus": "number",
		"memory_allocated": "string", "hdd_allocated": "string",
		// Calipso's own, which the frontend ignores (lifecycle policies).
		"expires_at": "string|null", "idle_since": "string|null"}
)

// TestFrontendWalk makes the frontend's calls in the order it makes them.
func TestFrontendWalk(t *testing.T) {
	onBothDatabases(t, func(t *testing.T, h *harness) { walkFrontend(t, h, h.browser()) })
}

func walkFrontend(t *testing.T, h *harness, b *browser) {
	t.Helper()
	var jsonString string

	a := b.do(http.MethodGet, "settings/", nil)
	wantStatus(t, a, http.StatusOK)
	wantKeys(t, a.object(t), map[string]string{"local_auth": "bool"})
	if a.object(t)["local_auth"] != true {
		t.Errorf("settings/: local_auth %v, want true", a.object(t)["local_auth"])
	}

	a = b.do(http.MethodGet, "authenticated/", nil)
	wantStatus(t, a, http.StatusUnauthorized)
	wantKeys(t, a.object(t), map[string]string{"authenticated": "string"})

	a = b.do(http.MethodPost, "login/", map[string]string{"username": "alice", "password": "wrong"})
	wantStatus(t, a, http.StatusUnauthorized)
	if a.json(t, &jsonString); jsonString != "Unable to authenticate" {
		t.Errorf("login/ refused: %q, want \"Unable to authenticate\"", jsonString)
	}
	a = b.do(http.MethodPost, "login/", map[string]string{"username": "alice"})
	wantStatus(t, a, http.StatusBadRequest)

	a = b.do(http.MethodPost, "login/", map[string]string{"username": "alice", "password": "alice-demo"})
	wantStatus(t, a, http.StatusOK)
	if a.json(t, &jsonString); jsonString != "Login OK" {
		t.Errorf("login/: %q, want \"Login OK\"", jsonString)
	}
	if !hasCookie(a, "sessionid") {
		t.Errorf("login/ set no sessionid cookie: %v", a.header.Values("Set-Cookie"))
	}

	a = b.do(http.MethodGet, "authenticated/", nil)
	wantStatus(t, a, http.StatusOK)
	m := a.object(t)
	wantKeys(t, m, map[string]string{"username": "string", "authenticated": "string"})
	if m["username"] != "alice" || m["authenticated"] != "true" {
		t.Errorf("authenticated/: %v", m)
	}

	a = b.do(http.MethodGet, "login/type/", nil)
	wantStatus(t, a, http.StatusOK)
	wantKeys(t, a.object(t), map[string]string{"result": "bool"})

	a = b.do(http.MethodGet, "users/alice/", nil)
	wantStatus(t, a, http.StatusOK)
	m = a.object(t)
	wantKeys(t, m, userShape)
	inner, _ := m["user"].(map[string]any)
	wantKeys(t, inner, innerUser)
	if inner["username"] != "alice" || inner["is_superuser"] != false || inner["last_login"] == nil {
		t.Errorf("users/alice/: %v", m)
	}

	a = b.do(http.MethodGet, "images/", nil)
	wantStatus(t, a, http.StatusOK)
	var images []map[string]any
	a.json(t, &images)
	if len(images) < 4 {
		t.Fatalf("images/: %d images, want the 4 seeded ones", len(images))
	}
	for _, im := range images {
		wantKeys(t, im, imageShape)
	}

	for _, path := range []string{"quota/alice/", "used_quota/alice/"} {
		a = b.do(http.MethodGet, path, nil)
		wantStatus(t, a, http.StatusOK)
		wantKeys(t, a.object(t), quotaShape)
	}

	a = b.do(http.MethodGet, "users/alice/experiments/", nil)
	wantStatus(t, a, http.StatusOK)
	m = a.object(t)
	wantKeys(t, m, pageShape)
	results, _ := m["results"].([]any)
	if len(results) == 0 {
		t.Fatalf("users/alice/experiments/: no results: %s", a.body)
	}
	for _, r := range results {
		e, _ := r.(map[string]any)
		wantKeys(t, e, experimentShape)
		for _, s := range e["sessions"].([]any) {
			ss, _ := s.(map[string]any)
			wantKeys(t, ss, sessionShape)
		}
	}

	a = b.do(http.MethodGet, "users/alice/containers/", nil)
	wantStatus(t, a, http.StatusOK)
	var list []any
	a.json(t, &list)

	a = b.do(http.MethodGet, "logout/", nil)
	wantStatus(t, a, http.StatusOK)
	if a.json(t, &jsonString); jsonString != "Logout OK" {
		t.Errorf("logout/: %q", jsonString)
	}
	a = b.do(http.MethodGet, "authenticated/", nil)
	wantStatus(t, a, http.StatusUnauthorized)
	if m := a.object(t); m["authenticated"] != "false" {
		t.Errorf("authenticated/ after logout: %v", m)
	}
	wantError(t, b.do(http.MethodGet, "users/alice/", nil), http.StatusUnauthorized)
}

func hasCookie(a answer, name string) bool {
	for _, c := range (&http.Response{Header: a.header}).Cookies() {
		if c.Name == name && c.Value != "" {
			return true
		}
	}
	return false
}

// TestSessionEndsEverywhere: logout ends the session on the server, so a copy of the
// cookie is worthless afterwards.
func TestSessionEndsEverywhere(t *testing.T) {
	h := newHarness(t)
	b := h.loggedIn("alice")
	thief := h.browser()
	u := mustURL(t, h.srv.URL+basePath)
	thief.c.Jar.SetCookies(u, b.c.Jar.Cookies(u))
	wantStatus(t, thief.do(http.MethodGet, "authenticated/", nil), http.StatusOK)
	wantStatus(t, b.do(http.MethodGet, "logout/", nil), http.StatusOK)
	wantStatus(t, thief.do(http.MethodGet, "authenticated/", nil), http.StatusUnauthorized)
}

// TestAuthorization: every <u> endpoint refuses another user, every admin action a
// non-admin, everything but the public calls an anonymous client; admins may.
func TestAuthorization(t *testing.T) {
	h := newHarness(t)
	alice, carol, anon := h.loggedIn("alice"), h.loggedIn("carol"), h.browser()
	bob := h.loggedIn("bob")
	wantStatus(t, bob.do(http.MethodGet, "users/bob/experiments/", nil), http.StatusOK) // fetch bob's experiments
	const session = "2020003~2020003-01"
	image := map[string]any{"public_name": "extra", "image": "https://example.org/", "protocol": "http", "cpu": 0,
		"memory": "0", "hdd": "0", "resource_type": "static link"}
	quota := map[string]any{"cpu": 2, "memory": "4G", "hdd": "10G", "max_simultaneous": 3}

	// launched is the record carol's run made for bob; later rows use it.
	var launched map[string]any
	name := func() string {
		if launched == nil {
			return "calipso-test-0"
		}
		return launched["container_name"].(string)
	}
	id := func() string {
		if launched == nil {
			return "1"
		}
		return fmt.Sprint(launched["id"])
	}

	rows := []struct {
		name   string
		method string
		path   func() string
		body   any
		admin  bool // admin only (else: bob's own, or an admin)
		want   int  // what carol (admin) gets
		after  func(t *testing.T, a answer)
	}{
		{"user", "GET", fixed("users/bob/"), nil, false, 200, nil},
		{"experiments", "GET", fixed("users/bob/experiments/"), nil, false, 200, nil},
		{"quota", "GET", fixed("quota/bob/"), nil, false, 200, nil},
		{"used quota", "GET", fixed("used_quota/bob/"), nil, false, 200, nil},
		{"resource list", "GET", fixed("resource/list/bob/"), nil, false, 200, nil},
		{"user containers", "GET", fixed("users/bob/containers/"), nil, false, 200, nil},
		{"run", "GET", fixed("resource/run/bob/" + session + "/static_link/"), nil, false, 201, func(t *testing.T, a answer) {
			launched = a.object(t)
			wantKeys(t, launched, containerShape)
			if launched["username"] != "bob" || launched["container_status"] != "created" || launched["host_port"] != "https://www.calipsoplus.eu/" {
				t.Errorf("run: %v", launched)
			}
		}},
		{"container", "GET", func() string { return "containers/" + id() }, nil, true, 200, nil},
		{"container slash", "GET", func() string { return "containers/" + id() + "/" }, nil, true, 200, nil},
		{"stop", "GET", func() string { return "resource/stop/bob/" + name() + "/static_link/" }, nil, false, 200, nil},
		{"rm", "GET", func() string { return "resource/rm/bob/" + name() + "/static_link/" }, nil, false, 200, func(t *testing.T, a answer) {
			if s := a.object(t)["container_status"]; s != "removed" {
				t.Errorf("rm: status %v, want removed", s)
			}
		}},
		{"users", "GET", fixed("users/"), nil, true, 200, nil},
		{"user admin get", "GET", fixed("users/bob/admin"), nil, true, 200, nil},
		{"user admin post", "POST", fixed("users/bob/admin"), map[string]bool{"is_superuser": false}, true, 200, nil},
		{"image post", "POST", fixed("images/extra/"), image, true, 201, nil},
		{"image put", "PUT", fixed("images/extra/"), image, true, 200, nil},
		{"image delete", "DELETE", fixed("images/extra/"), nil, true, 204, nil},
		{"quota post", "POST", fixed("quota/bob/"), quota, true, 200, nil},
		{"quota put", "PUT", fixed("quota/bob/"), quota, true, 200, nil},
		{"containers", "GET", fixed("containers/"), nil, true, 200, nil},
		{"active containers", "GET", fixed("activecontainers/"), nil, true, 200, nil},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			path := row.path()
			wantError(t, anon.do(row.method, path, row.body), http.StatusUnauthorized)
			wantError(t, alice.do(row.method, path, row.body), http.StatusForbidden)
			if row.admin {
				wantError(t, bob.do(row.method, path, row.body), http.StatusForbidden)
			}
			a := carol.do(row.method, path, row.body)
			wantStatus(t, a, row.want)
			if row.after != nil {
				row.after(t, a)
			}
		})
	}

	t.Run("favorite", func(t *testing.T) {
		var page struct {
			Results []struct {
				ID int64 `json:"id"`
			} `json:"results"`
		}
		bob.do(http.MethodGet, "users/bob/experiments/", nil).json(t, &page)
		if len(page.Results) == 0 {
			t.Fatal("bob has no experiments")
		}
		link := fmt.Sprintf("favorite/%d/", page.Results[0].ID)
		for _, tc := range []struct {
			name string
			who  *browser
			path string
			want int
		}{
			{"anonymous", anon, link, 401},
			{"someone else's", alice, link, 403},
			{"admin, someone else's", carol, link, 403},
			{"unknown", alice, "favorite/999999/", 404},
			{"own", bob, link, 200},
		} {
			t.Run(tc.name, func(t *testing.T) {
				a := tc.who.do(http.MethodPut, tc.path, map[string]any{"favorite": "1"})
				if tc.want != 200 {
					wantError(t, a, tc.want)
					return
				}
				wantStatus(t, a, 200)
				wantKeys(t, a.object(t), map[string]string{"id": "number", "favorite": "bool"})
			})
		}
	})
}

func fixed(p string) func() string { return func() string { return p } }
