package experiments

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/calipsoplus/calipso"
)

// Errors the user-office client reports; callers check them with errors.Is.
var (
	// ErrBadCredentials: the office refused the username/password pair (answer 401).
	ErrBadCredentials = calipso.NewError(calipso.EUNAUTHORIZED, "bad credentials")
	// ErrBadRequest: the office found the request malformed (400), or it was not sent
	// because an argument was empty or unusable.
	ErrBadRequest = calipso.NewError(calipso.EUPSTREAM, "bad request to the user office")
	// ErrNotFound: the office has no such account or hash (404).
	ErrNotFound = calipso.NewError(calipso.ENOTFOUND, "not found at the user office")
	// ErrForbidden: the office refused Calipso's own Basic credentials (401/403 on a
	// protected call): a configuration problem, answer 502.
	ErrForbidden = calipso.NewError(calipso.EUPSTREAM, "user office refused Calipso's credentials")
	// ErrUnavailable: network error, timeout or 5xx; answer 503 (or 502) and retry later.
	ErrUnavailable = calipso.NewError(calipso.EUNAVAILABLE, "user office unavailable")
	// ErrBadAnswer: an unexpected status or an answer that cannot be read; answer 502.
	ErrBadAnswer = calipso.NewError(calipso.EUPSTREAM, "unexpected answer from the user office")
)

// Defaults and limits of the client.
const (
	DefaultTimeout      = 10 * time.Second
	DefaultRetryBackoff = 200 * time.Millisecond
	maxRetryBackoff     = 5 * time.Second
	maxSmallAnswer      = 64 << 10 // login, umbrella, is-authorised
	maxPageAnswer       = 8 << 20  // one page of experiments
	// MaxPages bounds AllExperiments so that an office that never ends cannot loop us.
	MaxPages = 500
	// allPageSize is the page size AllExperiments asks for (offices may cap it lower).
	allPageSize = 100
)

// ClientConfig configures the user-office client. The four URLs are settings because
// each facility serves the calls at its own addresses.
type ClientConfig struct {
	LoginURL        string // POST {"username","password"}
	UmbrellaHashURL string // POST {"eaa_hash"}
	IsAuthorizedURL string // POST {"login"}, Basic auth
	ExperimentsURL  string // GET, contains $USERNAME; Basic auth
	// Username and Password are Calipso's Basic credentials for is-authorised and
	// experiments. They never appear in errors or logs.
	Username string
	Password string
	// Timeout bounds each attempt of each call (default DefaultTimeout).
	Timeout time.Duration
	// HTTPClient to use (default: a new client; its own Timeout is left as is).
	HTTPClient *http.Client
	// Retries is how many times a failed GET (network error, timeout, 5xx, 429) is tried
	// again; 0 means no retry. POST calls are never retried.
	Retries int
	// RetryBackoff is the first wait between retries, doubled each time with jitter
	// (default DefaultRetryBackoff).
	RetryBackoff time.Duration
	// Logger for retries (default slog.Default()).
	Logger *slog.Logger
}

// Query selects one page of a user's experiments. Zero values are left out, so that the
// office applies its own defaults.
type Query struct {
	Search   string
	Ordering string // proposal_id, subject, body or beam_line; leading "-" descends
	Page     int
	PageSize int
}

// Page is one page of experiments as the office answers it.
type Page struct {
	Count    int          `json:"count"`
	Next     string       `json:"next"`     // "" on the last page
	Previous string       `json:"previous"` // "" on the first page
	Results  []Experiment `json:"results"`
}

// UnmarshalJSON reads a page tolerantly (missing fields) and strictly (wrong types).
func (p *Page) UnmarshalJSON(data []byte) error {
	fields, err := decodeObject(data)
	if err != nil {
		return err
	}
	var out Page
	if n, err := decodeInt(fields["count"]); err != nil {
		return fieldErr("count", err)
	} else if n != nil {
		out.Count = *n
	}
	if out.Next, err = decodeString(fields["next"], false); err != nil {
		return fieldErr("next", err)
	}
	if out.Previous, err = decodeString(fields["previous"], false); err != nil {
		return fieldErr("previous", err)
	}
	if raw := fields["results"]; !isNull(raw) {
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return fieldErr("results", fmt.Errorf("want a list, got %s", kindOf(raw)))
		}
		out.Results = make([]Experiment, len(items))
		for i, item := range items {
			if err := out.Results[i].UnmarshalJSON(item); err != nil {
				return fieldErr(fmt.Sprintf("results[%d]", i), err)
			}
		}
	}
	*p = out
	return nil
}

// Client calls a facility's user office. It is safe for concurrent use.
type Client struct {
	cfg  ClientConfig
	http *http.Client
	log  *slog.Logger
}

// NewClient checks cfg and returns a client. URLs must be absolute http(s) URLs without
// embedded credentials; the experiments URL must contain $USERNAME.
func NewClient(cfg ClientConfig) (*Client, error) {
	for _, u := range []struct{ name, value string }{
		{"LoginURL", cfg.LoginURL},
		{"UmbrellaHashURL", cfg.UmbrellaHashURL},
		{"IsAuthorizedURL", cfg.IsAuthorizedURL},
		{"ExperimentsURL", strings.ReplaceAll(cfg.ExperimentsURL, "$USERNAME", "x")},
	} {
		if u.value == "" {
			continue // that call is then refused with ErrBadRequest
		}
		parsed, err := url.Parse(u.value)
		if err != nil {
			return nil, fmt.Errorf("user office %s: %w", u.name, err)
		}
		if (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
			return nil, fmt.Errorf("user office %s %q: want an absolute http(s) URL", u.name, parsed.Redacted())
		}
		if parsed.User != nil {
			return nil, fmt.Errorf("user office %s: put credentials in Username/Password, not in the URL", u.name)
		}
	}
	if cfg.ExperimentsURL != "" && !strings.Contains(cfg.ExperimentsURL, "$USERNAME") {
		return nil, fmt.Errorf("user office ExperimentsURL %q: lacks $USERNAME", cfg.ExperimentsURL)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Retries < 0 {
		cfg.Retries = 0
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = DefaultRetryBackoff
	}
	c := &Client{cfg: cfg, http: cfg.HTTPClient, log: cfg.Logger}
	if c.http == nil {
		c.http = &http.Client{}
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	return c, nil
}

// Login checks a username/password pair: nil when valid, ErrBadCredentials (401),

var _ calipso.UserOffice = (*Client)(nil)

// ErrBadRequest (400 or empty arguments), ErrUnavailable. Never retried.
func (c *Client) Login(ctx context.Context, username, password string) error {
	call := fmt.Sprintf("user office login of %q", username)
	if username == "" || password == "" {
		return fmt.Errorf("%s: %w: empty username or password", call, ErrBadRequest)
	}
	status, _, err := c.do(ctx, call, request{
		method: http.MethodPost, url: c.cfg.LoginURL,
		body: map[string]string{"username": username, "password": password},
	})
	if err != nil {
		return err
	}
	switch status {
	case http.StatusOK:
		return nil
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("%s: %w", call, ErrBadCredentials)
	}
	return statusError(call, status)
}

// UmbrellaUser returns the local username of the account with this Umbrella (EAA) hash,
// taken from the office's answer: ErrNotFound (404), ErrBadRequest (400).
func (c *Client) UmbrellaUser(ctx context.Context, eaaHash string) (string, error) {
	const call = "user office umbrella hash"
	if eaaHash == "" {
		return "", fmt.Errorf("%s: %w: empty hash", call, ErrBadRequest)
	}
	status, body, err := c.do(ctx, call, request{
		method: http.MethodPost, url: c.cfg.UmbrellaHashURL,
		body: map[string]string{"eaa_hash": eaaHash},
	})
	if err != nil {
		return "", err
	}
	if status != http.StatusOK {
		return "", statusError(call, status)
	}
	var answer struct {
		Username json.RawMessage `json:"username"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		return "", fmt.Errorf("%s: %w: %v", call, ErrBadAnswer, err)
	}
	username, err := decodeString(answer.Username, false)
	if err != nil {
		return "", fmt.Errorf("%s: %w: %w", call, ErrBadAnswer, fieldErr("username", err))
	}
	if strings.TrimSpace(username) == "" {
		return "", fmt.Errorf("%s: %w: answer names no username", call, ErrBadAnswer)
	}
	return username, nil
}

// IsAuthorized asks whether login may use privileged facility resources.
func (c *Client) IsAuthorized(ctx context.Context, login string) (bool, error) {
	call := fmt.Sprintf("user office is-authorised of %q", login)
	if login == "" {
		return false, fmt.Errorf("%s: %w: empty login", call, ErrBadRequest)
	}
	status, body, err := c.do(ctx, call, request{
		method: http.MethodPost, url: c.cfg.IsAuthorizedURL, basicAuth: true,
		body: map[string]string{"login": login},
	})
	if err != nil {
		return false, err
	}
	if status != http.StatusOK {
		return false, statusError(call, status)
	}
	var answer struct {
		Result *bool `json:"result"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		return false, fmt.Errorf("%s: %w: %v", call, ErrBadAnswer, err)
	}
	if answer.Result == nil {
		return false, fmt.Errorf("%s: %w: answer lacks \"result\"", call, ErrBadAnswer)
	}
	return *answer.Result, nil
}

// Experiments returns one page of login's experiments.
func (c *Client) Experiments(ctx context.Context, login string, q Query) (Page, error) {
	call := fmt.Sprintf("user office experiments of %q", login)
	if q.Page > 1 {
		call += " page " + strconv.Itoa(q.Page)
	}
	target, err := c.experimentsURL(login, q)
	if err != nil {
		return Page{}, fmt.Errorf("%s: %w", call, err)
	}
	status, body, err := c.do(ctx, call, request{
		method: http.MethodGet, url: target, basicAuth: true, limit: maxPageAnswer,
	})
	if err != nil {
		return Page{}, err
	}
	if status != http.StatusOK {
		return Page{}, statusError(call, status)
	}
	var page Page
	if err := json.Unmarshal(body, &page); err != nil {
		return Page{}, fmt.Errorf("%s: %w: %w", call, ErrBadAnswer, err)
	}
	return page, nil
}

// AllExperiments walks every page of login's experiments. It counts pages itself rather
// than follow the office's "next" URL (which would send our credentials wherever it
// points), stops at the last page, and gives up after MaxPages.
func (c *Client) AllExperiments(ctx context.Context, login string) ([]calipso.Experiment, error) {
	var all []calipso.Experiment
	seen := map[string]bool{}
	for n := 1; ; n++ {
		if n > MaxPages {
			return nil, fmt.Errorf("user office experiments of %q: %w: more than %d pages", login, ErrBadAnswer, MaxPages)
		}
		page, err := c.Experiments(ctx, login, Query{Page: n, PageSize: allPageSize})
		if err != nil {
			return nil, err
		}
		for _, e := range page.Results {
			// The list may shift between pages; keep each proposal once.
			if !seen[e.ProposalID] {
				seen[e.ProposalID] = true
				all = append(all, e.Domain())
			}
		}
		if page.Next == "" || len(page.Results) == 0 || (page.Count > 0 && len(seen) >= page.Count) {
			return all, nil
		}
	}
}

// experimentsURL substitutes the escaped login for $USERNAME and adds the query.
func (c *Client) experimentsURL(login string, q Query) (string, error) {
	if login == "" || login == "." || login == ".." {
		return "", fmt.Errorf("%w: unusable login %q", ErrBadRequest, login)
	}
	if c.cfg.ExperimentsURL == "" {
		return "", fmt.Errorf("%w: no experiments URL configured", ErrBadRequest)
	}
	raw := c.cfg.ExperimentsURL
	escaped := url.PathEscape(login)
	if i, j := strings.Index(raw, "?"), strings.Index(raw, "$USERNAME"); i >= 0 && j > i {
		escaped = url.QueryEscape(login)
	}
	u, err := url.Parse(strings.ReplaceAll(raw, "$USERNAME", escaped))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	values := u.Query()
	if q.Search != "" {
		values.Set("search", q.Search)
	}
	if q.Ordering != "" {
		values.Set("ordering", q.Ordering)
	}
	if q.Page > 0 {
		values.Set("page", strconv.Itoa(q.Page))
	}
	if q.PageSize > 0 {
		values.Set("page_size", strconv.Itoa(q.PageSize))
	}
	u.RawQuery = values.Encode()
	return u.String(), nil
}

type request struct {
	method    string
	url       string
	body      any // JSON-encoded when not nil
	basicAuth bool
	limit     int64 // answer size limit; maxSmallAnswer when 0
}

// do sends req (retrying GETs), and returns the status and the size-limited body.
// Transport failures, timeouts and 5xx come back as ErrUnavailable naming the call.
func (c *Client) do(ctx context.Context, call string, req request) (int, []byte, error) {
	if req.url == "" {
		return 0, nil, fmt.Errorf("%s: %w: no URL configured", call, ErrBadRequest)
	}
	var payload []byte
	if req.body != nil {
		var err error
		if payload, err = json.Marshal(req.body); err != nil {
			return 0, nil, fmt.Errorf("%s: encode request: %w", call, err)
		}
	}
	attempts := 1
	if req.method == http.MethodGet {
		attempts += c.cfg.Retries
	}
	backoff := c.cfg.RetryBackoff
	for attempt := 1; ; attempt++ {
		status, body, err := c.once(ctx, req, payload)
		if tooLarge := (*tooLargeError)(nil); errors.As(err, &tooLarge) {
			return 0, nil, fmt.Errorf("%s: %w: %w", call, ErrBadAnswer, err)
		}
		retryable := err != nil || status >= 500 || status == http.StatusTooManyRequests
		if !retryable {
			return status, body, nil
		}
		if err == nil {
			err = fmt.Errorf("status %d", status)
		}
		if ctx.Err() != nil || attempt >= attempts {
			return 0, nil, fmt.Errorf("%s: %w: %w", call, ErrUnavailable, err)
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		c.log.WarnContext(ctx, "user office call failed, retrying",
			"call", call, "attempt", attempt, "wait", wait, "error", err.Error())
		select {
		case <-ctx.Done():
			return 0, nil, fmt.Errorf("%s: %w: %w", call, ErrUnavailable, ctx.Err())
		case <-time.After(wait):
		}
		backoff = min(backoff*2, maxRetryBackoff)
	}
}

// once makes one attempt within the per-call timeout.
func (c *Client) once(ctx context.Context, req request, payload []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	httpReq, err := http.NewRequestWithContext(ctx, req.method, req.url, body)
	if err != nil {
		return 0, nil, err
	}
	httpReq.Header.Set("Accept", "application/json")
	if payload != nil {
		httpReq.Header.Set("Content-Type", "application/json")
	}
	if req.basicAuth {
		httpReq.SetBasicAuth(c.cfg.Username, c.cfg.Password)
	}
	resp, err := c.http.Do(httpReq)
	if err != nil {
		return 0, nil, err // *url.Error: the URL is redacted, the body is not included
	}
	defer resp.Body.Close()
	limit := req.limit
	if limit == 0 {
		limit = maxSmallAnswer
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return 0, nil, fmt.Errorf("read answer: %w", err)
	}
	if int64(len(data)) > limit && resp.StatusCode < 300 {
		return resp.StatusCode, nil, &tooLargeError{limit}
	}
	return resp.StatusCode, data, nil
}

type tooLargeError struct{ limit int64 }

func (e *tooLargeError) Error() string { return fmt.Sprintf("answer larger than %d bytes", e.limit) }

// statusError turns an unexpected status into an error of the right kind.
func statusError(call string, status int) error {
	var kind error
	switch status {
	case http.StatusBadRequest:
		kind = ErrBadRequest
	case http.StatusNotFound:
		kind = ErrNotFound
	case http.StatusUnauthorized, http.StatusForbidden:
		kind = ErrForbidden
	default:
		kind = ErrBadAnswer
	}
	return fmt.Errorf("%s: %w (status %d)", call, kind, status)
}

// Ping reports whether the user office's host accepts connections (readiness: no
// call is made, so no credentials travel).
func (c *Client) Ping(ctx context.Context) error {
	u, err := url.Parse(c.cfg.LoginURL)
	if err != nil {
		return fmt.Errorf("%w: login URL", ErrUnavailable)
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return fmt.Errorf("%w: unreachable", ErrUnavailable)
	}
	return conn.Close()
}
