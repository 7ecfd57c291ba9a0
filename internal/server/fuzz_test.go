package server_test

import (
	"bytes"
	"net/http"
	"testing"
	"time"
)

// FuzzDecodeJSON sends arbitrary bodies to the JSON endpoints: the answer is never a
// 5xx (a panic would be a 500 from recoverPanics, or a broken connection).
func FuzzDecodeJSON(f *testing.F) {
	for _, seed := range []string{
		`{"username": "alice", "password": "alice-demo"}`, `{"username": 1}`, `{`, `[]`, `null`, ``, `{}{}`,
		`{"cpu": "1.5", "memory": "2G", "hdd": "3G", "max_simultaneous": "2"}`, `{"cpu": 1e400}`,
		`{"image": "https://x/", "resource_type": "static link", "memory": "0", "hdd": "0"}`,
		`{"favorite": "1"}`, `{"is_superuser": true}`, "\xff\xfe", `{"username": "\u0000"}`,
	} {
		f.Add([]byte(seed))
	}
	h := newHarness(f)
	carol := h.loggedIn("carol")
	carol.c.Timeout = 10 * time.Second
	h.loggedIn("bob")
	anon := h.browser()
	anon.c.Timeout = 10 * time.Second
	targets := []struct {
		who    *browser
		method string
		path   string
	}{
		{anon, http.MethodPost, "login/"},
		{carol, http.MethodPost, "quota/bob/"},
		{carol, http.MethodPut, "images/fuzzed/"},
		{carol, http.MethodPost, "users/bob/admin"},
		{carol, http.MethodPut, "favorite/1/"},
		{anon, http.MethodPost, "umbrella/wuo/"},
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, tg := range targets {
			a := tg.who.in(t).do(tg.method, tg.path, bytes.Clone(body))
			if a.status >= 500 {
				t.Fatalf("%s %s with %q: %d %s", tg.method, tg.path, body, a.status, a.body)
			}
		}
	})
}
