package main

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

const crashhookPackage = "github.com/calipsoplus/calipso/cmd/calipso/internal/crashhook"

// TestCrashHookOnlyInCrashTestBuilds: only the crash tests' build links the hook.
func TestCrashHookOnlyInCrashTestBuilds(t *testing.T) {
	tests := []struct {
		tags string
		want bool
	}{{"", false}, {"crashtest", true}}
	for _, tt := range tests {
		t.Run("tags="+tt.tags, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-tags", tt.tags, "-deps", ".").Output()
			if err != nil {
				t.Fatalf("go list: %v", err)
			}
			if got := slices.Contains(strings.Fields(string(out)), crashhookPackage); got != tt.want {
				t.Errorf("links %s: %v, want %v", crashhookPackage, got, tt.want)
			}
		})
	}
}

// TestCrashEnvDoesNothingInProductionBuilds: this test binary is built as the
// production one is (no crashtest tag), and serves with CALIPSO_CRASH_AT set to a
// value the hook would refuse.
func TestCrashEnvDoesNothingInProductionBuilds(t *testing.T) {
	dir := t.TempDir()
	path := settingsFile(t, dir)
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(text), `listen = "127.0.0.1:8000"`, `listen = "127.0.0.1:0"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := &lockedLog{}
	getenv := func(k string) string {
		if k == "CALIPSO_CRASH_AT" {
			return "bogus"
		}
		return ""
	}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--settings", path, "serve"}, getenv, out, out) }()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(out.String(), "calipso serving on"); {
		select {
		case err := <-done:
			t.Fatalf("serve ended: %v\n%s", err, out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving after 30s:\n%s", out)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
	if strings.Contains(out.String(), "crash test hook") {
		t.Errorf("the hook was armed:\n%s", out)
	}
}
