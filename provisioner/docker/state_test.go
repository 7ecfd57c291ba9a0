package docker

import (
	"errors"
	"fmt"
	"testing"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/calipsoplus/calipso/provisioner"
)

func TestStateOf(t *testing.T) {
	tests := []struct {
		status     string
		exitCode   int
		oom        bool
		engineErr  string
		wantState  provisioner.State
		wantReason string
	}{
		{"created", 0, false, "", provisioner.StateCreated, ""},
		{"running", 0, false, "", provisioner.StateRunning, ""},
		{"restarting", 0, false, "", provisioner.StatePending, "restarting"},
		{"paused", 0, false, "", provisioner.StateStopped, "paused"},
		{"exited", 0, false, "", provisioner.StateStopped, "exited with code 0"},
		{"exited", 143, false, "", provisioner.StateStopped, "exited with code 143"},
		{"exited", 137, true, "", provisioner.StateError, "out of memory (OOMKilled)"},
		{"exited", 127, false, "exec: no such file", provisioner.StateError, "exec: no such file"},
		{"dead", 0, false, "", provisioner.StateError, "dead (the engine could not stop or remove it)"},
		{"dead", 0, false, "device busy", provisioner.StateError, "dead (the engine could not stop or remove it): device busy"},
		{"weird", 0, false, "", provisioner.StateError, `unknown container status "weird"`},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d/%v", tt.status, tt.exitCode, tt.oom), func(t *testing.T) {
			state, reason := stateOf(tt.status, tt.exitCode, tt.oom, tt.engineErr)
			if state != tt.wantState || reason != tt.wantReason {
				t.Errorf("stateOf = %s %q, want %s %q", state, reason, tt.wantState, tt.wantReason)
			}
		})
	}
}

func TestURL(t *testing.T) {
	tests := []struct {
		host     string
		protocol string
		port     int
		token    string
		want     string
	}{
		{"localhost", "http", 32768, "abc123", "http://localhost:32768/?token=abc123"},
		{"calipso.example.org", "http", 40000, "", "http://calipso.example.org:40000/"},
		{"::1", "http", 40000, "t", "http://[::1]:40000/?token=t"},
		{"localhost", "http", 40000, "a b&c", "http://localhost:40000/?token=a+b%26c"},
		{"localhost", "vnc", 40000, "t", ""},
		{"localhost", "rdp", 40000, "", ""},
		{"localhost", "http", 0, "t", ""},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			p := &Provisioner{cfg: Config{HostAddress: tt.host}}
			if got := p.url(tt.protocol, tt.port, tt.token); got != tt.want {
				t.Errorf("url = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEngineError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"not found", fmt.Errorf("no such container: %w", cerrdefs.ErrNotFound), provisioner.ErrNotFound},
		{"invalid", fmt.Errorf("bad: %w", cerrdefs.ErrInvalidArgument), provisioner.ErrInvalid},
		{"unavailable", fmt.Errorf("busy: %w", cerrdefs.ErrUnavailable), provisioner.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := engineError("op", tt.err); !errors.Is(err, tt.want) || !errors.Is(err, tt.err) {
				t.Errorf("engineError(%v) = %v, want %v wrapping the original", tt.err, err, tt.want)
			}
		})
	}
	other := errors.New("boom")
	if err := engineError("op", other); errors.Is(err, provisioner.ErrUnavailable) || errors.Is(err, provisioner.ErrInvalid) || errors.Is(err, provisioner.ErrNotFound) || !errors.Is(err, other) {
		t.Errorf("engineError(other) = %v, want it wrapped without a kind", err)
	}
}
