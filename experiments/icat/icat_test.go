package icat_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calipsoplus/calipso/experiments/icat"
)

func client(t *testing.T, url string, adjust func(*icat.Config)) *icat.Client {
	t.Helper()
	d, _ := icat.Demo()
	cfg := icat.Config{URL: url, Plugin: d.Reader.Plugin, Username: d.Reader.Username, Password: d.Reader.Password,
		Timeout: 2 * time.Second, Retries: 2, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if adjust != nil {
		adjust(&cfg)
	}
	c, err := icat.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func referenceServer(t *testing.T) *httptest.Server {
	t.Helper()
	d, err := icat.Demo()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(icat.NewServer(d))
	t.Cleanup(srv.Close)
	return srv
}

// TestExperiments: through the real HTTP client against the reference ICAT+ server,
// a user sees the investigations they take part in, grouped into proposals (the
// session number the investigation id, the dates createTime and endDate, the
// beamlines the visitIds, the body the summary), never another's embargoed data;
// with include_released, the released ones too.
func TestExperiments(t *testing.T) {
	srv := referenceServer(t)
	ctx := context.Background()
	alice, err := client(t, srv.URL, nil).AllExperiments(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(alice) != 1 || alice[0].ProposalID != "MX-2419" || len(alice[0].Sessions) != 2 {
		t.Fatalf("alice's experiments = %+v", alice)
	}
	e := alice[0]
	if e.BeamLine != "id23-1, id30a-3" || e.Body != "Serial crystallography of hen egg-white lysozyme." || e.Subject != "Lysozyme at room temperature" {
		t.Errorf("proposal = %+v", e)
	}
	s := e.Sessions[0]
	if s.SessionNumber != "101" || !s.StartDate.Equal(time.Date(2026, 3, 2, 7, 0, 0, 0, time.UTC)) || !s.EndDate.Equal(time.Date(2026, 3, 4, 7, 0, 0, 0, time.UTC)) {
		t.Errorf("session = %+v", s)
	}
	bob, _ := client(t, srv.URL, nil).AllExperiments(ctx, "bob")
	var proposals []string
	for _, e := range bob {
		proposals = append(proposals, e.ProposalID)
		if e.ProposalID == "MX-2419" && len(e.Sessions) != 1 {
			t.Errorf("bob sees an investigation he does not take part in: %+v", e.Sessions)
		}
	}
	if !slices.Equal(proposals, []string{"HC-5001", "MX-2419"}) {
		t.Errorf("bob's proposals = %v", proposals)
	}
	nobody, _ := client(t, srv.URL, nil).AllExperiments(ctx, "mallory")
	if len(nobody) != 0 {
		t.Errorf("a stranger sees %+v", nobody)
	}
	withReleased, _ := client(t, srv.URL, func(c *icat.Config) { c.IncludeReleased = true }).AllExperiments(ctx, "mallory")
	if len(withReleased) != 1 || withReleased[0].ProposalID != "IH-PUBLIC-7" {
		t.Errorf("released data = %+v", withReleased)
	}

	t.Run("the user's own session, by OpenID token", func(t *testing.T) {
		c := client(t, srv.URL, func(c *icat.Config) { c.OpenID = true })
		got, err := c.AllExperiments(icat.AccessTokenContext(ctx, "demo-token-bob"), "bob")
		if err != nil || len(got) != 2 {
			t.Fatalf("%+v %v", got, err)
		}
		if _, err := c.AllExperiments(icat.AccessTokenContext(ctx, "forged"), "bob"); !errors.Is(err, icat.ErrRefused) {
			t.Errorf("a forged token: %v", err)
		}
	})
}

// TestParticipants: the investigation's users, to a participant or an admin only.
func TestParticipants(t *testing.T) {
	srv := referenceServer(t)
	c := client(t, srv.URL, nil)
	ctx := context.Background()
	users, err := c.Participants(ctx, 101, "bob", false)
	if err != nil || len(users) != 2 || users[0].Name != "alice" || users[0].FullName != "Alice Martin" || users[0].InvestigationName != "MX-2419" || users[0].InvestigationID != 101 {
		t.Fatalf("participants = %+v, %v", users, err)
	}
	if _, err := c.Participants(ctx, 201, "alice", false); !errors.Is(err, icat.ErrNotParticipant) {
		t.Errorf("alice on bob's investigation: %v", err)
	}
	if _, err := c.Participants(ctx, 201, "carol", true); err != nil {
		t.Errorf("an admin: %v", err)
	}
	if _, err := c.Participants(ctx, 999, "alice", true); !errors.Is(err, icat.ErrNotFound) {
		t.Errorf("no such investigation: %v", err)
	}
}

// TestCatalogueDownAndSlow: refused credentials, a catalogue that is down, one that
// fails then recovers (GETs retried; the session login never is) and one slower
// than the timeout: clear errors, bounded.
func TestCatalogueDownAndSlow(t *testing.T) {
	ctx := context.Background()
	srv := referenceServer(t)
	if _, err := client(t, srv.URL, func(c *icat.Config) { c.Password = "wrong" }).AllExperiments(ctx, "alice"); !errors.Is(err, icat.ErrRefused) {
		t.Errorf("wrong credentials: %v", err)
	}
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	if _, err := client(t, down.URL, nil).AllExperiments(ctx, "alice"); !errors.Is(err, icat.ErrUnavailable) {
		t.Errorf("down: %v", err)
	}
	d, _ := icat.Demo()
	ref := icat.NewServer(d)
	var fails atomic.Int32
	fails.Store(2)
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && fails.Add(-1) >= 0 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		ref.ServeHTTP(w, r)
	}))
	defer flaky.Close()
	if got, err := client(t, flaky.URL, nil).AllExperiments(ctx, "alice"); err != nil || len(got) != 1 {
		t.Errorf("after two 503s: %+v, %v", got, err)
	}
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer slow.Close()
	start := time.Now()
	_, err := client(t, slow.URL, func(c *icat.Config) { c.Timeout = 200 * time.Millisecond }).AllExperiments(ctx, "alice")
	if !errors.Is(err, icat.ErrUnavailable) {
		t.Errorf("slow: %v", err)
	}
	if time.Since(start) > 4*time.Second {
		t.Errorf("a slow catalogue held the call %v", time.Since(start))
	}
}
