package server_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/calipsoplus/calipso/internal/server"
	"github.com/calipsoplus/calipso/settings"
)

// TestCSRF: unsafe methods need the double-submit token and a trusted origin; the
// state-changing GETs need the origin check too.
func TestCSRF(t *testing.T) {
	h := newHarness(t)
	alice := h.loggedIn("alice")
	wantStatus(t, alice.do(http.MethodGet, "users/alice/experiments/", nil), http.StatusOK)
	login := `{"username": "alice", "password": "alice-demo"}`
	rows := []struct {
		name    string
		method  string
		path    string
		body    string
		headers map[string]string // "" value: header removed
		want    int
	}{
		{"login with token", "POST", "login/", login, nil, 200},
		// The frontend sends no token on login/ (and "none" when it lost the cookie):
		// the cross-origin check below is what guards it.
		{"login without token", "POST", "login/", login, map[string]string{"X-CSRFToken": ""}, 200},
		{"login wrong token", "POST", "login/", login, map[string]string{"X-CSRFToken": strings.Repeat("a", 32)}, 200},
		{"login none token", "POST", "login/", login, map[string]string{"X-CSRFToken": "none"}, 200},
		{"login cross-site origin", "POST", "login/", login, map[string]string{"Origin": "https://evil.example"}, 403},
		{"login cross-site fetch", "POST", "login/", login, map[string]string{"Origin": "", "Sec-Fetch-Site": "cross-site"}, 403},
		{"favorite cross-site", "PUT", "favorite/1/", `{"favorite": true}`, map[string]string{"Origin": "https://evil.example"}, 403},
		{"run cross-site origin", "GET", "resource/run/alice/2019002~2019002-01/static_link/", "", map[string]string{"Origin": "https://evil.example"}, 403},
		{"run cross-site fetch", "GET", "resource/run/alice/2019002~2019002-01/static_link/", "", map[string]string{"Origin": "", "Sec-Fetch-Site": "cross-site"}, 403},
		{"stop cross-site", "GET", "resource/stop/alice/x/static_link/", "", map[string]string{"Origin": "https://evil.example"}, 403},
		{"rm cross-site", "GET", "resource/rm/alice/x/static_link/", "", map[string]string{"Origin": "https://evil.example"}, 403},
		{"run from the frontend", "GET", "resource/run/alice/2019002~2019002-01/static_link/", "", nil, 201},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			var body io.Reader
			if row.body != "" {
				body = strings.NewReader(row.body)
			}
			req, err := http.NewRequest(row.method, h.api(row.path), body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Origin", frontendOrigin)
			req.Header.Set("X-CSRFToken", alice.csrfToken())
			for k, v := range row.headers {
				if v == "" {
					req.Header.Del(k)
				} else {
					req.Header.Set(k, v)
				}
			}
			a := alice.send(req)
			if row.want == 403 {
				wantError(t, a, 403)
				return
			}
			wantStatus(t, a, row.want)
		})
	}
	// The refused runs launched nothing: only the frontend's run is listed.
	var list []map[string]any
	alice.do(http.MethodGet, "resource/list/alice/", nil).json(t, &list)
	if len(list) != 1 {
		t.Errorf("alice has %d resources, want 1 (cross-site runs must launch nothing)", len(list))
	}
}

// TestCORS: the configured frontend origin may call with credentials; others not.
func TestCORS(t *testing.T) {
	h := newHarness(t)
	rows := []struct {
		name    string
		origin  string
		allowed bool
	}{
		{"frontend", frontendOrigin, true},
		{"other origin", "https://evil.example", false},
		{"frontend on another port", "http://localhost:4201", false},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			b := h.browser()
			req, _ := http.NewRequest(http.MethodOptions, h.api("login/"), nil)
			req.Header.Set("Origin", row.origin)
			req.Header.Set("Access-Control-Request-Method", "POST")
			req.Header.Set("Access-Control-Request-Headers", "content-type,x-csrftoken")
			a := b.send(req)
			acao, acac := a.header.Get("Access-Control-Allow-Origin"), a.header.Get("Access-Control-Allow-Credentials")
			if row.allowed {
				if a.status < 200 || a.status > 299 || acao != row.origin || acac != "true" {
					t.Fatalf("preflight: %d, Allow-Origin %q, Allow-Credentials %q; want 2xx, %q, true", a.status, acao, acac, row.origin)
				}
				if m := strings.ToLower(a.header.Get("Access-Control-Allow-Headers")); !strings.Contains(m, "x-csrftoken") {
					t.Errorf("Allow-Headers %q lacks X-CSRFToken", m)
				}
			} else if acao != "" || acac != "" {
				t.Fatalf("preflight from %s allowed: Allow-Origin %q, Allow-Credentials %q", row.origin, acao, acac)
			}
			b.origin = row.origin
			a = b.do(http.MethodGet, "settings/", nil)
			got := a.header.Get("Access-Control-Allow-Origin")
			if (got == row.origin) != row.allowed {
				t.Fatalf("GET from %s: Allow-Origin %q", row.origin, got)
			}
		})
	}
}

// TestForwardedHeaders: X-Forwarded-* are honoured from trusted proxies only; the
// page links show it.
func TestForwardedHeaders(t *testing.T) {
	onePerPage := withSettings(func(s *settings.Settings) { s.Pagination.Users = 1 })
	rows := []struct {
		name    string
		trusted bool
		host    string // X-Forwarded-Host as the server receives it
		want    string // scheme://host of the next link; "" the server's own
	}{
		{"untrusted client", false, "calipso.example.org", ""},
		{"trusted proxy", true, "calipso.example.org", "https://calipso.example.org"},
		// The client sent its own X-Forwarded-Host; the proxy appended the real one.
		{"client-supplied host before the proxy's", true, "evil.example, calipso.example.org", "https://calipso.example.org"},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			opts := []harnessOption{onePerPage}
			if row.trusted {
				opts = append(opts, trustLoopback())
			}
			h := newHarness(t, opts...)
			carol := h.loggedIn("carol")
			h.loggedIn("alice")
			carol.header.Set("X-Forwarded-Host", row.host)
			carol.header.Set("X-Forwarded-Proto", "https")
			carol.header.Set("X-Forwarded-For", "203.0.113.9")
			a := carol.do(http.MethodGet, "users/?search=", nil)
			wantStatus(t, a, http.StatusOK)
			next, _ := a.object(t)["next"].(string)
			u, err := url.Parse(next)
			if err != nil || next == "" {
				t.Fatalf("next %q", next)
			}
			want := row.want
			if want == "" {
				want = h.srv.URL
			}
			if got := u.Scheme + "://" + u.Host; got != want {
				t.Fatalf("next link %s, want it on %s", next, want)
			}
			if u.Path != basePath+"users/" || u.Query().Get("page") != "2" {
				t.Fatalf("next link %s: want users/?page=2", next)
			}
		})
	}
}

// TestOperations: health, readiness, metrics, HEAD and OPTIONS.
func TestOperations(t *testing.T) {
	failing := server.Check{Name: "user_office", Fn: func(context.Context) error { return errors.New("user office unreachable") }}
	h := newHarness(t, withChecks(failing))
	b := h.browser()
	get := func(path string) answer {
		req, _ := http.NewRequest(http.MethodGet, h.srv.URL+path, nil)
		return b.send(req)
	}
	wantStatus(t, get("/healthz"), http.StatusOK)

	a := get("/readyz")
	wantStatus(t, a, http.StatusServiceUnavailable)
	m := a.object(t)
	if m["database"] != "ok" || m["user_office"] != "user office unreachable" {
		t.Errorf("readyz: %v, want database ok and user_office named as failing", m)
	}

	t.Run("HEAD", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodHead, h.api("settings/"), nil)
		a := b.send(req)
		if a.status != http.StatusOK || len(a.body) != 0 {
			t.Fatalf("HEAD settings/: %d %q", a.status, a.body)
		}
	})
	t.Run("OPTIONS without CORS", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodOptions, h.api("settings/"), nil)
		a := b.send(req)
		if a.status >= 500 {
			t.Fatalf("OPTIONS settings/: %d %s", a.status, a.body)
		}
	})

	b.do(http.MethodGet, "settings/", nil)
	b.do(http.MethodGet, "settings/", nil)
	b.do(http.MethodGet, "nothing/", nil)
	a = get("/metrics")
	wantStatus(t, a, http.StatusOK)
	for _, want := range []string{
		`calipso_http_requests_total{code="200",method="GET",route="/calipsoplus-services/settings/"}`,
		`calipso_http_requests_total{code="404",method="GET",route="unmatched"}`,
		`calipso_http_request_duration_seconds_bucket{method="GET",route="/calipsoplus-services/settings/"`,
	} {
		if !strings.Contains(string(a.body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
