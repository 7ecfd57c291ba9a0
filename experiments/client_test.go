package experiments_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/experiments"
	"github.com/calipsoplus/calipso/experiments/useroffice"
)

var officeCreds = useroffice.BasicCredentials{Username: "calipso", Password: "office-Basic-s3cret"}

// office is a reference user office on a real HTTP server, counting requests per path.
type office struct {
	srv *httptest.Server
	mu  sync.Mutex
	hit map[string]int
}

func (o *office) hits(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.hit[path]
}

// startOffice serves h (wrapping the reference office or not) and counts its requests.
func startOffice(t testing.TB, h http.Handler) *office {
	t.Helper()
	o := &office{hit: map[string]int{}}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.hit[r.URL.Path]++
		o.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(o.srv.Close)
	return o
}

func demoOffice(t testing.TB, opts ...useroffice.Option) *office {
	t.Helper()
	data, err := useroffice.Demo()
	if err != nil {
		t.Fatal(err)
	}
	return startOffice(t, useroffice.NewServer(data, officeCreds, opts...))
}

func newClient(t testing.TB, o *office, tune func(*experiments.ClientConfig)) *experiments.Client {
	t.Helper()
	cfg := useroffice.ClientConfig(o.srv.URL, officeCreds)
	cfg.HTTPClient = o.srv.Client()
	cfg.Timeout = 5 * time.Second
	cfg.RetryBackoff = time.Millisecond
	cfg.Logger = slog.New(slog.DiscardHandler)
	if tune != nil {
		tune(&cfg)
	}
	c, err := experiments.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// assertNoSecrets fails when an error message carries a password.
func assertNoSecrets(t *testing.T, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range append(secrets, officeCreds.Password) {
		if s != "" && strings.Contains(err.Error(), s) {
			t.Errorf("error %q reveals a secret", err)
		}
	}
}

func TestLogin(t *testing.T) {
	o := demoOffice(t)
	c := newClient(t, o, nil)
	tests := []struct {
		name, user, password string
		want                 error
		sent                 bool
	}{
		{"ok", "alice", "alice-demo", nil, true},
		{"ok other user", "carol", "carol-demo", nil, true},
		{"wrong password", "alice", "bob-demo", experiments.ErrBadCredentials, true},
		{"case matters", "alice", "Alice-demo", experiments.ErrBadCredentials, true},
		{"unknown user", "zed", "zed-demo", experiments.ErrBadCredentials, true},
		{"missing password", "alice", "", experiments.ErrBadRequest, false},
		{"missing username", "", "alice-demo", experiments.ErrBadRequest, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := o.hits(useroffice.LoginPath)
			err := c.Login(t.Context(), tt.user, tt.password)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if sent := o.hits(useroffice.LoginPath) > before; sent != tt.sent {
				t.Errorf("request sent = %v, want %v", sent, tt.sent)
			}
			if err != nil && !strings.Contains(err.Error(), "user office login") {
				t.Errorf("error %q does not name the call", err)
			}
			assertNoSecrets(t, err, tt.password)
		})
	}
}

// stub answers every request with status and body: for what the reference office never
// sends (400 to a well-formed login, malformed answers).
func stub(status int, body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	})
}

func TestStatusMapping(t *testing.T) {
	tests := []struct {
		status int
		body   string
		call   string
		want   error
	}{
		{400, `{}`, "login", experiments.ErrBadRequest},
		{401, `{}`, "login", experiments.ErrBadCredentials},
		{500, `{}`, "login", experiments.ErrUnavailable},
		{502, `<html>`, "login", experiments.ErrUnavailable},
		{302, ``, "login", experiments.ErrBadAnswer},
		{400, `{}`, "umbrella", experiments.ErrBadRequest},
		{404, `{}`, "umbrella", experiments.ErrNotFound},
		{200, `{}`, "umbrella", experiments.ErrBadAnswer},
		{200, `{"username": 5}`, "umbrella", experiments.ErrBadAnswer},
		{200, `{"username": ""}`, "umbrella", experiments.ErrBadAnswer},
		{200, `not json`, "umbrella", experiments.ErrBadAnswer},
		{503, `{}`, "umbrella", experiments.ErrUnavailable},
		{401, `{}`, "authorised", experiments.ErrForbidden},
		{200, `{"result": "yes"}`, "authorised", experiments.ErrBadAnswer},
		{200, `{}`, "authorised", experiments.ErrBadAnswer},
		{418, `{}`, "authorised", experiments.ErrBadAnswer},
		{400, `{}`, "experiments", experiments.ErrBadRequest},
		{200, `[]`, "experiments", experiments.ErrBadAnswer},
		{200, `{"count": "3"}`, "experiments", experiments.ErrBadAnswer},
		{200, `{"results": [{"uid": "root"}]}`, "experiments", experiments.ErrInvalidField},
		{200, `{"results": [{"sessions": [{"start_date": 5}]}]}`, "experiments", experiments.ErrInvalidField},
		{504, `{}`, "experiments", experiments.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %d %s", tt.call, tt.status, tt.body), func(t *testing.T) {
			c := newClient(t, startOffice(t, stub(tt.status, tt.body)), nil)
			var err error
			switch tt.call {
			case "login":
				err = c.Login(t.Context(), "alice", "alice-demo")
			case "umbrella":
				_, err = c.UmbrellaUser(t.Context(), "h")
			case "authorised":
				_, err = c.IsAuthorized(t.Context(), "alice")
			case "experiments":
				_, err = c.Experiments(t.Context(), "alice", experiments.Query{})
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			assertNoSecrets(t, err, "alice-demo")
		})
	}
}

func TestWronglyTypedFieldIsNamed(t *testing.T) {
	body := `{"count": 1, "results": [{"proposal_id": "p", "sessions": [{}, {"end_date": {"year": 2019, "month": "May", "day": 1}}]}]}`
	c := newClient(t, startOffice(t, stub(200, body)), nil)
	_, err := c.Experiments(t.Context(), "bob", experiments.Query{})
	var fe *experiments.FieldError
	if !errors.As(err, &fe) || fe.Field != "results[0].sessions[1].end_date.month" {
		t.Fatalf("err = %v, want a FieldError naming results[0].sessions[1].end_date.month", err)
	}
	if !errors.Is(err, experiments.ErrBadAnswer) || !strings.Contains(err.Error(), `user office experiments of "bob"`) {
		t.Errorf("err = %v, want ErrBadAnswer naming the call", err)
	}
}

func TestUmbrellaUser(t *testing.T) {
	c := newClient(t, demoOffice(t), nil)
	tests := []struct {
		hash, want string
		err        error
	}{
		{"eaa-alice-0a1b2c3d", "alice", nil},
		{"eaa-carol-8c9d0e1f", "carol", nil},
		{"eaa-alice-0a1b2c3", "", experiments.ErrNotFound},
		{"", "", experiments.ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.hash, func(t *testing.T) {
			got, err := c.UmbrellaUser(t.Context(), tt.hash)
			if !errors.Is(err, tt.err) || (tt.err == nil && err != nil) || got != tt.want {
				t.Fatalf("got %q, %v; want %q, %v", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestIsAuthorized(t *testing.T) {
	o := demoOffice(t)
	tests := []struct {
		name, login string
		creds       useroffice.BasicCredentials
		want        bool
		err         error
	}{
		{"authorised", "carol", officeCreds, true, nil},
		{"not authorised", "alice", officeCreds, false, nil},
		{"unknown", "zed", officeCreds, false, experiments.ErrNotFound},
		{"no credentials", "carol", useroffice.BasicCredentials{}, false, experiments.ErrForbidden},
		{"wrong password", "carol", useroffice.BasicCredentials{Username: "calipso", Password: "wrong-pass"}, false, experiments.ErrForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, o, func(cfg *experiments.ClientConfig) {
				cfg.Username, cfg.Password = tt.creds.Username, tt.creds.Password
			})
			got, err := c.IsAuthorized(t.Context(), tt.login)
			if !errors.Is(err, tt.err) || (tt.err == nil && err != nil) || got != tt.want {
				t.Fatalf("got %v, %v; want %v, %v", got, err, tt.want, tt.err)
			}
			assertNoSecrets(t, err, tt.creds.Password)
		})
	}
}

// pagingData: one user ("ana") with experiments whose fields tie in various ways, and
// "many" with more experiments than the largest page.
func pagingData(t testing.TB) *useroffice.Data {
	t.Helper()
	data := &useroffice.Data{Accounts: []useroffice.Account{
		{Username: "ana", Password: useroffice.HashPassword("ana-pw", 1)},
		{Username: "many", Password: useroffice.HashPassword("many-pw", 1)},
		{Username: "jo sé?&ü", Password: useroffice.HashPassword("x", 1)},
		{Username: "bob", Password: useroffice.HashPassword("x", 1)},
	}}
	subjects := []string{"Lysozyme crystals", "Ürün analizi", "ürün ANALİZİ 2", "Magnetismo en películas",
		"Zeolites", "lysozyme again", "Ωmega phases", "Tomography", "XAS of copper", "Zeolites"}
	beamlines := []string{"BL13-XALOC", "BL22-CLAESS", "BL29-BOREAS"}
	for i := range 23 {
		data.Experiments = append(data.Experiments, useroffice.Experiment{
			// Proposal ids out of order in the file, so that sorting is visible.
			ProposalID:   fmt.Sprintf("20%02d%03d", 19+(i*7)%5, (i*13)%23),
			Subject:      subjects[i%len(subjects)],
			Body:         fmt.Sprintf("Body %d: sample %c, café %d", i, 'A'+i%4, i%3),
			BeamLine:     beamlines[i%len(beamlines)],
			Participants: []string{"ana"},
			Sessions:     []useroffice.Session{{SessionNumber: fmt.Sprintf("s-%d", i), DataSetPath: "[]"}},
		})
	}
	for i := range 230 {
		data.Experiments = append(data.Experiments, useroffice.Experiment{
			ProposalID: fmt.Sprintf("M%04d", 229-i), Subject: "bulk", Participants: []string{"many"},
		})
	}
	data.Experiments = append(data.Experiments, useroffice.Experiment{
		ProposalID: "ESC1", Subject: "escaped", Participants: []string{"jo sé?&ü"},
	}, useroffice.Experiment{
		ProposalID: "BOB1", Subject: "bob's own", Participants: []string{"bob"},
	})
	if err := data.Validate(); err != nil {
		t.Fatal(err)
	}
	return data
}

// expectPage computes, independently of the office, what a query should answer.
func expectPage(data *useroffice.Data, user string, q experiments.Query) (count int, ids []string, hasNext, hasPrev bool) {
	var list []useroffice.Experiment
	needle := strings.ToLower(q.Search)
	for _, e := range data.Experiments {
		if !slices.Contains(e.Participants, user) {
			continue
		}
		hay := strings.ToLower(e.Subject + "\x00" + e.Body + "\x00" + e.BeamLine + "\x00" + e.ProposalID)
		if strings.Contains(hay, needle) {
			list = append(list, e)
		}
	}
	field := strings.TrimPrefix(q.Ordering, "-")
	desc := strings.HasPrefix(q.Ordering, "-")
	key := func(e useroffice.Experiment) string {
		switch field {
		case "subject":
			return e.Subject
		case "body":
			return e.Body
		case "beam_line":
			return e.BeamLine
		}
		return e.ProposalID
	}
	sort.Slice(list, func(i, j int) bool {
		ki, kj := key(list[i]), key(list[j])
		if ki != kj {
			return (ki < kj) != desc
		}
		return list[i].ProposalID < list[j].ProposalID
	})
	size := q.PageSize
	if size == 0 {
		size = useroffice.DefaultPageSize
	}
	size = min(size, useroffice.MaxPageSize)
	page := max(q.Page, 1)
	for i := (page - 1) * size; i < len(list) && i < page*size; i++ {
		ids = append(ids, list[i].ProposalID)
	}
	return len(list), ids, page*size < len(list), page > 1
}

func TestExperimentsPaging(t *testing.T) {
	data := pagingData(t)
	o := startOffice(t, useroffice.NewServer(data, officeCreds))
	c := newClient(t, o, nil)
	queries := []experiments.Query{
		{},
		{Page: 1},
		{Page: 2},
		{Page: 3},
		{Page: 4},
		{Page: 5},
		{Page: 40},
		{PageSize: 1},
		{PageSize: 1, Page: 23},
		{PageSize: 1, Page: 24},
		{PageSize: 5, Page: 5},
		{PageSize: 23},
		{PageSize: 22, Page: 2},
		{PageSize: 500},
		{Ordering: "proposal_id"},
		{Ordering: "-proposal_id"},
		{Ordering: "subject"},
		{Ordering: "-subject"},
		{Ordering: "subject", Page: 2},
		{Ordering: "-subject", Page: 3, PageSize: 4},
		{Ordering: "body"},
		{Ordering: "-body", PageSize: 10, Page: 2},
		{Ordering: "beam_line"},
		{Ordering: "-beam_line"},
		{Ordering: "beam_line", PageSize: 6, Page: 3},
		{Search: "lysozyme"},
		{Search: "LYSOZYME", Ordering: "-proposal_id"},
		{Search: "ürün"},
		{Search: "ÜRÜN", Ordering: "subject"},
		{Search: "Ωmega"},
		{Search: "café 2"},
		{Search: "claess", Ordering: "-subject", PageSize: 3},
		{Search: "claess", Page: 2, PageSize: 3},
		{Search: "2021"},
		{Search: "xaloc", Ordering: "body"},
		{Search: "no such thing"},
		{Search: "no such thing", Page: 3},
		{Search: "zeolites", Ordering: "subject"},
		{Search: "sample b", Ordering: "-beam_line", PageSize: 2, Page: 2},
	}
	for _, q := range queries {
		t.Run(fmt.Sprintf("%+v", q), func(t *testing.T) {
			page, err := c.Experiments(t.Context(), "ana", q)
			if err != nil {
				t.Fatal(err)
			}
			count, want, hasNext, hasPrev := expectPage(data, "ana", q)
			var got []string
			for _, e := range page.Results {
				got = append(got, e.ProposalID)
			}
			if page.Count != count || !slices.Equal(got, want) {
				t.Fatalf("got count %d %v\nwant count %d %v", page.Count, got, count, want)
			}
			if (page.Next != "") != hasNext || (page.Previous != "") != hasPrev {
				t.Fatalf("next %q previous %q; want next %v previous %v", page.Next, page.Previous, hasNext, hasPrev)
			}
			if hasNext {
				u, err := url.Parse(page.Next)
				if err != nil || !u.IsAbs() || u.Query().Get("page") != strconv.Itoa(max(q.Page, 1)+1) ||
					u.Query().Get("search") != q.Search || u.Query().Get("ordering") != q.Ordering {
					t.Errorf("next %q is not the absolute URL of the next page of this query", page.Next)
				}
			}
		})
	}
}

func TestAllExperiments(t *testing.T) {
	data := pagingData(t)
	o := startOffice(t, useroffice.NewServer(data, officeCreds))
	c := newClient(t, o, nil)
	path := strings.ReplaceAll(useroffice.ExperimentsPath, "$USERNAME", "many")
	all, err := c.AllExperiments(t.Context(), "many")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 230 || all[0].ProposalID != "M0000" || all[229].ProposalID != "M0229" {
		t.Fatalf("got %d experiments, first/last %v", len(all), all[0].ProposalID)
	}
	if n := o.hits(path); n != 3 {
		t.Errorf("%d requests for 230 experiments at %d a page, want 3", n, useroffice.MaxPageSize)
	}
	// An escaped username reaches its own account, not another path.
	esc, err := c.AllExperiments(t.Context(), "jo sé?&ü")
	if err != nil || len(esc) != 1 || esc[0].ProposalID != "ESC1" {
		t.Fatalf("escaped username: %v, %v", esc, err)
	}
	for _, login := range []string{"ana/../bob", "../bob", "bob/", "bob?x=1", "bob#"} {
		got, err := c.AllExperiments(t.Context(), login)
		if !errors.Is(err, experiments.ErrNotFound) && !errors.Is(err, experiments.ErrBadRequest) {
			t.Errorf("login %q reached %v (err %v)", login, got, err)
		}
	}
}

func TestAllExperimentsStopsOnEndlessOffice(t *testing.T) {
	// An office whose "next" never ends and that repeats itself.
	o := startOffice(t, stub(200, `{"count": 100000, "next": "http://elsewhere/", "results": [{"proposal_id": "p"}]}`))
	c := newClient(t, o, nil)
	_, err := c.AllExperiments(t.Context(), "bob")
	if !errors.Is(err, experiments.ErrBadAnswer) {
		t.Fatalf("err = %v, want ErrBadAnswer", err)
	}
	if n := o.hits("/api/users/bob/experiments/"); n != experiments.MaxPages {
		t.Errorf("%d requests, want the cap %d", n, experiments.MaxPages)
	}
}

func TestDatesOverHTTP(t *testing.T) {
	c := newClient(t, demoOffice(t), nil)
	all, err := c.AllExperiments(t.Context(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	sessions := map[string]calipso.Session{}
	for _, e := range all {
		for _, s := range e.Sessions {
			sessions[s.SessionNumber] = s
		}
	}
	tests := []struct {
		session    string
		start, end string // RFC 3339, "" for missing
	}{
		{"2019001-01", "2019-01-01T00:00:00Z", "2019-01-03T08:00:00Z"}, // strings
		{"2019001-02", "2019-03-04T00:00:00Z", "2019-03-06T00:00:00Z"}, // objects
		{"2019002-01", "2019-05-10T00:00:00Z", "2019-05-12T00:00:00Z"}, // date only
		{"2019003-01", "2019-06-01T00:00:00Z", ""},                     // end missing
		{"2019003-02", "", ""}, // both missing
		{"2020001-01", "2020-02-02T08:30:00Z", "2020-02-04T08:30:00Z"}, // with offset
	}
	for _, tt := range tests {
		t.Run(tt.session, func(t *testing.T) {
			s, ok := sessions[tt.session]
			if !ok {
				t.Fatalf("no session %s", tt.session)
			}
			for _, d := range []struct {
				got  time.Time
				want string
			}{{s.StartDate, tt.start}, {s.EndDate, tt.end}} {
				got := ""
				if !d.got.IsZero() {
					got = d.got.UTC().Format(time.RFC3339)
				}
				if got != d.want {
					t.Errorf("got %q, want %q", got, d.want)
				}
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	// The office waits until the caller gives up.
	o := demoOffice(t, useroffice.WithDelay(time.Hour))
	const timeout = 200 * time.Millisecond
	c := newClient(t, o, func(cfg *experiments.ClientConfig) { cfg.Timeout = timeout })
	calls := map[string]func(ctx context.Context) error{
		"login": func(ctx context.Context) error { return c.Login(ctx, "alice", "alice-demo") },
		"experiments": func(ctx context.Context) error {
			_, err := c.Experiments(ctx, "alice", experiments.Query{})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			err := call(t.Context())
			if !errors.Is(err, experiments.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want ErrUnavailable from a deadline", err)
			}
			// A generous bound: proves there is no hang, not a performance figure.
			if elapsed := time.Since(start); elapsed > 5*timeout {
				t.Errorf("returned after %v", elapsed)
			}
		})
	}
}

// flaky answers 503 to the first n requests, then passes them to next.
func flaky(n int, next http.Handler) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fail := n > 0
		n--
		mu.Unlock()
		if fail {
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func TestRetries(t *testing.T) {
	data, err := useroffice.Demo()
	if err != nil {
		t.Fatal(err)
	}
	office := useroffice.NewServer(data, officeCreds)
	experimentsPath := "/api/users/alice/experiments/"
	tests := []struct {
		name      string
		failures  int
		retries   int
		call      string
		path      string
		wantErr   error
		wantCalls int
	}{
		{"get recovers", 2, 2, "experiments", experimentsPath, nil, 3},
		{"get gives up", 5, 2, "experiments", experimentsPath, experiments.ErrUnavailable, 3},
		{"get no retries configured", 1, 0, "experiments", experimentsPath, experiments.ErrUnavailable, 1},
		{"get not retried on 404", 0, 3, "experiments-unknown", "/api/users/zed/experiments/", experiments.ErrNotFound, 1},
		{"login never retried", 1, 3, "login", useroffice.LoginPath, experiments.ErrUnavailable, 1},
		{"umbrella post not retried", 1, 3, "umbrella", useroffice.UmbrellaPath, experiments.ErrUnavailable, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := startOffice(t, flaky(tt.failures, office))
			c := newClient(t, o, func(cfg *experiments.ClientConfig) { cfg.Retries = tt.retries })
			var err error
			switch tt.call {
			case "experiments":
				_, err = c.Experiments(t.Context(), "alice", experiments.Query{})
			case "experiments-unknown":
				_, err = c.Experiments(t.Context(), "zed", experiments.Query{})
			case "login":
				err = c.Login(t.Context(), "alice", "alice-demo")
			case "umbrella":
				_, err = c.UmbrellaUser(t.Context(), "eaa-bob-4e5f6a7b")
			}
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if n := o.hits(tt.path); n != tt.wantCalls {
				t.Errorf("%d requests, want %d", n, tt.wantCalls)
			}
		})
	}
}

func TestRetryWaitEndsWithContext(t *testing.T) {
	o := startOffice(t, stub(503, `{}`))
	c := newClient(t, o, func(cfg *experiments.ClientConfig) {
		cfg.Retries, cfg.RetryBackoff = 10, time.Hour
	})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Experiments(ctx, "alice", experiments.Query{})
	if !errors.Is(err, experiments.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrUnavailable after the context ended", err)
	}
	if n := o.hits("/api/users/alice/experiments/"); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestAnswerSizeLimit(t *testing.T) {
	huge := `{"count": 1, "results": [{"subject": "` + strings.Repeat("x", 9<<20) + `"}]}`
	c := newClient(t, startOffice(t, stub(200, huge)), func(cfg *experiments.ClientConfig) { cfg.Retries = 3 })
	_, err := c.Experiments(t.Context(), "alice", experiments.Query{})
	if !errors.Is(err, experiments.ErrBadAnswer) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v, want ErrBadAnswer for an oversized answer", err)
	}
}

func TestNewClientRejects(t *testing.T) {
	good := useroffice.ClientConfig("http://office.example", officeCreds)
	tests := []struct {
		name string
		tune func(*experiments.ClientConfig)
	}{
		{"relative url", func(c *experiments.ClientConfig) { c.LoginURL = "/api/login/" }},
		{"ftp url", func(c *experiments.ClientConfig) { c.UmbrellaHashURL = "ftp://office/umbrella" }},
		{"credentials in url", func(c *experiments.ClientConfig) { c.IsAuthorizedURL = "https://u:p@office/auth" }},
		{"no $USERNAME", func(c *experiments.ClientConfig) { c.ExperimentsURL = "https://office/users/experiments/" }},
		{"bad url", func(c *experiments.ClientConfig) { c.LoginURL = "http://office/%zz" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.tune(&cfg)
			if _, err := experiments.NewClient(cfg); err == nil {
				t.Fatal("accepted")
			} else if strings.Contains(err.Error(), ":p@") {
				t.Errorf("error %q reveals URL credentials", err)
			}
		})
	}
	if _, err := experiments.NewClient(good); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkLogin(b *testing.B) {
	o := demoOffice(b)
	c := newClient(b, o, nil)
	ctx := context.Background()
	for b.Loop() {
		if err := c.Login(ctx, "alice", "alice-demo"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
}
