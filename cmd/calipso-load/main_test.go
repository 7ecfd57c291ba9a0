package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no users", []string{"--url", "http://127.0.0.1:1/x/"}, "--users or --user-prefix is required"},
		{"not loopback", []string{"--url", "http://example.org/x/", "--users", "a:b"}, "only loopback"},
		{"bad pair", []string{"--users", "nopassword"}, "want user:password"},
		{"bad mix", []string{"--users", "a:b", "--mix", "1,2"}, "want reads,launches,removals"},
		{"zero mix", []string{"--users", "a:b", "--mix", "0,0,0"}, "at least one weight"},
		{"unbounded duration", []string{"--users", "a:b", "--duration", "2h"}, "at most 1h"},
		{"bad concurrency", []string{"--users", "a:b", "--concurrency", "0"}, "--concurrency"},
		{"both user forms", []string{"--users", "a:b", "--user-prefix", "u"}, "not both"},
		{"stray argument", []string{"--users", "a:b", "extra"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args, nil, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, tt.want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"-h"}, nil, io.Discard, &stderr)
	if !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr.String(), "Usage: calipso-load") {
		t.Errorf("-h: %v\n%s", err, stderr.String())
	}
}

func TestPercentile(t *testing.T) {
	var sorted []time.Duration
	for i := 1; i <= 100; i++ {
		sorted = append(sorted, time.Duration(i))
	}
	tests := []struct {
		p    float64
		want time.Duration
	}{{0.5, 50}, {0.9, 90}, {0.99, 99}, {1, 100}, {0, 1}}
	for _, tt := range tests {
		if got := percentile(sorted, tt.p); got != tt.want {
			t.Errorf("percentile(%v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile of nothing = %v, want 0", got)
	}
}

// TestReadsAgainstAFakeServer runs the tool against a stand-in of the compat API's
// reads (the launches are tested against the real server in cmd/calipso).
func TestReadsAgainstAFakeServer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/api/settings/":
			http.SetCookie(w, &http.Cookie{Name: "csrftoken", Value: "tok", Path: "/"})
		case r.URL.Path == "/api/login/" && r.Header.Get("X-CSRFToken") != "tok":
			http.Error(w, "CSRF", http.StatusForbidden)
		case strings.HasSuffix(r.URL.Path, "/experiments/"):
			io.WriteString(w, `{"results":[{"proposal_id":"p1","sessions":[{"session_number":"s1"}]}]}`)
		case strings.HasPrefix(r.URL.Path, "/api/resource/list/"):
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	var out bytes.Buffer
	err := run(context.Background(), []string{"--url", srv.URL + "/api/", "--users", "ana:x,bo:y", "--requests", "30", "--mix", "1,0,0"}, nil, &out, io.Discard)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	report := out.String()
	for _, re := range []string{
		`load: 2 users logged in`,
		`(?m)^\s*login\s+2\s+0\s`,
		`(?m)^\s*read\s+[0-9]+\s+[0-9]+\s.*\b503×[0-9]+`, // resource/list answers 503 here
	} {
		if !regexp.MustCompile(re).MatchString(report) {
			t.Errorf("report does not match %s:\n%s", re, report)
		}
	}
}
