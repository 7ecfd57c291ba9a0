package server_test

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calipsoplus/calipso/experiments/icat"
	"github.com/calipsoplus/calipso/settings"
)

// switchable serves the reference ICAT+ server until down is set.
type switchable struct {
	ref  http.Handler
	down atomic.Bool
}

func (s *switchable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.down.Load() {
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
		return
	}
	s.ref.ServeHTTP(w, r)
}

// TestExperimentsFromICAT: with ICAT as the source, the experiments pages have the
// user-office source's shape exactly (the frontend contract), its sessions launch,
// and a stale local copy serves while the catalogue is down; experiments/<id>/users
// answers participants and admins only.
func TestExperimentsFromICAT(t *testing.T) {
	demo, err := icat.Demo()
	if err != nil {
		t.Fatal(err)
	}
	cat := &switchable{ref: icat.NewServer(demo)}
	h := newHarness(t, withCatalogue(cat), withSettings(func(c *settings.Settings) {
		c.UserOffice.RefreshInterval = settings.Duration{Duration: time.Nanosecond} // every page asks the catalogue
	}))
	alice, carol := h.loggedIn("alice"), h.loggedIn("carol")
	a := alice.do(http.MethodGet, "users/alice/experiments/", nil)
	wantStatus(t, a, http.StatusOK)
	page := a.object(t)
	wantKeys(t, page, pageShape)
	results := page["results"].([]any)
	if len(results) != 1 {
		t.Fatalf("alice's experiments from ICAT: %s", a.body)
	}
	exp := results[0].(map[string]any)
	wantKeys(t, exp, experimentShape)
	if exp["proposal_id"] != "MX-2419" || exp["beam_line"] != "id23-1, id30a-3" {
		t.Errorf("experiment = %v", exp)
	}
	sessions := exp["sessions"].([]any)
	for _, s := range sessions {
		wantKeys(t, s.(map[string]any), sessionShape)
	}
	if len(sessions) != 2 || sessions[0].(map[string]any)["session_number"] != "101" {
		t.Errorf("sessions = %v", sessions)
	}
	launched := alice.do(http.MethodPost, "api/v2/resources", map[string]string{"experiment": "MX-2419~101", "image": "static_link"})
	wantStatus(t, launched, http.StatusAccepted)

	for _, tt := range []struct {
		name string
		who  *browser
		path string
		want int
	}{
		{"a participant", alice, "experiments/101/users", http.StatusOK},
		{"not a participant", alice, "experiments/201/users", http.StatusForbidden},
		{"an admin", carol, "experiments/201/users", http.StatusOK},
		{"no such investigation", carol, "experiments/999/users", http.StatusNotFound},
		{"not an id", alice, "experiments/x/users", http.StatusBadRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := tt.who.do(http.MethodGet, tt.path, nil)
			if a.status != tt.want {
				t.Fatalf("%s = %d %s, want %d", tt.path, a.status, a.body, tt.want)
			}
			if tt.want != http.StatusOK {
				wantError(t, a, tt.want)
				return
			}
			var users []map[string]any
			a.json(t, &users)
			wantKeys(t, users[0], map[string]string{"name": "string", "fullName": "string", "role": "string", "investigationName": "string", "investigationId": "number"})
		})
	}
	if a := h.browser().do(http.MethodGet, "experiments/101/users", nil); a.status != http.StatusUnauthorized {
		t.Errorf("anonymous: %d", a.status)
	}

	t.Run("catalogue down", func(t *testing.T) {
		cat.down.Store(true)
		defer cat.down.Store(false)
		var p expPage
		a := alice.do(http.MethodGet, "users/alice/experiments/", nil)
		wantStatus(t, a, http.StatusOK)
		a.json(t, &p)
		if !p.Stale || p.Count != 1 {
			t.Fatalf("while ICAT is down: %s", a.body)
		}
		wantError(t, alice.do(http.MethodGet, "experiments/101/users", nil), http.StatusServiceUnavailable)
	})
}
