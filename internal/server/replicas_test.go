package server_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/calipsoplus/calipso/internal/testenv"
)

// TestReplicasHonourChangesWithinASecond: two servers on one database, behind a
// load balancer that sends a browser to either. A logout on one, an admin right
// revoked through the other, and an image changed by an admin on one, hold on both
// within a second (server.cache_ttl).
func TestReplicasHonourChangesWithinASecond(t *testing.T) {
	dsn := testenv.MySQLDSN(t)
	one, two := newHarness(t, withMySQLAt(dsn)), newHarness(t, withMySQLAt(dsn))
	on := func(b *browser, h *harness) *browser { c := *b; c.h = h; return &c } // same cookies, other replica

	alice := one.loggedIn("alice")
	wantStatus(t, on(alice, two).do(http.MethodGet, "users/alice/", nil), http.StatusOK) // the session is the database's
	wantStatus(t, alice.do(http.MethodGet, "logout/", nil), http.StatusOK)
	time.Sleep(time.Second)
	if a := on(alice, two).do(http.MethodGet, "users/alice/", nil); a.status == http.StatusOK {
		t.Errorf("a second after logging out on one replica, the other still answers the session: %d %s", a.status, a.body)
	}

	carol := one.loggedIn("carol") // an admin
	wantStatus(t, on(carol, two).do(http.MethodGet, "containers/", nil), http.StatusOK)

	bob := two.loggedIn("bob")
	hasImage := func(h *harness, name string) bool {
		t.Helper()
		var list []map[string]any
		a := on(bob, h).do(http.MethodGet, "images/", nil)
		wantStatus(t, a, http.StatusOK)
		a.json(t, &list)
		for _, im := range list {
			if im["public_name"] == name {
				return true
			}
		}
		return false
	}
	if !hasImage(two, "base_image") {
		t.Fatal("base_image is not in the list to begin with")
	}
	wantStatus(t, carol.do(http.MethodDelete, "images/base_image/", nil), http.StatusNoContent)
	time.Sleep(time.Second)
	if hasImage(two, "base_image") {
		t.Error("a second after an admin removed an image on one replica, the other still lists it")
	}

	if err := two.db.SetAdmin(context.Background(), "test", "carol", false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	for name, h := range map[string]*harness{"the replica that revoked it": two, "the other": one} {
		if a := on(carol, h).do(http.MethodGet, "containers/", nil); a.status == http.StatusOK {
			t.Errorf("a second after the admin right was revoked, %s still honours it", name)
		}
	}
}
