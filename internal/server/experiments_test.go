package server_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/experiments/useroffice"
	"github.com/calipsoplus/calipso/settings"
)

// officeData builds a user office with user dana in n experiments (and one she is
// not in), with repeated beamlines and non-ASCII text.
func officeData(n int, subjectSuffix string) *useroffice.Data {
	words := []string{"Crystal growth", "Über Strukturen", "ΣΟΦΊΑ optics", "straße samples", "日本語 powders", "Magnetism", "thin FILMS", "100% pure_sample"}
	d := &useroffice.Data{Accounts: []useroffice.Account{
		{Username: "dana", Password: demoPassword("dana-pw")},
		{Username: "eve", Password: demoPassword("eve-pw")},
	}}
	for i := range n {
		d.Experiments = append(d.Experiments, useroffice.Experiment{
			ProposalID:   fmt.Sprintf("P%04d", (i*37)%1000), // not in insertion order
			Subject:      fmt.Sprintf("%s %d%s", words[i%len(words)], i, subjectSuffix),
			Body:         fmt.Sprintf("Body %c%d", 'z'-rune(i%26), i%5),
			BeamLine:     fmt.Sprintf("BL%02d", i%4),
			Participants: []string{"dana"},
			Sessions: []useroffice.Session{{SessionNumber: fmt.Sprintf("S%04d-1", i), Subject: "Shift", DataSetPath: "[]",
				StartDate: json.RawMessage(`"2020-01-02T00:00:00Z"`)}},
		})
	}
	d.Experiments = append(d.Experiments, useroffice.Experiment{ProposalID: "EVE01", Subject: "Crystal of eve", Body: "x", BeamLine: "BL00",
		Participants: []string{"eve"}, Sessions: []useroffice.Session{{SessionNumber: "E1"}}})
	return d
}

// row is an experiment as the API lists it.
type row struct {
	ID         int64  `json:"id"`
	Favorite   bool   `json:"favorite"`
	ProposalID string `json:"proposal_id"`
	Subject    string `json:"subject"`
	Body       string `json:"body"`
	BeamLine   string `json:"beam_line"`
}

type expPage struct {
	Count    int     `json:"count"`
	Next     *string `json:"next"`
	Previous *string `json:"previous"`
	PageSize int     `json:"page_size"`
	Results  []row   `json:"results"`
	Stale    bool    `json:"stale"`
}

func getPage(t *testing.T, b *browser, query string) (expPage, answer) {
	t.Helper()
	a := b.do(http.MethodGet, "users/dana/experiments/"+query, nil)
	wantStatus(t, a, http.StatusOK)
	var p expPage
	a.json(t, &p)
	return p, a
}

// allRows pages through everything with the default ordering.
func allRows(t *testing.T, b *browser) []row {
	t.Helper()
	var out []row
	for n := 1; ; n++ {
		p, _ := getPage(t, b, "?page="+strconv.Itoa(n))
		out = append(out, p.Results...)
		if p.Next == nil {
			return out
		}
	}
}

var fields = map[string]func(row) string{
	"proposal_id": func(r row) string { return r.ProposalID },
	"subject":     func(r row) string { return r.Subject },
	"body":        func(r row) string { return r.Body },
	"beam_line":   func(r row) string { return r.BeamLine },
	// The star column: not favourite first.
	"calipsouserexperiment__favorite": func(r row) string {
		if r.Favorite {
			return "1"
		}
		return "0"
	},
}

// expect computes what a query must answer from all rows: case-insensitive search in
// the four fields, favourite filter, ordering with the link id as tie-break.
func expect(all []row, search, ordering string, fav *bool) []row {
	var out []row
	// Django REST framework's SearchFilter: terms split on spaces and commas, each
	// found in one of the fields.
	terms := strings.Fields(strings.ReplaceAll(strings.ToLower(search), ",", " "))
	for _, r := range all {
		if fav != nil && r.Favorite != *fav {
			continue
		}
		if !allTermsIn(terms, r.Subject, r.Body, r.ProposalID, r.BeamLine) {
			continue
		}
		out = append(out, r)
	}
	if _, known := fields[strings.TrimPrefix(ordering, "-")]; !known {
		ordering = "proposal_id" // unknown orderings are ignored, as by the original
	}
	desc := strings.HasPrefix(ordering, "-")
	key := fields[strings.TrimPrefix(ordering, "-")]
	slices.SortFunc(out, func(a, b row) int {
		c := cmp.Or(strings.Compare(key(a), key(b)), cmp.Compare(a.ID, b.ID))
		if desc {
			return -c
		}
		return c
	})
	return out
}

func allTermsIn(terms []string, fields ...string) bool {
	for _, t := range terms {
		if !slices.ContainsFunc(fields, func(f string) bool { return strings.Contains(strings.ToLower(f), t) }) {
			return false
		}
	}
	return true
}

func TestExperimentsQueries(t *testing.T) {
	const total = 40
	h := newHarness(t, withOffice(officeData(total, "")))
	dana := h.browser()
	dana.login("dana", "dana-pw")
	all := allRows(t, dana)
	if len(all) != total {
		t.Fatalf("dana sees %d experiments, want %d", len(all), total)
	}
	// Some favourites, set through the API.
	for i, r := range all {
		if i%3 == 0 {
			wantStatus(t, dana.do(http.MethodPut, fmt.Sprintf("favorite/%d/", r.ID), map[string]any{"favorite": true}), http.StatusOK)
			all[i].Favorite = true
		}
	}
	yes, no := true, false
	type tc struct {
		search, ordering string
		fav              *bool
		page             int
	}
	cases := []tc{
		{"", "", nil, 1}, {"", "", nil, 2}, {"", "", nil, 6},
		{"", "proposal_id", nil, 1}, {"", "-proposal_id", nil, 1}, {"", "-proposal_id", nil, 3},
		{"", "subject", nil, 1}, {"", "-subject", nil, 2}, {"", "body", nil, 1}, {"", "-body", nil, 4},
		{"", "beam_line", nil, 1}, {"", "beam_line", nil, 2}, {"", "-beam_line", nil, 5},
		{"crystal", "", nil, 1}, {"CRYSTAL", "", nil, 1}, {"films", "-subject", nil, 1},
		{"p00", "", nil, 2}, {"P0037", "", nil, 1}, {"bl02", "", nil, 1}, {"BL0", "-beam_line", nil, 3},
		{"body y", "", nil, 1}, {"über", "", nil, 1}, {"ÜBER", "", nil, 1}, {"σοφία", "", nil, 1},
		{"STRASSE", "", nil, 1}, {"straße", "subject", nil, 1}, {"日本", "", nil, 1},
		{"100%", "", nil, 1}, {"pure_sample", "", nil, 1}, {"_", "", nil, 1}, {"no such thing", "", nil, 1},
		{"eve", "", nil, 1}, {"'", "", nil, 1},
		{"", "", &yes, 1}, {"", "", &yes, 2}, {"", "-subject", &no, 1}, {"crystal", "", &yes, 1},
		{"", "", nil, 99}, {"crystal", "", nil, 5},
		{"", "calipsouserexperiment__favorite", nil, 1}, {"", "-calipsouserexperiment__favorite", nil, 1},
		{"", "-calipsouserexperiment__favorite", nil, 6}, {"crystal", "calipsouserexperiment__favorite", &yes, 1},
		{"crystal,films", "", nil, 1}, {"crystal  p00", "", nil, 1}, {"y body", "", nil, 1}, {" , ", "", nil, 1},
		{"", "no_such_field", nil, 1}, {"", "-id; DROP TABLE users", nil, 2}, {"", "--subject", nil, 1},
	}
	for _, c := range cases {
		name := fmt.Sprintf("search=%q ordering=%q fav=%v page=%d", c.search, c.ordering, deref(c.fav), c.page)
		t.Run(name, func(t *testing.T) {
			q := url.Values{}
			if c.search != "" {
				q.Set("search", c.search)
			}
			if c.ordering != "" {
				q.Set("ordering", c.ordering)
			}
			if c.fav != nil {
				q.Set("calipsouserexperiment__favorite", strconv.FormatBool(*c.fav))
			}
			q.Set("page", strconv.Itoa(c.page))
			got, _ := getPage(t, dana, "?"+q.Encode())
			want := expect(all, c.search, c.ordering, c.fav)
			if got.Count != len(want) || got.PageSize != 7 {
				t.Fatalf("count %d page_size %d, want %d and 7", got.Count, got.PageSize, len(want))
			}
			from, to := min((c.page-1)*7, len(want)), min(c.page*7, len(want))
			if gotIDs, wantIDs := ids(got.Results), ids(want[from:to]); !slices.Equal(gotIDs, wantIDs) {
				t.Fatalf("page %d: got %v, want %v", c.page, gotIDs, wantIDs)
			}
			last := max((len(want)+6)/7, 1)
			checkLink(t, "next", got.Next, c.page < last, c.page+1)
			checkLink(t, "previous", got.Previous, c.page > 1, min(c.page-1, last))
		})
	}
}

func deref(b *bool) string {
	if b == nil {
		return "-"
	}
	return strconv.FormatBool(*b)
}

func ids(rs []row) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ProposalID
	}
	return out
}

// checkLink checks a next/previous link: present when want, pointing at page n (page
// 1 is written without ?page, as DRF does).
func checkLink(t *testing.T, name string, link *string, want bool, n int) {
	t.Helper()
	if (link != nil) != want {
		t.Fatalf("%s %v, want present=%v", name, link, want)
	}
	if link == nil {
		return
	}
	u, err := url.Parse(*link)
	if err != nil {
		t.Fatalf("%s %q: %v", name, *link, err)
	}
	p := u.Query().Get("page")
	if (n == 1 && p != "") || (n > 1 && p != strconv.Itoa(n)) {
		t.Fatalf("%s %s: want page %d", name, *link, n)
	}
}

// TestExperimentLinksBehindProxy: next/previous use the proxy's scheme and host.
func TestExperimentLinksBehindProxy(t *testing.T) {
	h := newHarness(t, withOffice(officeData(20, "")), trustLoopback())
	dana := h.browser()
	dana.login("dana", "dana-pw")
	dana.header.Set("X-Forwarded-Proto", "https")
	dana.header.Set("X-Forwarded-Host", "calipso.example.org")
	p, _ := getPage(t, dana, "?page=2&ordering=-subject&search=bl")
	for name, link := range map[string]*string{"next": p.Next, "previous": p.Previous} {
		if link == nil || !strings.HasPrefix(*link, "https://calipso.example.org"+basePath+"users/dana/experiments/?") {
			t.Fatalf("%s link %v", name, link)
		}
		u, _ := url.Parse(*link)
		if u.Query().Get("ordering") != "-subject" || u.Query().Get("search") != "bl" {
			t.Fatalf("%s link %s lost the query", name, *link)
		}
	}
}

// TestFavouritesSurviveRefetch: the office's data changes; a fresh fetch updates the
// experiments and keeps the user's favourites.
func TestFavouritesSurviveRefetch(t *testing.T) {
	h := newHarness(t, withOffice(officeData(5, "")), withSettings(func(s *settings.Settings) {
		s.UserOffice.RefreshInterval = settings.Duration{Duration: time.Nanosecond}
	}))
	dana := h.browser()
	dana.login("dana", "dana-pw")
	before := allRows(t, dana)
	fav := before[2]
	wantStatus(t, dana.do(http.MethodPut, fmt.Sprintf("favorite/%d/", fav.ID), map[string]any{"favorite": "1"}), http.StatusOK)

	h.setOfficeData(officeData(6, " (revised)"))
	after := allRows(t, dana)
	if len(after) != 6 {
		t.Fatalf("after the change: %d experiments, want 6", len(after))
	}
	for _, r := range after {
		if !strings.HasSuffix(r.Subject, " (revised)") {
			t.Errorf("%s: subject %q not refreshed", r.ProposalID, r.Subject)
		}
		if want := r.ProposalID == fav.ProposalID; r.Favorite != want {
			t.Errorf("%s: favorite %v, want %v", r.ProposalID, r.Favorite, want)
		}
	}
}

// TestOfficeDownOrSlow: with a local copy the API serves it marked stale; without,
// 503 with a message; either way within the office timeout and a margin.
func TestOfficeDownOrSlow(t *testing.T) {
	const timeout = 300 * time.Millisecond
	const margin = 1500 * time.Millisecond
	tiny := withSettings(func(s *settings.Settings) {
		s.UserOffice.RefreshInterval = settings.Duration{Duration: time.Nanosecond}
		s.UserOffice.Timeout = settings.Duration{Duration: timeout}
	})
	rows := []struct {
		name      string
		localCopy bool
		down      bool // else slow
	}{
		{"slow, local copy", true, false},
		{"slow, no local copy", false, false},
		{"down, local copy", true, true},
		{"down, no local copy", false, true},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			h := newHarness(t, withOffice(officeData(3, "")), tiny)
			dana := h.browser()
			dana.login("dana", "dana-pw")
			if row.localCopy {
				getPage(t, dana, "")
			}
			if row.down {
				h.office.Close()
			} else {
				h.officeOp = append(h.officeOp, useroffice.WithDelay(10*timeout))
				h.setOfficeData(officeData(3, ""))
			}
			start := time.Now()
			a := dana.do(http.MethodGet, "users/dana/experiments/", nil)
			if took := time.Since(start); took > timeout+margin {
				t.Errorf("took %v, want at most %v", took, timeout+margin)
			}
			if !row.localCopy {
				msg := wantError(t, a, http.StatusServiceUnavailable)
				if !strings.Contains(msg, "user office") {
					t.Errorf("message %q does not name the user office", msg)
				}
				return
			}
			wantStatus(t, a, http.StatusOK)
			var p expPage
			a.json(t, &p)
			if !p.Stale || p.Count != 3 || !strings.HasPrefix(a.header.Get("Warning"), "110 ") {
				t.Fatalf("stale %v count %d Warning %q; want true, 3, 110", p.Stale, p.Count, a.header.Get("Warning"))
			}
		})
	}
}

// TestExperimentsPageFollowsEveryWriter: pages are cached, yet a change made by
// anyone (this server, the CLI or an import in another process, which share only the
// database) shows on the very next request once sessions are read afresh (cache_ttl
// 0 here; TestSessionCache covers the session cache).
func TestExperimentsPageFollowsEveryWriter(t *testing.T) {
	h := newHarness(t, withSettings(func(s *settings.Settings) {
		s.UserOffice.DynamicExperiments = false
		s.Server.CacheTTL = settings.Duration{}
	}))
	ctx := context.Background()
	alice := h.loggedIn("alice")
	put := func(id, subject string) {
		t.Helper()
		e := calipso.Experiment{ProposalID: id, Subject: subject, Sessions: []calipso.Session{{SessionNumber: id + "-1", DataSetPath: "[]"}}}
		if _, err := h.db.PutExperiment(ctx, "cli", e); err != nil {
			t.Fatal(err)
		}
	}
	page := func(query string) expPage {
		t.Helper()
		a := alice.do(http.MethodGet, "users/alice/experiments/"+query, nil)
		wantStatus(t, a, http.StatusOK)
		var p expPage
		a.json(t, &p)
		return p
	}
	subjects := func(p expPage) string {
		var out []string
		for _, r := range p.Results {
			out = append(out, r.Subject)
		}
		return strings.Join(out, ",")
	}
	put("C1", "first")
	if err := h.db.Link(ctx, "cli", "alice", "C1"); err != nil {
		t.Fatal(err)
	}
	favourites := "?calipsouserexperiment__favorite=true"
	steps := []struct {
		name   string
		change func(t *testing.T)
		query  string
		want   string // subjects on the page, in order
	}{
		{"linked", func(*testing.T) {}, "", "first"},
		{"subject edited", func(*testing.T) { put("C1", "edited") }, "", "edited"},
		{"another experiment linked", func(t *testing.T) {
			put("C2", "second")
			if err := h.db.Link(ctx, "cli", "alice", "C2"); err != nil {
				t.Fatal(err)
			}
		}, "", "edited,second"},
		{"favourite set through the API", func(t *testing.T) {
			id := page("").Results[1].ID
			wantStatus(t, alice.do(http.MethodPut, fmt.Sprintf("favorite/%d/", id), map[string]any{"favorite": true}), http.StatusOK)
		}, favourites, "second"},
		{"favourite unset by another process", func(t *testing.T) {
			id := page("").Results[1].ID
			u, _ := h.db.User(ctx, "alice")
			if err := h.db.SetFavorite(ctx, u.ID, id, false); err != nil {
				t.Fatal(err)
			}
		}, favourites, ""},
		{"unlinked", func(t *testing.T) {
			if err := h.db.Unlink(ctx, "cli", "alice", "C1"); err != nil {
				t.Fatal(err)
			}
		}, "", "second"},
		{"experiment removed", func(t *testing.T) {
			if err := h.db.RemoveExperiment(ctx, "cli", "C2"); err != nil {
				t.Fatal(err)
			}
		}, "", ""},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			page(st.query) // cache the page as it was
			st.change(t)
			if got := subjects(page(st.query)); got != st.want {
				t.Fatalf("page shows %q, want %q", got, st.want)
			}
		})
	}
}

// TestSessionCache: with sessions kept in memory, what this server changes shows at
// once (a favourite, rights, a logout), and what another process changes in the
// database shows once cache_ttl has passed.
func TestSessionCache(t *testing.T) {
	const ttl = 200 * time.Millisecond
	h := newHarness(t, withSettings(func(s *settings.Settings) {
		s.UserOffice.DynamicExperiments = false
		s.Server.CacheTTL = settings.Duration{Duration: ttl}
	}))
	ctx := context.Background()
	alice, carol := h.loggedIn("alice"), h.loggedIn("carol")
	if _, err := h.db.PutExperiment(ctx, "cli", calipso.Experiment{ProposalID: "S1", Subject: "cached",
		Sessions: []calipso.Session{{SessionNumber: "S1-1", DataSetPath: "[]"}}}); err != nil {
		t.Fatal(err)
	}
	if err := h.db.Link(ctx, "cli", "alice", "S1"); err != nil {
		t.Fatal(err)
	}
	isAdmin := func(b *browser, who string) bool {
		t.Helper()
		a := b.do(http.MethodGet, "users/"+who+"/", nil)
		wantStatus(t, a, http.StatusOK)
		user, _ := a.object(t)["user"].(map[string]any)
		return user["is_superuser"] == true
	}
	favourites := func() int {
		t.Helper()
		a := alice.do(http.MethodGet, "users/alice/experiments/?calipsouserexperiment__favorite=true", nil)
		wantStatus(t, a, http.StatusOK)
		var p expPage
		a.json(t, &p)
		return p.Count
	}

	t.Run("a favourite shows at once", func(t *testing.T) {
		favourites() // page and session cached
		var p expPage
		all := alice.do(http.MethodGet, "users/alice/experiments/", nil)
		all.json(t, &p)
		wantStatus(t, alice.do(http.MethodPut, fmt.Sprintf("favorite/%d/", p.Results[0].ID), map[string]any{"favorite": true}), http.StatusOK)
		if n := favourites(); n != 1 {
			t.Fatalf("%d favourites right after setting one, want 1", n)
		}
	})
	t.Run("rights granted through the API apply at once", func(t *testing.T) {
		isAdmin(alice, "alice") // cached as a user
		wantStatus(t, carol.do(http.MethodPost, "users/alice/admin", map[string]bool{"is_superuser": true}), http.StatusOK)
		if !isAdmin(alice, "alice") {
			t.Fatal("alice's session still carries her old rights")
		}
		wantStatus(t, alice.do(http.MethodGet, "users/", nil), http.StatusOK)
		wantStatus(t, carol.do(http.MethodPost, "users/alice/admin", map[string]bool{"is_superuser": false}), http.StatusOK)
		wantStatus(t, alice.do(http.MethodGet, "users/", nil), http.StatusForbidden)
	})
	t.Run("another process's change shows within cache_ttl", func(t *testing.T) {
		isAdmin(alice, "alice")
		if err := h.db.SetAdmin(ctx, "cli", "alice", true); err != nil {
			t.Fatal(err)
		}
		time.Sleep(ttl + 50*time.Millisecond)
		if !isAdmin(alice, "alice") {
			t.Fatalf("the CLI's grant is not seen after %v", ttl)
		}
	})
	t.Run("image changes through the API show at once", func(t *testing.T) {
		names := func(b *browser) []string {
			t.Helper()
			a := b.do(http.MethodGet, "images/", nil)
			wantStatus(t, a, http.StatusOK)
			var list []map[string]any
			a.json(t, &list)
			var out []string
			for _, im := range list {
				out = append(out, im["public_name"].(string))
			}
			return out
		}
		before := names(alice) // cached
		image := map[string]any{"image": "calipso/x:1", "protocol": "vnc", "cpu": 1, "memory": "1G", "hdd": "1G", "resource_type": "docker"}
		wantStatus(t, carol.do(http.MethodPost, "images/cached_extra/", image), http.StatusCreated)
		if got := names(alice); len(got) != len(before)+1 || !slices.Contains(got, "cached_extra") {
			t.Fatalf("images after a POST: %v, want %v and cached_extra", got, before)
		}
		wantStatus(t, carol.do(http.MethodDelete, "images/cached_extra/", nil), http.StatusNoContent)
		if got := names(carol); slices.Contains(got, "cached_extra") {
			t.Fatalf("images after a DELETE: %v", got)
		}
	})
	t.Run("logout ends the session at once", func(t *testing.T) {
		copycat := h.browser()
		u := mustURL(t, h.srv.URL+basePath)
		copycat.c.Jar.SetCookies(u, alice.c.Jar.Cookies(u))
		wantStatus(t, copycat.do(http.MethodGet, "authenticated/", nil), http.StatusOK) // cached
		wantStatus(t, alice.do(http.MethodGet, "logout/", nil), http.StatusOK)
		wantStatus(t, copycat.do(http.MethodGet, "authenticated/", nil), http.StatusUnauthorized)
	})
}
