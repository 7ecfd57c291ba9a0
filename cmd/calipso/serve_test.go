package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/calipsoplus/calipso/provisioner/kubernetes"
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

// TestLeaderLeaseWiring: with kubernetes.leader_lease the controller campaigns on the
// Lease (as this process's lease identity); without a usable Kubernetes engine the
// start fails rather than some replicas electing through the database and others not.
func TestLeaderLeaseWiring(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	// A cluster nobody answers at: building the engine does not contact it.
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, kubeconfig, wantErr string
	}{
		{"engine set up", kubeconfig, ""},
		{"engine not usable", filepath.Join(dir, "missing"), "kubernetes.leader_lease: the Kubernetes engine could not be set up"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := settingsFile(t, t.TempDir())
			cfg, err := settings.Load(path, func(string) string { return "" })
			if err != nil {
				t.Fatal(err)
			}
			cfg.Kubernetes = settings.Kubernetes{Enabled: true, Kubeconfig: c.kubeconfig, Namespace: "calipso",
				HostAddress: "nodes.example", ServiceType: "NodePort", LeaderLease: "calipso-leader"}
			a, err := build(t.Context(), cfg, slog.New(slog.DiscardHandler))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("build: %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(a.Close)
			if _, ok := a.elector.(*kubernetes.LeaseElector); !ok {
				t.Errorf("elector = %T, want the Kubernetes Lease's", a.elector)
			}
		})
	}
}
