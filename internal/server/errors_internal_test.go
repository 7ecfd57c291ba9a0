package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/experiments"
	"github.com/calipsoplus/calipso/guacamole"
	"github.com/calipsoplus/calipso/internal/launch"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/quotas"
)

// TestEveryCodeHasAStatus: the table covers every code; only EINTERNAL is a 500.
func TestEveryCodeHasAStatus(t *testing.T) {
	for _, code := range calipso.Codes {
		status, ok := statusOf[code]
		if !ok {
			t.Errorf("code %q has no status", code)
		}
		if (status == http.StatusInternalServerError) != (code == calipso.EINTERNAL) {
			t.Errorf("code %q answers %d", code, status)
		}
	}
	if len(statusOf) != len(calipso.Codes) {
		t.Errorf("statusOf has %d entries for %d codes", len(statusOf), len(calipso.Codes))
	}
}

// TestClassify: each package's errors, wrapped as they are wrapped, answer their
// status; 5xx show the kind only.
func TestClassify(t *testing.T) {
	cases := []struct {
		err     error
		status  int
		message string // "" : the error's whole text
	}{
		{fmt.Errorf("%w: page %q", errBadRequest, "x"), 400, ""},
		{errUnauthorized, 401, ""},
		{fmt.Errorf("%w: admins only", errForbidden), 403, ""},
		{errCrossSite, 403, ""},
		{errTooLarge, 413, ""},
		{fmt.Errorf("image %q: %w", "x", store.ErrNotFound), 404, ""},
		{&store.QuotaError{Reason: "Max machines exceeded"}, 409, ""},
		{fmt.Errorf("users: %w", store.ErrUnavailable), 503, "database unavailable"},
		{quotas.ErrInvalid, 400, ""},
		{experiments.ErrInvalidVolume, 422, ""},
		{fmt.Errorf("session x: %w", &experiments.VolumeError{Path: "/../etc", Reason: "leaves its root"}), 422, ""},
		{fmt.Errorf("office: %w", experiments.ErrForbidden), 502, "user office refused Calipso's credentials"},
		{experiments.ErrUnavailable, 503, "user office unavailable"},
		{fmt.Errorf("start: %w: bad image", provisioner.ErrInvalid), 422, ""},
		{provisioner.ErrNotReady, 504, "workload not ready"},
		{fmt.Errorf("record of x: %w", guacamole.ErrConflict), 409, ""},
		{guacamole.ErrInvalid, 422, ""},
		{fmt.Errorf("desktop: %w", guacamole.ErrUnavailable), 503, "guacamole database unavailable"},
		{launch.ErrNoEngine, 503, "no engine for this resource type"},
		{fmt.Errorf("launch: %w", context.DeadlineExceeded), 504, "timed out"},
		{errors.New("a bug with /internal/path"), 500, "internal error"},
	}
	for _, c := range cases {
		t.Run(c.err.Error(), func(t *testing.T) {
			status, msg := classify(c.err)
			want := c.message
			if want == "" {
				want = c.err.Error()
			}
			if status != c.status || msg != want {
				t.Fatalf("classify = %d %q, want %d %q", status, msg, c.status, want)
			}
		})
	}
}
