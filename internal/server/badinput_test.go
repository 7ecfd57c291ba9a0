package server_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestBadInput: whatever a client sends, the answer is a 4xx with a JSON error
// message (or the contract's own refusal shape), never a 500.
func TestBadInput(t *testing.T) {
	h := newHarness(t)
	alice, carol, _ := h.loggedIn("alice"), h.loggedIn("carol"), h.loggedIn("bob")
	wantStatus(t, alice.do(http.MethodGet, "users/alice/experiments/", nil), http.StatusOK)
	huge := `{"username": "alice", "password": "` + strings.Repeat("x", 2<<20) + `"}`
	long := strings.Repeat("a", 5000)
	goodImage := `"image": "https://example.org/", "protocol": "http", "cpu": 0, "memory": "0", "hdd": "0", "resource_type": "static link"`

	rows := []struct {
		name   string
		who    *browser
		method string
		path   string // raw, escaped as sent
		body   any
		want   int // 0: any 4xx; 200: what the frontend may send, never refused (an error logs the user out)
	}{
		// JSON bodies.
		{"login malformed", alice, "POST", "login/", `{"username":`, 400},
		{"login not an object", alice, "POST", "login/", `[1, 2]`, 400},
		{"login empty body", alice, "POST", "login/", ``, 400},
		{"login two values", alice, "POST", "login/", `{}{}`, 400},
		{"login null", alice, "POST", "login/", `null`, 400},
		{"login missing password", alice, "POST", "login/", `{"username": "alice"}`, 400},
		{"login wrong types", alice, "POST", "login/", `{"username": 1, "password": true}`, 400},
		{"login huge", alice, "POST", "login/", huge, 413},
		{"login huge chunked", alice, "POST", "login/", io.MultiReader(strings.NewReader(huge)), 413},
		{"login deep nesting", alice, "POST", "login/", strings.Repeat("[", 100000), 0},
		{"login invalid UTF-8", alice, "POST", "login/", "{\"username\": \"\xff\xfe\", \"password\": \"x\"}", 401},
		{"quota bad cpu", carol, "POST", "quota/bob/", `{"cpu": "abc", "memory": "1G", "hdd": "1G", "max_simultaneous": 1}`, 400},
		{"quota memory number", carol, "POST", "quota/bob/", `{"cpu": 1, "memory": 5, "hdd": "1G", "max_simultaneous": 1}`, 400},
		{"quota negative", carol, "POST", "quota/bob/", `{"cpu": -1, "memory": "-1G", "hdd": "1G", "max_simultaneous": -1}`, 400},
		{"quota overflow", carol, "POST", "quota/bob/", `{"cpu": 1e400, "memory": "99999999999999999999G", "hdd": "1G", "max_simultaneous": 1e30}`, 400},
		{"quota missing", carol, "POST", "quota/bob/", `{"cpu": 1}`, 400},
		{"quota unknown user", carol, "POST", "quota/nobody/", `{"cpu": 1, "memory": "1G", "hdd": "1G", "max_simultaneous": 1}`, 404},
		{"image invalid", carol, "POST", "images/x/", `{"image": "", "resource_type": "tape"}`, 400},
		{"image wrong type", carol, "POST", "images/x/", `{"cpu": "many"}`, 400},
		{"image name differs", carol, "POST", "images/x/", `{"public_name": "y", ` + goodImage + `}`, 400},
		{"image bad name", carol, "POST", "images/..%2Fx/", `{` + goodImage + `}`, 0},
		{"image delete unknown", carol, "DELETE", "images/nothing/", nil, 404},
		{"admin flag wrong type", carol, "POST", "users/bob/admin", `{"is_superuser": "yes"}`, 400},
		{"admin flag missing", carol, "POST", "users/bob/admin", `{}`, 400},
		{"admin unknown user", carol, "GET", "users/nobody/admin", nil, 404},
		{"favorite bad value", alice, "PUT", "favorite/1/", `{"favorite": "maybe"}`, 400},
		{"favorite missing", alice, "PUT", "favorite/1/", `{}`, 400},
		{"favorite id text", alice, "PUT", "favorite/abc/", `{"favorite": true}`, 400},
		{"favorite id negative", alice, "PUT", "favorite/-1/", `{"favorite": true}`, 400},
		{"favorite id overflow", alice, "PUT", "favorite/99999999999999999999999/", `{"favorite": true}`, 400},
		{"umbrella wuo missing", alice, "POST", "umbrella/wuo/", `{}`, 400},
		{"umbrella wuo malformed", alice, "POST", "umbrella/wuo/", `{`, 400},

		// Odd path values.
		{"dotdot", alice, "GET", "users/../", nil, 0},
		{"dotdot in user", alice, "GET", "users/../alice/", nil, 0},
		{"encoded dotdot", alice, "GET", "users/%2e%2e/", nil, 0},
		{"encoded dotdot experiments", alice, "GET", "users/%2e%2e/experiments/", nil, 0},
		{"encoded slash", alice, "GET", "users/alice%2F..%2Fbob/", nil, 0},
		{"tilde", alice, "GET", "users/~/", nil, 403},
		{"very long", alice, "GET", "users/" + long + "/", nil, 403},
		{"very long admin", carol, "GET", "users/" + long + "/", nil, 404},
		{"unicode", alice, "GET", "users/" + url.PathEscape("ålice") + "/", nil, 403},
		{"unicode admin", carol, "GET", "users/" + url.PathEscape("ålice") + "/", nil, 404},
		{"NUL", alice, "GET", "users/%00/", nil, 0},
		{"NUL admin", carol, "GET", "users/alice%00/experiments/", nil, 0},
		{"double slash", alice, "GET", "users//", nil, 0},
		{"run dotdot", alice, "GET", "resource/run/alice/..%2F..%2Fetc/static_link/", nil, 0},
		{"run tilde", alice, "GET", "resource/run/alice/~/static_link/", nil, 404},
		{"run unknown experiment", alice, "GET", "resource/run/alice/nope~nope/static_link/", nil, 404},
		{"run unknown image", alice, "GET", "resource/run/alice/2019002~2019002-01/nope/", nil, 404},
		{"run long", alice, "GET", "resource/run/alice/" + long + "/" + long + "/", nil, 0},
		{"run without engine", alice, "GET", "resource/run/alice/2019002~2019002-01/base_image/", nil, 503},
		{"stop unknown", alice, "GET", "resource/stop/alice/nope/static_link/", nil, 404},
		{"rm unicode", alice, "GET", "resource/rm/alice/" + url.PathEscape("名前") + "/static_link/", nil, 404},
		{"container id text", carol, "GET", "containers/abc", nil, 400},
		{"container id zero", carol, "GET", "containers/0", nil, 400},
		{"container unknown", carol, "GET", "containers/424242", nil, 404},
		{"image unknown", alice, "GET", "images/" + url.PathEscape("ünknown") + "/", nil, 404},
		{"unknown path", alice, "GET", "nothing/here/", nil, 404},
		{"wrong method", alice, "DELETE", "settings/", nil, 405},

		// Query values.
		{"page zero", alice, "GET", "users/alice/experiments/?page=0", nil, 400},
		{"page negative", alice, "GET", "users/alice/experiments/?page=-1", nil, 400},
		{"page text", alice, "GET", "users/alice/experiments/?page=abc", nil, 400},
		{"page float", alice, "GET", "users/alice/experiments/?page=1.5", nil, 400},
		{"page huge", alice, "GET", "users/alice/experiments/?page=99999999999999999999", nil, 400},
		{"ordering unknown", alice, "GET", "users/alice/experiments/?ordering=password", nil, 200},
		{"ordering injection", alice, "GET", "users/alice/experiments/?ordering=" + url.QueryEscape("subject; DROP TABLE users"), nil, 200},
		{"ordering double minus", alice, "GET", "users/alice/experiments/?ordering=--subject", nil, 200},
		{"search too long", alice, "GET", "users/alice/experiments/?search=" + strings.Repeat("x", 5000), nil, 200},
		{"favorite filter bad", alice, "GET", "users/alice/experiments/?calipsouserexperiment__favorite=maybe", nil, 200},
		{"bad query escape", alice, "GET", "users/alice/experiments/?page=%zz", nil, 0},
		{"users page text", carol, "GET", "users/?page=x", nil, 400},
		{"users ordering unknown", carol, "GET", "users/?ordering=password", nil, 200},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			req, err := http.NewRequest(row.method, h.srv.URL+basePath+"PLACEHOLDER", bodyReader(row.body))
			if err != nil {
				t.Fatal(err)
			}
			// Send the path exactly as written: no cleaning, no re-escaping.
			raw := basePath + row.path
			p, q, _ := strings.Cut(raw, "?")
			req.URL.Path, err = url.PathUnescape(p)
			if err != nil {
				t.Fatal(err)
			}
			req.URL.RawPath = p
			req.URL.RawQuery = q
			if got := req.URL.EscapedPath(); got != p {
				t.Fatalf("the path would be sent as %q, not %q", got, p)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Origin", frontendOrigin)
			if row.method != http.MethodGet {
				req.Header.Set("X-CSRFToken", row.who.csrfToken())
			}
			a := row.who.send(req)
			if row.want == http.StatusOK {
				wantStatus(t, a, http.StatusOK)
				return
			}
			if row.want == 0 {
				if a.status < 400 || a.status > 499 {
					t.Fatalf("status %d, want a 4xx; body %s", a.status, a.body)
				}
				wantError(t, a, a.status)
				return
			}
			if row.path == "login/" && row.want == http.StatusUnauthorized {
				wantStatus(t, a, row.want) // the contract's refusal: a JSON string
				var msg string
				if a.json(t, &msg); msg != "Unable to authenticate" {
					t.Fatalf("login refusal %q", msg)
				}
				return
			}
			wantError(t, a, row.want)
		})
	}
}

func bodyReader(body any) io.Reader {
	switch v := body.(type) {
	case nil:
		return nil
	case string:
		return strings.NewReader(v)
	case io.Reader:
		return v
	}
	panic("bodyReader: unsupported body")
}
