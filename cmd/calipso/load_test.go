package main

import (
	"bytes"
	"context"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestLoadFlagErrors(t *testing.T) {
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := runLoad(context.Background(), tt.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("runLoad(%q) = %v, want an error containing %q", tt.args, err, tt.want)
			}
		})
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

// TestLoadAgainstServer drives a real server with two users and checks the report
// and that the run left nothing behind.
func TestLoadAgainstServer(t *testing.T) {
	s := newLiveServer(t, 3, "bo")
	s.start()
	var out bytes.Buffer
	err := runLoad(context.Background(), []string{
		"--url", s.base, "--users", crashUser + ":" + crashPassword + ",bo:bo-secret",
		"--concurrency", "4", "--requests", "40", "--mix", "4,3,2", "--image", crashImage,
	}, &out, io.Discard)
	if err != nil {
		t.Fatalf("runLoad: %v\n%s", err, out.String())
	}
	report := out.String()
	for _, op := range []string{"login", "read", "launch"} {
		if !regexp.MustCompile(`(?m)^\s*` + op + `\s+[1-9][0-9]*\s+`).MatchString(report) {
			t.Errorf("report has no successful %s:\n%s", op, report)
		}
	}
	if n := len(s.containers()); n != 0 {
		t.Errorf("%d containers left after the run\n%s\nserver log:\n%s", n, report, s.logs)
	}
	t.Log("\n" + report)
}
