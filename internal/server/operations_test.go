package server_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/calipsoplus/calipso/internal/server"
	"github.com/calipsoplus/calipso/settings"
)

// syncBuffer is a log destination that handlers write to at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// direct serves one request to the handler itself, from the client address remote
// (the test server's clients are all on the loopback).
func (h *harness) direct(method, target, host, remote string, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, nil)
	req.Host, req.RemoteAddr = host, remote
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.handler.ServeHTTP(rec, req)
	return rec
}

// TestReadyzReveals (security review, finding 7): anonymous /readyz showed the
// checks' raw errors (user names, hosts) to anyone, whatever the Host. It answers
// each part's state only, logs the details, and serves other hosts only on the
// loopback and to trusted proxies.
func TestReadyzReveals(t *testing.T) {
	const secret = "dial tcp db-7.internal.example:3306: Error 1045: Access denied for user 'calipso'@'10.1.2.3'"
	failing := server.Check{Name: "user_office", Fn: func(context.Context) error { return errors.New(secret) }}
	var log syncBuffer
	h := newHarness(t, withChecks(failing), withLogTo(&log), withSettings(func(s *settings.Settings) {
		s.AllowedHosts = []string{"calipso.example.org"}
		s.TrustedPrefixes = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")} // the load balancer
	}))

	rec := h.direct(http.MethodGet, "/readyz", "calipso.example.org", "203.0.113.5:4444", nil)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("readyz: %d %s", rec.Code, rec.Body)
	}
	body := rec.Body.String()
	for _, leak := range []string{"calipso'", "10.1.2.3", "db-7", "1045", "Access denied"} {
		if strings.Contains(body, leak) {
			t.Errorf("readyz shows %q: %s", leak, body)
		}
	}
	a := answer{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
	if m := a.object(t); len(m) != 2 || m["database"] != "ok" || m["user_office"] != "unavailable" {
		t.Errorf("readyz %s: want each part with ok or unavailable", body)
	}
	if !strings.Contains(log.String(), "user_office") || !strings.Contains(log.String(), "Access denied for user") {
		t.Errorf("the failing check's error is not in the log:\n%s", log.String())
	}

	for _, c := range []struct {
		name, host, remote string
		want               int
	}{
		{"by IP from anywhere", "10.0.0.5:8000", "203.0.113.5:4444", http.StatusBadRequest},
		{"another host from anywhere", "evil.example", "203.0.113.5:4444", http.StatusBadRequest},
		{"by IP from a trusted proxy", "10.0.0.5:8000", "198.51.100.20:4444", http.StatusServiceUnavailable},
		{"by IP on the loopback", "127.0.0.1:8000", "127.0.0.1:4444", http.StatusServiceUnavailable},
		{"by IP on the IPv6 loopback", "[::1]:8000", "[::1]:4444", http.StatusServiceUnavailable},
	} {
		if rec := h.direct(http.MethodGet, "/readyz", c.host, c.remote, nil); rec.Code != c.want {
			t.Errorf("readyz %s: %d %s, want %d", c.name, rec.Code, rec.Body, c.want)
		}
	}
	// /healthz says only that the process serves: any host, from anywhere.
	if rec := h.direct(http.MethodGet, "/healthz", "10.0.0.5:8000", "203.0.113.5:4444", nil); rec.Code != http.StatusOK {
		t.Errorf("healthz by IP: %d %s", rec.Code, rec.Body)
	}
}

// TestMetricsToken (finding 7): with server.metrics_token, /metrics asks for it as a
// bearer token; scrapers come by IP, so the Host does not matter.
func TestMetricsToken(t *testing.T) {
	const token = "metrics-token-0123456789abcdef"
	h := newHarness(t, withSettings(func(s *settings.Settings) {
		s.Server.MetricsToken = token
		s.AllowedHosts = []string{"calipso.example.org"}
	}))
	for name, auth := range map[string]string{"none": "", "wrong": "Bearer nope", "basic": "Basic " + token, "prefix": "Bearer " + token[:10]} {
		var header map[string]string
		if auth != "" {
			header = map[string]string{"Authorization": auth}
		}
		rec := h.direct(http.MethodGet, "/metrics", "10.0.0.5:8000", "203.0.113.5:4444", header)
		if rec.Code != http.StatusUnauthorized || !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("metrics with %s authorization: %d (WWW-Authenticate %q), want 401 asking for a bearer token", name, rec.Code, rec.Header().Get("WWW-Authenticate"))
		}
		if strings.Contains(rec.Body.String(), "calipso_http_requests_total") {
			t.Errorf("metrics with %s authorization answered the metrics", name)
		}
	}
	rec := h.direct(http.MethodGet, "/metrics", "10.0.0.5:8000", "203.0.113.5:4444", map[string]string{"Authorization": "Bearer " + token})
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "calipso_http_requests_total") {
		t.Fatalf("metrics with the token: %d %.200s", rec.Code, rec.Body)
	}
}
