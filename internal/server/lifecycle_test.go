package server_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/experiments/useroffice"
	"github.com/calipsoplus/calipso/settings"
)

// TestExtensions: a user asks for more lifetime with a reason; within the roles'
// max_lifetime it is granted at once and the expiry moves, beyond it an admin
// decides; records show their expiry.
func TestExtensions(t *testing.T) {
	h := newHarness(t, withSettings(func(c *settings.Settings) {
		user := c.Access.Policy.Roles[calipso.RoleUser]
		user.MaxLifetime = 48 * time.Hour
		c.Access.Policy.Roles[calipso.RoleUser] = user
	}))
	ctx := context.Background()
	alice, bob, carol := h.loggedIn("alice"), h.loggedIn("bob"), h.loggedIn("carol")
	wantStatus(t, alice.do(http.MethodGet, "users/alice/experiments/", nil), http.StatusOK)
	a := alice.do(http.MethodPost, "api/v2/resources", map[string]string{"experiment": accessSessions["alice"], "image": "static_link"})
	wantStatus(t, a, http.StatusAccepted)
	id := int64(a.object(t)["id"].(float64))
	waitRunning(t, h, id, "alice")
	r, _ := h.db.Resource(ctx, id)
	if r.ExpiresAt == nil || (r.ExpiresAt.Sub(r.Created)-48*time.Hour).Abs() > time.Second {
		t.Fatalf("expiry %v of a record created %v: want the role's max_lifetime", r.ExpiresAt, r.Created)
	}
	day := r.Created.Add(24 * time.Hour)
	if err := h.db.SetExpiry(ctx, id, &day); err != nil {
		t.Fatal(err)
	}
	path := "api/v2/resources/" + strconv.FormatInt(id, 10) + "/extensions"
	for _, bad := range []map[string]any{{"hours": 0, "reason": "x"}, {"hours": 1.5, "reason": "x"}, {"hours": 12}, {"reason": "x"}} {
		wantError(t, alice.do(http.MethodPost, path, bad), http.StatusBadRequest)
	}
	wantError(t, bob.do(http.MethodPost, path, map[string]any{"hours": 1, "reason": "not mine"}), http.StatusNotFound)

	granted := alice.do(http.MethodPost, path, map[string]any{"hours": 12, "reason": "the scan runs late"})
	wantStatus(t, granted, http.StatusCreated)
	if got := granted.object(t); got["state"] != "granted" || got["decided_by"] != "policy" {
		t.Fatalf("within the limit: %v", got)
	}
	var rec map[string]any
	alice.do(http.MethodGet, "api/v2/resources/"+strconv.FormatInt(id, 10), nil).json(t, &rec)
	if at, _ := time.Parse(time.RFC3339Nano, rec["expires_at"].(string)); !at.Equal(day.Add(12 * time.Hour)) {
		t.Fatalf("expires_at %v, want %v", rec["expires_at"], day.Add(12*time.Hour))
	}

	pending := alice.do(http.MethodPost, path, map[string]any{"hours": 100, "reason": "a second beamtime"})
	wantStatus(t, pending, http.StatusAccepted)
	ext := strconv.FormatInt(int64(pending.object(t)["id"].(float64)), 10)
	wantError(t, alice.do(http.MethodGet, "api/v2/extensions?state=pending", nil), http.StatusForbidden)
	wantError(t, alice.do(http.MethodPost, "api/v2/extensions/"+ext, map[string]any{"grant": true}), http.StatusForbidden)
	var waiting []map[string]any
	carol.do(http.MethodGet, "api/v2/extensions?state=pending", nil).json(t, &waiting)
	if len(waiting) != 1 || waiting[0]["reason"] != "a second beamtime" {
		t.Fatalf("pending for the admin: %v", waiting)
	}
	decided := carol.do(http.MethodPost, "api/v2/extensions/"+ext, map[string]any{"grant": false})
	wantStatus(t, decided, http.StatusOK)
	if got := decided.object(t); got["state"] != "refused" || got["decided_by"] != "carol" {
		t.Fatalf("refused: %v", got)
	}
	wantError(t, carol.do(http.MethodPost, "api/v2/extensions/"+ext, map[string]any{"grant": true}), http.StatusConflict)
	var all []map[string]any
	alice.do(http.MethodGet, path, nil).json(t, &all)
	if len(all) != 2 {
		t.Fatalf("the record's requests: %v", all)
	}
	if r, _ := h.db.Resource(ctx, id); !r.ExpiresAt.Equal(day.Add(12 * time.Hour)) {
		t.Fatalf("a refused extension moved the expiry to %v", r.ExpiresAt)
	}
}

// TestLifetimeTiedToSession: with lifecycle.tie_to_session, a session's resources
// expire session_grace after the session's end date, as the user office gives it; one
// launched after that grace expires at once (the policies stop it at their next pass).
func TestLifetimeTiedToSession(t *testing.T) {
	data, err := useroffice.Demo()
	if err != nil {
		t.Fatal(err)
	}
	end := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	for i, e := range data.Experiments {
		if e.ProposalID == "2019001" {
			data.Experiments[i].Sessions[0].EndDate = []byte(`"` + end.Format(time.RFC3339) + `"`)
		}
	}
	h := newHarness(t, withOffice(data), withSettings(func(c *settings.Settings) {
		c.Lifecycle.Policy = calipso.Lifetime{Default: 30 * 24 * time.Hour, TieToSession: true, SessionGrace: 24 * time.Hour}
		c.Lifecycle.Policy.Images = map[string]time.Duration{}
	}))
	alice := h.loggedIn("alice")
	wantStatus(t, alice.do(http.MethodGet, "users/alice/experiments/", nil), http.StatusOK)
	expiry := func(session string) time.Time {
		t.Helper()
		a := alice.do(http.MethodPost, "api/v2/resources", map[string]string{"experiment": session, "image": "static_link"})
		wantStatus(t, a, http.StatusAccepted)
		r, err := h.db.Resource(context.Background(), int64(a.object(t)["id"].(float64)))
		if err != nil || r.ExpiresAt == nil {
			t.Fatalf("%s: %+v %v", session, r.ExpiresAt, err)
		}
		return *r.ExpiresAt
	}
	if got := expiry("2019001~2019001-01"); !got.Equal(end.Add(24 * time.Hour)) {
		t.Errorf("a session ending %v: expiry %v, want its end plus the grace", end, got)
	}
	// 2019002-01 ended in May 2019: its grace is long over.
	if got := expiry("2019002~2019002-01"); time.Since(got).Abs() > time.Minute {
		t.Errorf("a session over long ago: expiry %v, want now", got)
	}
}

// TestNotice: once its user was warned, the v2 record says what the policies will do
// and when; before, nothing.
func TestNotice(t *testing.T) {
	h := newHarness(t, withSettings(func(c *settings.Settings) {
		c.Lifecycle.Enabled = true
		c.Lifecycle.Reclaim = calipso.Reclaim{ExpiryAction: calipso.ActionStop, IdleAction: calipso.ActionStop, WarnBefore: time.Hour}
	}))
	ctx := context.Background()
	alice := h.loggedIn("alice")
	wantStatus(t, alice.do(http.MethodGet, "users/alice/experiments/", nil), http.StatusOK)
	a := alice.do(http.MethodPost, "api/v2/resources", map[string]string{"experiment": accessSessions["alice"], "image": "static_link"})
	wantStatus(t, a, http.StatusAccepted)
	id := int64(a.object(t)["id"].(float64))
	waitRunning(t, h, id, "alice")
	soon := time.Date(2030, 1, 2, 15, 4, 0, 0, time.UTC)
	if err := h.db.SetExpiry(ctx, id, &soon); err != nil {
		t.Fatal(err)
	}
	notice := func() string {
		var rec map[string]any
		alice.do(http.MethodGet, "api/v2/resources/"+strconv.FormatInt(id, 10), nil).json(t, &rec)
		n, _ := rec["notice"].(string)
		return n
	}
	if n := notice(); n != "" {
		t.Fatalf("a notice before any warning: %q", n)
	}
	if err := h.db.SetWarned(ctx, id, time.Now()); err != nil {
		t.Fatal(err)
	}
	if n := notice(); !strings.Contains(n, "2030-01-02 15:04") || !strings.Contains(n, "stopped") {
		t.Fatalf("notice %q", n)
	}
}
