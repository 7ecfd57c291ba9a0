package main

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/calipsoplus/calipso/settings"
)

// TestEngineMissingIsExplained: a launch for an engine that is not there says why, as
// the wiring knows it (disabled in the settings), not "none is configured".
func TestEngineMissingIsExplained(t *testing.T) {
	path := settingsFile(t, t.TempDir()) // docker.enabled = false, kubernetes off
	cfg, err := settings.Load(path, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	a, err := build(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	u, err := a.db.EnsureUser(t.Context(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	const want = "docker is disabled in the settings (docker.enabled)"
	if _, err := a.launch.Launch(t.Context(), u, "2019002~2019002-01", "base_image"); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("launch base_image: %v, want it to say %q", err, want)
	}
}
