package useroffice

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/calipsoplus/calipso/experiments"
)

// Paths the reference office serves (a facility may use any; Calipso takes the URLs as
// settings). ExperimentsPath contains $USERNAME like the client's setting.
const (
	LoginPath        = "/api/login/"
	UmbrellaPath     = "/api/umbrella/"
	IsAuthorizedPath = "/api/is-authorized/"
	ExperimentsPath  = "/api/users/$USERNAME/experiments/"
)

// Paging of the experiments call.
const (
	DefaultPageSize = 7
	MaxPageSize     = 100
	maxRequestBody  = 64 << 10
)

// Fields the experiments call can order by.
var orderingFields = map[string]func(*Experiment) string{
	"proposal_id": func(e *Experiment) string { return e.ProposalID },
	"subject":     func(e *Experiment) string { return e.Subject },
	"body":        func(e *Experiment) string { return e.Body },
	"beam_line":   func(e *Experiment) string { return e.BeamLine },
}

// BasicCredentials are what Calipso must send (HTTP Basic) on the is-authorised and
// experiments calls. With an empty Username every such call is refused.
type BasicCredentials struct {
	Username string
	Password string
}

// Option tunes the server.
type Option func(*server)

// WithDelay makes every call wait d before answering (or give up when the caller goes
// away): a slow office for timeout tests.
func WithDelay(d time.Duration) Option { return func(s *server) { s.delay = d } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *server) { s.log = l } }

// ClientConfig returns the client settings that reach a reference office at baseURL
// (e.g. "http://127.0.0.1:8081") with creds.
func ClientConfig(baseURL string, creds BasicCredentials) experiments.ClientConfig {
	base := strings.TrimSuffix(baseURL, "/")
	return experiments.ClientConfig{
		LoginURL:        base + LoginPath,
		UmbrellaHashURL: base + UmbrellaPath,
		IsAuthorizedURL: base + IsAuthorizedPath,
		ExperimentsURL:  base + ExperimentsPath,
		Username:        creds.Username,
		Password:        creds.Password,
	}
}

type server struct {
	creds     BasicCredentials
	accounts  map[string]*Account
	byEAAHash map[string]*Account
	// ofUser lists each account's experiments in data-file order.
	ofUser    map[string][]*Experiment
	dummyHash string // verified for unknown users so that timing does not reveal them
	delay     time.Duration
	log       *slog.Logger
}

// NewServer serves data (which it must not be changed afterwards) with the four calls.
// data should have passed Validate (Load and Parse do that).
func NewServer(data *Data, creds BasicCredentials, opts ...Option) http.Handler {
	s := &server{
		creds:     creds,
		accounts:  map[string]*Account{},
		byEAAHash: map[string]*Account{},
		ofUser:    map[string][]*Experiment{},
		log:       slog.Default(),
	}
	for _, o := range opts {
		o(s)
	}
	iterations := DemoIterations
	for i := range data.Accounts {
		a := &data.Accounts[i]
		s.accounts[a.Username] = a
		if a.EAAHash != "" {
			s.byEAAHash[a.EAAHash] = a
		}
		if h, err := parseHash(a.Password); err == nil && i == 0 {
			iterations = h.iterations
		}
	}
	s.dummyHash = HashPassword("", iterations)
	for i := range data.Experiments {
		e := &data.Experiments[i]
		for _, p := range e.Participants {
			if !slices.Contains(s.ofUser[p], e) {
				s.ofUser[p] = append(s.ofUser[p], e)
			}
		}
	}
	mux := http.NewServeMux()
	for _, r := range []struct {
		method, path string
		handler      http.HandlerFunc
	}{
		{http.MethodPost, LoginPath, s.login},
		{http.MethodPost, UmbrellaPath, s.umbrella},
		{http.MethodPost, IsAuthorizedPath, s.requireBasic(s.isAuthorized)},
		{http.MethodGet, strings.Replace(ExperimentsPath, "$USERNAME", "{username}", 1), s.requireBasic(s.experiments)},
	} {
		mux.HandleFunc(r.method+" "+r.path+"{$}", r.handler)
		mux.HandleFunc(r.method+" "+strings.TrimSuffix(r.path, "/"), r.handler)
	}
	return s.delayed(mux)
}

func (s *server) delayed(next http.Handler) http.Handler {
	if s.delay <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// net/http notices a departed client only once the body is consumed: read it first.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, detail("request body unreadable or too large"))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		t := time.NewTimer(s.delay)
		defer t.Stop()
		select {
		case <-r.Context().Done():
			return // the caller gave up
		case <-t.C:
		}
		next.ServeHTTP(w, r)
	})
}

// requireBasic answers 403 unless the request carries the configured Basic credentials.
func (s *server) requireBasic(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || s.creds.Username == "" || !equalSecret(user, s.creds.Username) || !equalSecret(pass, s.creds.Password) {
			writeJSON(w, http.StatusForbidden, detail("authentication credentials were not provided or are wrong"))
			return
		}
		next(w, r)
	}
}

// equalSecret compares in constant time, whatever the lengths.
func equalSecret(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

func (s *server) login(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	if err := readJSON(w, r, &req); err != nil || req.Username == "" || req.Password == "" {
		writeJSON(w, http.StatusBadRequest, detail("want {\"username\": ..., \"password\": ...}"))
		return
	}
	hash := s.dummyHash
	account, known := s.accounts[req.Username]
	if known {
		hash = account.Password
	}
	ok, err := VerifyPassword(req.Password, hash)
	if err != nil {
		s.log.ErrorContext(r.Context(), "user office: stored hash unusable", "username", req.Username, "error", err)
		writeJSON(w, http.StatusInternalServerError, detail("stored password hash unusable"))
		return
	}
	if !known || !ok {
		writeJSON(w, http.StatusUnauthorized, detail("invalid username or password"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"username": account.Username})
}

func (s *server) umbrella(w http.ResponseWriter, r *http.Request) {
	var req struct {
		EAAHash string `json:"eaa_hash"`
	}
	if err := readJSON(w, r, &req); err != nil || req.EAAHash == "" {
		writeJSON(w, http.StatusBadRequest, detail("want {\"eaa_hash\": ...}"))
		return
	}
	account, ok := s.byEAAHash[req.EAAHash]
	if !ok {
		writeJSON(w, http.StatusNotFound, detail("no account has this hash"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"username": account.Username})
}

func (s *server) isAuthorized(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Login string `json:"login"`
	}
	if err := readJSON(w, r, &req); err != nil || req.Login == "" {
		writeJSON(w, http.StatusBadRequest, detail("want {\"login\": ...}"))
		return
	}
	account, ok := s.accounts[req.Login]
	if !ok {
		writeJSON(w, http.StatusNotFound, detail("unknown account"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"result": account.Authorized})
}

type pageAnswer struct {
	Count    int                `json:"count"`
	Next     *string            `json:"next"`
	Previous *string            `json:"previous"`
	Results  []servedExperiment `json:"results"`
}

func (s *server) experiments(w http.ResponseWriter, r *http.Request) {
	account, ok := s.accounts[r.PathValue("username")]
	if !ok {
		writeJSON(w, http.StatusNotFound, detail("unknown account"))
		return
	}
	query := r.URL.Query()
	page, err := positiveParam(query, "page", 1)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, detail(err.Error()))
		return
	}
	size, err := positiveParam(query, "page_size", DefaultPageSize)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, detail(err.Error()))
		return
	}
	size = min(size, MaxPageSize)
	list, err := selectExperiments(s.ofUser[account.Username], query.Get("search"), query.Get("ordering"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, detail(err.Error()))
		return
	}
	answer := pageAnswer{Count: len(list), Results: []servedExperiment{}}
	lastPage := max(1, (len(list)+size-1)/size)
	if start := (page - 1) * size; start < len(list) {
		for _, e := range list[start:min(start+size, len(list))] {
			answer.Results = append(answer.Results, e.served(account))
		}
	}
	if page < lastPage {
		answer.Next = pageURL(r, page+1)
	}
	if page > 1 {
		answer.Previous = pageURL(r, min(page-1, lastPage))
	}
	writeJSON(w, http.StatusOK, answer)
}

// selectExperiments filters list by search (a case-insensitive substring of the subject, body,
// beamline or proposal id) and sorts it by ordering: comma-separated fields among
// proposal_id, subject, body and beam_line, "-" first for descending, ties broken by
// proposal_id ascending. Strings compare by code point.
func selectExperiments(list []*Experiment, search, ordering string) ([]*Experiment, error) {
	type key struct {
		get  func(*Experiment) string
		desc bool
	}
	var keys []key
	for field := range strings.SplitSeq(ordering, ",") {
		field = strings.TrimSpace(field)
		if field == "" {
			continue
		}
		name := strings.TrimPrefix(field, "-")
		get, ok := orderingFields[name]
		if !ok {
			return nil, fmt.Errorf("cannot order by %q (use proposal_id, subject, body or beam_line)", name)
		}
		keys = append(keys, key{get: get, desc: name != field})
	}
	keys = append(keys, key{get: orderingFields["proposal_id"]})
	needle := strings.ToLower(strings.TrimSpace(search))
	var out []*Experiment
	for _, e := range list {
		if needle == "" || slices.ContainsFunc([]string{e.Subject, e.Body, e.BeamLine, e.ProposalID},
			func(s string) bool { return strings.Contains(strings.ToLower(s), needle) }) {
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(a, b *Experiment) int {
		for _, k := range keys {
			if c := strings.Compare(k.get(a), k.get(b)); c != 0 {
				if k.desc {
					return -c
				}
				return c
			}
		}
		return 0
	})
	return out, nil
}

func positiveParam(q url.Values, name string, fallback int) (int, error) {
	v := q.Get(name)
	if v == "" {
		return fallback, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%s must be a positive integer, got %q", name, v)
	}
	return n, nil
}

// pageURL is the absolute URL of the same request for another page.
func pageURL(r *http.Request, page int) *string {
	u := url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path}
	if r.TLS != nil {
		u.Scheme = "https"
	}
	q := r.URL.Query()
	q.Set("page", strconv.Itoa(page))
	u.RawQuery = q.Encode()
	s := u.String()
	return &s
}

func readJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	if err := dec.Decode(dst); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

func detail(msg string) map[string]string { return map[string]string{"detail": msg} }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away: nothing to do
}

// Open loads the office's data from path, or the embedded demo data when path is "".
func Open(path string) (*Data, error) {
	if path == "" {
		return Demo()
	}
	return Load(path)
}

// Serve serves data on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener, data *Data, creds BasicCredentials, log *slog.Logger) error {
	srv := &http.Server{Handler: NewServer(data, creds, WithLogger(log)), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
