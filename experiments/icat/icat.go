// Package icat reads experiments from an ICAT data catalogue through its ICAT+ REST
// interface, as the CalipsoPlus ICAT plugin did: a session from POST <icat>/session
// (the plugin with service credentials, or the user's OpenID access token), then the
// investigations under <icat>/catalogue/<sessionId>/. Each investigation is one
// experiment session; investigations of one name are one proposal. Unlike the
// plugin, a user is shown only the investigations they take part in (and, when the
// site says so, the released ones), never the embargoed data of others.
package icat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/calipsoplus/calipso"
)

// Errors of the catalogue; callers check them with errors.Is.
var (
	// ErrUnavailable: network error, timeout or 5xx (retried for reads).
	ErrUnavailable = calipso.NewError(calipso.EUNAVAILABLE, "ICAT unavailable")
	// ErrRefused: the catalogue refused Calipso's credentials (or the user's token).
	ErrRefused = calipso.NewError(calipso.EUPSTREAM, "ICAT refused the credentials")
	// ErrBadAnswer: an answer that is not what ICAT+ sends.
	ErrBadAnswer = calipso.NewError(calipso.EUPSTREAM, "unexpected answer from ICAT")
	// ErrNotFound: no such investigation.
	ErrNotFound = calipso.NewError(calipso.ENOTFOUND, "investigation not found in ICAT")
	// ErrNotParticipant: the user does not take part in the investigation.
	ErrNotParticipant = calipso.NewError(calipso.EFORBIDDEN, "not a participant of this investigation")
)

// Config is the catalogue and how Calipso signs in to it.
type Config struct {
	URL      string // ICAT+ base URL, e.g. https://icatplus.facility.example
	Plugin   string // ICAT's authentication plugin (e.g. "db", "ldap")
	Username string // service credentials (a reader of every investigation)
	Password string
	// OpenID: with the user's OpenID access token (AccessTokenContext), the session
	// is the user's own (plugin + the token as password): ICAT itself limits what it
	// shows. Without one, the service credentials are used and Calipso filters.
	OpenID bool
	// IncludeReleased adds the released (public) investigations to everyone's list.
	IncludeReleased bool
	Timeout         time.Duration // each attempt (default 10s)
	Retries         int           // more attempts for reads (GET) only
	HTTPClient      *http.Client
	Logger          *slog.Logger
}

// Client is an ICAT+ client; safe for concurrent use.
type Client struct {
	cfg  Config
	http *http.Client
	log  *slog.Logger

	mu      sync.Mutex
	session string // the service credentials' session
	expires time.Time
}

// sessionTTL is how long a service session is reused (ICAT's default lifetime is
// 2 hours; a refused one is replaced at once).
const sessionTTL = time.Hour

// maxAnswer bounds an answer.
const maxAnswer = 32 << 20

// New checks cfg.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("icat: %q is not an http(s) URL", cfg.URL)
	}
	cfg.URL = strings.TrimSuffix(cfg.URL, "/")
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
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

type tokenKey struct{}

// AccessTokenContext carries the user's OpenID access token to the calls made with
// ctx (Config.OpenID).
func AccessTokenContext(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, tokenKey{}, token)
}

// Investigation is what Calipso reads of an ICAT investigation.
type Investigation struct {
	ID         int64      `json:"id"`
	Name       string     `json:"name"`  // the proposal
	Title      string     `json:"title"` // the experiment's subject
	Summary    string     `json:"summary"`
	VisitID    string     `json:"visitId"` // the beamline
	CreateTime *time.Time `json:"createTime"`
	EndDate    *time.Time `json:"endDate"`
}

// InvestigationUser is one participant of an investigation, as ICAT+ lists them.
type InvestigationUser struct {
	Name              string `json:"name"`
	FullName          string `json:"fullName"`
	Role              string `json:"role"`
	InvestigationName string `json:"investigationName"`
	InvestigationID   int64  `json:"investigationId"`
}

// AllExperiments are login's experiments: the investigations they take part in
// (and the released ones with IncludeReleased), grouped by proposal.
func (c *Client) AllExperiments(ctx context.Context, login string) ([]calipso.Experiment, error) {
	sid, mine, err := c.sessionFor(ctx)
	if err != nil {
		return nil, err
	}
	list, err := c.investigations(ctx, sid, "/investigation")
	if err != nil {
		return nil, err
	}
	if !mine {
		// The service session sees every investigation: keep the user's own.
		kept := list[:0]
		for _, inv := range list {
			ok, err := c.takesPart(ctx, sid, inv.ID, login)
			if err != nil {
				return nil, err
			}
			if ok {
				kept = append(kept, inv)
			}
		}
		list = kept
	}
	if c.cfg.IncludeReleased {
		released, err := c.investigations(ctx, sid, "/investigation/status/released/investigation")
		if err != nil {
			return nil, err
		}
		for _, inv := range released {
			if !slices.ContainsFunc(list, func(i Investigation) bool { return i.ID == inv.ID }) {
				list = append(list, inv)
			}
		}
	}
	return Experiments(list), nil
}

// Participants lists who takes part in the investigation of id, for login: a
// participant, or an admin (admin). ErrNotParticipant otherwise.
func (c *Client) Participants(ctx context.Context, id int64, login string, admin bool) ([]InvestigationUser, error) {
	sid, _, err := c.sessionFor(ctx)
	if err != nil {
		return nil, err
	}
	users, err := c.investigationUsers(ctx, sid, id)
	if err != nil {
		return nil, err
	}
	if !admin && !slices.ContainsFunc(users, func(u InvestigationUser) bool { return u.Name == login }) {
		return nil, fmt.Errorf("investigation %d: %w", id, ErrNotParticipant)
	}
	return users, nil
}

// investigations reads a list of investigations, each under "Investigation" as
// ICAT+ answers them.
func (c *Client) investigations(ctx context.Context, sid, path string) ([]Investigation, error) {
	var wrapped []struct{ Investigation Investigation }
	if err := c.get(ctx, sid, path, &wrapped); err != nil {
		return nil, err
	}
	out := make([]Investigation, 0, len(wrapped))
	for _, w := range wrapped {
		if w.Investigation.ID <= 0 || w.Investigation.Name == "" {
			return nil, fmt.Errorf("icat %s: %w: an investigation without id or name", path, ErrBadAnswer)
		}
		out = append(out, w.Investigation)
	}
	return out, nil
}

func (c *Client) takesPart(ctx context.Context, sid string, id int64, login string) (bool, error) {
	users, err := c.investigationUsers(ctx, sid, id)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(users, func(u InvestigationUser) bool { return u.Name == login }), nil
}

func (c *Client) investigationUsers(ctx context.Context, sid string, id int64) ([]InvestigationUser, error) {
	var users []InvestigationUser
	if err := c.get(ctx, sid, "/investigation/id/"+strconv.FormatInt(id, 10)+"/investigationusers", &users); err != nil {
		return nil, err
	}
	return users, nil
}

// Experiments groups investigations by name into proposals: each investigation is a
// session (its id the session number, createTime and endDate its dates), the
// proposal's beamlines the visitIds, its subject the first title, its body the
// summary. No datasets are mounted from ICAT: the catalogue names none here.
func Experiments(list []Investigation) []calipso.Experiment {
	byName := map[string]*calipso.Experiment{}
	var order []string
	for _, inv := range list {
		e, ok := byName[inv.Name]
		if !ok {
			e = &calipso.Experiment{ProposalID: inv.Name, Subject: inv.Title, Body: inv.Summary}
			byName[inv.Name] = e
			order = append(order, inv.Name)
		}
		if e.Body == "" {
			e.Body = inv.Summary
		}
		if inv.VisitID != "" && !slices.Contains(strings.Split(e.BeamLine, ", "), inv.VisitID) {
			if e.BeamLine != "" {
				e.BeamLine += ", "
			}
			e.BeamLine += inv.VisitID
		}
		s := calipso.Session{SessionNumber: strconv.FormatInt(inv.ID, 10), Subject: inv.Title, DataSetPath: "[]"}
		if inv.CreateTime != nil {
			s.StartDate = inv.CreateTime.UTC()
		}
		if inv.EndDate != nil {
			s.EndDate = inv.EndDate.UTC()
		}
		e.Sessions = append(e.Sessions, s)
	}
	slices.Sort(order)
	out := make([]calipso.Experiment, 0, len(order))
	for _, name := range order {
		out = append(out, *byName[name])
	}
	return out
}

// sessionFor is the session for ctx's caller: the user's own (mine) with OpenID and
// a token, else the service credentials' (cached).
func (c *Client) sessionFor(ctx context.Context) (sid string, mine bool, err error) {
	if token, _ := ctx.Value(tokenKey{}).(string); c.cfg.OpenID && token != "" {
		sid, err = c.login(ctx, url.Values{"plugin": {c.cfg.Plugin}, "password": {token}})
		return sid, true, err
	}
	c.mu.Lock()
	sid, fresh := c.session, time.Now().Before(c.expires)
	c.mu.Unlock()
	if fresh {
		return sid, false, nil
	}
	sid, err = c.login(ctx, url.Values{"plugin": {c.cfg.Plugin}, "username": {c.cfg.Username}, "password": {c.cfg.Password}})
	if err != nil {
		return "", false, err
	}
	c.mu.Lock()
	c.session, c.expires = sid, time.Now().Add(sessionTTL)
	c.mu.Unlock()
	return sid, false, nil
}

// forgetSession drops a refused service session.
func (c *Client) forgetSession(sid string) {
	c.mu.Lock()
	if c.session == sid {
		c.session, c.expires = "", time.Time{}
	}
	c.mu.Unlock()
}

// login is POST <icat>/session (form-encoded, as ICAT+ takes it): never retried.
func (c *Client) login(ctx context.Context, form url.Values) (string, error) {
	status, body, err := c.once(ctx, http.MethodPost, c.cfg.URL+"/session", []byte(form.Encode()))
	if err != nil {
		return "", fmt.Errorf("icat session: %w: %w", ErrUnavailable, err)
	}
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return "", fmt.Errorf("icat session: %w (status %d)", ErrRefused, status)
	case status >= 500:
		return "", fmt.Errorf("icat session: %w: status %d", ErrUnavailable, status)
	case status != http.StatusOK:
		return "", fmt.Errorf("icat session: %w (status %d)", ErrBadAnswer, status)
	}
	var answer struct {
		SessionID string `json:"sessionId"`
	}
	if err := json.Unmarshal(body, &answer); err != nil || answer.SessionID == "" || strings.ContainsAny(answer.SessionID, "/?#") {
		return "", fmt.Errorf("icat session: %w: no sessionId", ErrBadAnswer)
	}
	return answer.SessionID, nil
}

// get reads <icat>/catalogue/<sid><path> into v, retrying failures Retries times; a
// refused service session is replaced once.
func (c *Client) get(ctx context.Context, sid, path string, v any) error {
	call := "icat " + path
	backoff := 200 * time.Millisecond
	renewed := false
	for attempt := 0; ; attempt++ {
		status, body, err := c.once(ctx, http.MethodGet, c.cfg.URL+"/catalogue/"+url.PathEscape(sid)+path, nil)
		switch {
		case err == nil && status == http.StatusOK:
			if err := json.Unmarshal(body, v); err != nil {
				return fmt.Errorf("%s: %w: %w", call, ErrBadAnswer, err)
			}
			return nil
		case err == nil && (status == http.StatusUnauthorized || status == http.StatusForbidden):
			if renewed || ctx.Value(tokenKey{}) != nil && c.cfg.OpenID {
				return fmt.Errorf("%s: %w (status %d)", call, ErrRefused, status)
			}
			c.forgetSession(sid)
			if sid, _, err = c.sessionFor(ctx); err != nil {
				return err
			}
			renewed = true
			continue
		case err == nil && status == http.StatusNotFound:
			return fmt.Errorf("%s: %w", call, ErrNotFound)
		case err == nil && status < 500 && status != http.StatusTooManyRequests:
			return fmt.Errorf("%s: %w (status %d)", call, ErrBadAnswer, status)
		}
		if err == nil {
			err = fmt.Errorf("status %d", status)
		}
		if ctx.Err() != nil || attempt >= c.cfg.Retries {
			return fmt.Errorf("%s: %w: %w", call, ErrUnavailable, err)
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		c.log.WarnContext(ctx, "ICAT call failed, retrying", "call", call, "attempt", attempt+1, "wait", wait, "error", err.Error())
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w: %w", call, ErrUnavailable, ctx.Err())
		case <-time.After(wait):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// once is one attempt, within Timeout.
func (c *Client) once(ctx context.Context, method, target string, form []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var body io.Reader
	if form != nil {
		body = bytes.NewReader(form)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Accept", "application/json")
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			return 0, nil, uerr.Err // the URL holds the session id: not for the logs
		}
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return 0, nil, err
	}
	if len(data) > maxAnswer {
		return 0, nil, fmt.Errorf("answer larger than %d bytes", maxAnswer)
	}
	return resp.StatusCode, data, nil
}
