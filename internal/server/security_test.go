package server_test

import (
	"context"
	"errors"
	"fmt"
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
	if m["database"] != "ok" || m["user_office"] != "unavailable" {
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

// Accept headers as browsers send them.
const (
	acceptPage    = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8" // a navigation
	acceptAngular = "application/json, text/plain, */*"                               // the frontend's HttpClient
)

// TestCrossSiteStateChangingGETs (security review, finding 6): the GETs that change
// state (logout/, umbrella/logout/, resource/run|stop|rm) are refused to other sites
// and to navigations (an old browser sends neither Sec-Fetch-Site nor Origin on a
// top-level navigation, and SameSite=Lax gives it the cookies), and an Origin of this
// host with another scheme is another site; the frontend's XHRs and scripts pass.
func TestCrossSiteStateChangingGETs(t *testing.T) {
	h := newHarness(t)
	host := strings.TrimPrefix(h.srv.URL, "http://")
	const run = "resource/run/alice/2019002~2019002-01/static_link/"
	frontend := map[string]string{"Origin": frontendOrigin, "Accept": acceptAngular}
	modernFrontend := map[string]string{"Origin": frontendOrigin, "Accept": acceptAngular, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}
	rows := []struct {
		name    string
		path    string
		headers map[string]string // exactly these
		want    int
	}{
		{"logout from the frontend", "logout/", frontend, 200},
		{"logout from a modern frontend", "logout/", modernFrontend, 200},
		{"logout from a script", "logout/", nil, 200},
		{"logout cross-site origin", "logout/", map[string]string{"Origin": "https://evil.example"}, 403},
		{"logout cross-site fetch", "logout/", map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}, 403},
		{"logout cross-site navigation", "logout/", map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Accept": acceptPage}, 403},
		{"logout navigation, old browser", "logout/", map[string]string{"Accept": acceptPage}, 403},
		{"logout other scheme", "logout/", map[string]string{"Origin": "https://" + host}, 403},
		{"umbrella logout from the frontend", "umbrella/logout/", frontend, 200},
		{"umbrella logout cross-site origin", "umbrella/logout/", map[string]string{"Origin": "https://evil.example"}, 403},
		{"umbrella logout cross-site fetch", "umbrella/logout/", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"umbrella logout navigation, old browser", "umbrella/logout/", map[string]string{"Accept": acceptPage}, 403},
		{"umbrella logout cross-site navigation", "umbrella/logout/", map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Accept": acceptPage}, 403},
		// This site's own link: on to the Shibboleth logout (mod_shib's, or the SP's).
		{"umbrella logout navigation from this origin", "umbrella/logout/", map[string]string{"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate", "Accept": acceptPage}, 302},

		{"run from the frontend", run, frontend, 201},
		{"run from a modern frontend", run, modernFrontend, 201},
		{"run from a script", run, nil, 201},
		{"run from curl", run, map[string]string{"Accept": "*/*"}, 201},
		{"run from this origin, old browser", run, map[string]string{"Origin": "http://" + host, "Accept": acceptAngular}, 201},
		{"run navigation, old browser", run, map[string]string{"Accept": acceptPage}, 403},
		{"run navigation asking HTML only", run, map[string]string{"Accept": "text/html"}, 403},
		{"run typed in the address bar", run, map[string]string{"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate", "Accept": acceptPage}, 403},
		{"run navigation from this origin", run, map[string]string{"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate"}, 403},
		{"run other scheme", run, map[string]string{"Origin": "https://" + host, "Accept": acceptAngular}, 403},
		{"stop navigation, old browser", "resource/stop/alice/x/static_link/", map[string]string{"Accept": acceptPage}, 403},
		{"stop other scheme", "resource/stop/alice/x/static_link/", map[string]string{"Origin": "https://" + host}, 403},
		{"rm navigation, old browser", "resource/rm/alice/x/static_link/", map[string]string{"Accept": acceptPage}, 403},
		{"rm other scheme", "resource/rm/alice/x/static_link/", map[string]string{"Origin": "https://" + host}, 403},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			alice := h.loggedIn("alice").in(t)
			wantStatus(t, alice.do(http.MethodGet, "users/alice/experiments/", nil), http.StatusOK) // fetched from the office
			req, err := http.NewRequest(http.MethodGet, h.api(row.path), nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range row.headers {
				req.Header.Set(k, v)
			}
			a := alice.send(req)
			if row.want == 403 {
				wantError(t, a, 403)
			} else {
				wantStatus(t, a, row.want)
			}
			// What a refusal did not do: the session lives on, nothing was launched.
			loggedIn := alice.do(http.MethodGet, "users/alice/", nil).status == http.StatusOK
			if loggedOut := strings.Contains(row.path, "logout/") && (row.want == 200 || row.want == 302); loggedIn == loggedOut {
				t.Fatalf("logged in %v after %s", loggedIn, row.name)
			}
			if !loggedIn {
				return
			}
			var list []map[string]any
			alice.do(http.MethodGet, "resource/list/alice/", nil).json(t, &list)
			if launched := row.path == run && row.want == 201; launched != (len(list) == 1) {
				t.Fatalf("%d resources after %s", len(list), row.name)
			}
			for _, m := range list { // the next row launches the same session
				c := parseContainer(t, m)
				wantStatus(t, alice.do(http.MethodGet, "resource/stop/alice/"+c.ContainerName+"/"+c.PublicName+"/", nil), 200)
				wantStatus(t, alice.do(http.MethodGet, "resource/rm/alice/"+c.ContainerName+"/"+c.PublicName+"/", nil), 200)
			}
		})
	}
}

// TestCrossOriginOtherScheme (finding 6): the standard library's cross-origin check
// compares only Origin's host with Host; another scheme is another origin.
func TestCrossOriginOtherScheme(t *testing.T) {
	h := newHarness(t)
	host := strings.TrimPrefix(h.srv.URL, "http://")
	alice := h.loggedIn("alice")
	for _, origin := range []string{"https://" + host, "ftp://" + host} {
		alice.origin = origin
		wantError(t, alice.do(http.MethodPut, "favorite/1/", map[string]string{"favorite": "1"}), http.StatusForbidden)
		wantError(t, alice.do(http.MethodPost, "login/", map[string]string{"username": "alice", "password": "alice-demo"}), http.StatusForbidden)
	}
	alice.origin = "http://" + host // the API's own origin: an old browser on one of its pages
	a := alice.do(http.MethodPut, "favorite/999999/", map[string]string{"favorite": "1"})
	wantError(t, a, http.StatusNotFound) // past the checks
}

// TestCSRFTokenBoundToSession (security review, finding 10): the CSRF token is the
// session's (a token of another session is refused, even with the cookie set to it
// as a sibling site can), a new one is set at login and at logout, and anonymous
// visitors still get one.
func TestCSRFTokenBoundToSession(t *testing.T) {
	h := newHarness(t)
	base := mustURL(t, h.srv.URL+"/")
	setToken := func(b *browser, token string) {
		b.c.Jar.SetCookies(base, []*http.Cookie{{Name: "csrftoken", Value: token, Path: "/"}})
	}

	// Anonymous: the frontend's first calls get a token.
	alice := h.browser()
	anonymous := alice.csrfToken()
	alice.login("alice")
	own := alice.csrfToken()
	if own == anonymous {
		t.Fatal("login/ did not set a new csrftoken cookie")
	}
	var page struct {
		Results []struct{ ID int64 } `json:"results"`
	}
	alice.do(http.MethodGet, "users/alice/experiments/", nil).json(t, &page)
	if len(page.Results) == 0 {
		t.Fatal("alice has no experiments")
	}
	favorite := func(b *browser, token string) answer {
		req, _ := http.NewRequest(http.MethodPut, h.api(fmt.Sprintf("favorite/%d/", page.Results[0].ID)), strings.NewReader(`{"favorite":"1"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Origin", frontendOrigin)
		req.Header.Set("X-CSRFToken", token)
		return b.send(req)
	}
	wantStatus(t, favorite(alice, own), http.StatusOK)
	if again := alice.csrfToken(); again != own {
		t.Errorf("the token changed between two calls of one session: %s, then %s", own, again)
	}

	// The token from before the login (which an attacker may have read or planted).
	setToken(alice, anonymous)
	wantError(t, favorite(alice, anonymous), http.StatusForbidden)
	if got := alice.csrfToken(); got != own {
		t.Errorf("after a wrong cookie, csrftoken %s, want the session's %s again", got, own)
	}

	// Another session's valid token, planted in alice's cookie (double submit alone
	// would pass: cookie and header agree).
	bob := h.loggedIn("bob")
	bobs := bob.csrfToken()
	setToken(alice, bobs)
	wantError(t, favorite(alice, bobs), http.StatusForbidden)
	wantStatus(t, favorite(alice, alice.csrfToken()), http.StatusOK)

	// A second login on the same browser rotates it again; so does logout.
	alice.do(http.MethodGet, "logout/", nil)
	afterLogout := alice.csrfToken()
	if afterLogout == own {
		t.Error("logout/ kept the ended session's token")
	}
	alice.login("alice")
	if second := alice.csrfToken(); second == own || second == afterLogout {
		t.Errorf("second login kept a token: %s", second)
	}
	wantError(t, favorite(alice, own), http.StatusForbidden)
	wantStatus(t, favorite(alice, alice.csrfToken()), http.StatusOK)
}
