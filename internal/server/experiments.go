package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"
	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/experiments"
	"github.com/calipsoplus/calipso/experiments/icat"
	"github.com/calipsoplus/calipso/internal/store"
)

// officeCache keeps each user's experiments from the user office in the local
// database, fetched again at most every refresh interval. When the office is down
// or slow, the local copy is served marked stale; with no local copy, 503.
type officeCache struct {
	db      *store.Store
	office  calipso.ExperimentSource
	dynamic bool          // fetch from the user office at all
	maxAge  time.Duration // how old a user's copy may get
	timeout time.Duration // per fetch
	log     *slog.Logger
	flights singleflight.Group // one fetch per user at a time
}

func newOfficeCache(db *store.Store, office calipso.ExperimentSource, dynamic bool, refresh, timeout time.Duration, log *slog.Logger) *officeCache {
	return &officeCache{db: db, office: office, dynamic: dynamic, maxAge: refresh, timeout: timeout, log: log}
}

// refresh brings u's experiments up to date; stale reports that the office could not
// be asked and an older copy stands; fetched that the office was asked (u's
// experiments version may have moved).
func (c *officeCache) refresh(ctx context.Context, u calipso.User) (stale, fetched bool, err error) {
	if !c.dynamic || c.office == nil {
		return false, false, nil
	}
	if !u.ExperimentsFetchedBefore(time.Now(), c.maxAge) {
		return false, false, nil
	}
	_, err, _ = c.flights.Do(u.Username, func() (any, error) {
		// Detached from the request so that one impatient client doesn't cancel the
		// fetch others wait for; bounded by the office timeout all the same.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
		defer cancel()
		list, err := c.office.AllExperiments(fctx, u.Username)
		if errors.Is(err, experiments.ErrNotFound) {
			list, err = nil, nil // the office doesn't know the account: no experiments
		}
		if err != nil {
			return nil, err
		}
		return nil, c.db.SyncUserExperiments(fctx, u.ID, list)
	})
	if err == nil {
		return false, true, nil
	}
	if u.ExperimentsFetched != nil && !errors.Is(err, store.ErrUnavailable) {
		c.log.WarnContext(ctx, "user office failed: serving the local copy", "user", u.Username, "err", err)
		return true, false, nil
	}
	return false, true, fmt.Errorf("experiments of %s: %w", u.Username, err)
}

// pageKey names a page of one user's experiments at one version of them.
type pageKey struct {
	userID, version int64
	search          string
	ordering        string
	favorite        int8 // 0 all, 1 favourites, 2 the others
	page, size      int
}

type cachedPage struct {
	results json.RawMessage // the page's results, encoded once
	total   int
}

// pageCache keeps recent experiments pages. Entries are keyed by the user's
// experiments version, which every change to the page moves in the database (from
// any process): a page is served only for the version it was read under, and old
// versions age out.
type pageCache struct {
	lru *lru.Cache[pageKey, cachedPage]
}

func newPageCache(size int) *pageCache {
	c, _ := lru.New[pageKey, cachedPage](size) // errors only for size <= 0
	return &pageCache{lru: c}
}

// experiments returns the page's results, encoded, and the total count for u (whose
// ExperimentsVersion must be current).
func (c *pageCache) experiments(ctx context.Context, db *store.Store, u calipso.User, q store.ExperimentQuery) (json.RawMessage, int, error) {
	key := pageKey{userID: u.ID, version: u.ExperimentsVersion, search: q.Search, ordering: q.Ordering, page: q.Page, size: q.PageSize}
	if q.Favorite != nil {
		key.favorite = 2
		if *q.Favorite {
			key.favorite = 1
		}
	}
	if p, ok := c.lru.Get(key); ok {
		return p.results, p.total, nil
	}
	list, total, err := db.Experiments(ctx, u.ID, q)
	if err != nil {
		return nil, 0, err
	}
	results, err := json.Marshal(toExperimentsJSON(list))
	if err != nil {
		return nil, 0, err
	}
	c.lru.Add(key, cachedPage{results: results, total: total})
	return results, total, nil
}

func toExperimentsJSON(list []store.UserExperiment) []experimentJSON {
	out := make([]experimentJSON, 0, len(list))
	for _, e := range list {
		ej := experimentJSON{ID: e.LinkID, Favorite: e.Favorite, ProposalID: e.ProposalID, Subject: e.Subject, Body: e.Body,
			BeamLine: e.BeamLine, UID: idText(e.UID), GID: idText(e.GID), Sessions: make([]sessionJSON, 0, len(e.Sessions))}
		for _, ss := range e.Sessions {
			ej.Sessions = append(ej.Sessions, sessionJSON{SessionNumber: ss.SessionNumber, StartDate: datePtr(ss.StartDate),
				EndDate: datePtr(ss.EndDate), Subject: ss.Subject, Body: ss.Body, DataSetPath: ss.DataSetPath})
		}
		out = append(out, ej)
	}
	return out
}

// experimentsPage is page[experimentJSON] with its results encoded already.
type experimentsPage struct {
	Count    int
	Next     *string
	Previous *string
	PageSize int
	Results  json.RawMessage
	Stale    bool
}

// MarshalJSON writes the envelope around the encoded results by hand: encoding/json
// would scan and compact the cached results again on every request.
func (p experimentsPage) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, len(p.Results)+256)
	b = append(b, `{"count":`...)
	b = strconv.AppendInt(b, int64(p.Count), 10)
	for _, link := range []struct {
		key string
		url *string
	}{{`,"next":`, p.Next}, {`,"previous":`, p.Previous}} {
		b = append(b, link.key...)
		if link.url == nil {
			b = append(b, "null"...)
			continue
		}
		u, err := json.Marshal(*link.url)
		if err != nil {
			return nil, err
		}
		b = append(b, u...)
	}
	b = append(b, `,"page_size":`...)
	b = strconv.AppendInt(b, int64(p.PageSize), 10)
	b = append(b, `,"results":`...)
	b = append(b, p.Results...)
	if p.Stale {
		b = append(b, `,"stale":true`...)
	}
	return append(b, '}'), nil
}

// experimentJSON is CalipsoPlus' experiment shape (with the link id and favourite).
type experimentJSON struct {
	ID         int64         `json:"id"`
	Favorite   bool          `json:"favorite"`
	ProposalID string        `json:"proposal_id"`
	Subject    string        `json:"subject"`
	Body       string        `json:"body"`
	BeamLine   string        `json:"beam_line"`
	UID        string        `json:"uid"` // numeric text, "" when unknown: the original's type
	GID        string        `json:"gid"`
	Sessions   []sessionJSON `json:"sessions"`
}

type sessionJSON struct {
	SessionNumber string     `json:"session_number"`
	StartDate     *time.Time `json:"start_date"`
	EndDate       *time.Time `json:"end_date"`
	Subject       string     `json:"subject"`
	Body          string     `json:"body"`
	DataSetPath   string     `json:"data_set_path"`
}

func idText(id *int) string {
	if id == nil {
		return ""
	}
	return strconv.Itoa(*id)
}

func datePtr(d time.Time) *time.Time {
	if d.IsZero() {
		return nil
	}
	d = d.UTC()
	return &d
}

func (s *server) handleExperiments() http.HandlerFunc {
	return s.own(calipso.PermAdmin, func(w http.ResponseWriter, r *http.Request, _, target calipso.User) {
		p, err := pageNumber(r)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		q := queryOf(r)
		query := store.ExperimentQuery{Search: q.Get("search"), Ordering: q.Get("ordering"), Page: p, PageSize: s.Config.Pagination.Experiments}
		// Searches are never refused (an error logs the user out); a pasted text is cut
		// at a length no proposal field reaches.
		query.Search = truncateText(query.Search, maxSearch)
		query.Favorite = favoriteFilter(q.Get("calipsouserexperiment__favorite"))
		ctx := r.Context()
		if token, _ := s.session(r).Values[keyAccessToken].(string); token != "" && target.ID == callerOf(r).user.ID {
			ctx = icat.AccessTokenContext(ctx, token) // the catalogue's session is the user's own
		}
		stale, fetched, err := s.office.refresh(ctx, target)
		if fetched { // the fetch time and version read with the session are behind
			s.sessions.forgetUser(target.Username)
			if err == nil {
				target, err = s.Store.User(r.Context(), target.Username)
			}
		}
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		results, total, err := s.pages.experiments(r.Context(), s.Store, target, query)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		out := experimentsPage{Count: total, PageSize: query.PageSize, Results: results, Stale: stale}
		out.Next, out.Previous = pageLinks(r, p, query.PageSize, total)
		if stale {
			w.Header().Set("Warning", `110 calipso "Response is Stale: the user office did not answer"`)
		}
		body, err := out.MarshalJSON()
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeRawJSON(w, http.StatusOK, body)
	})
}

func (s *server) handleFavorite() http.HandlerFunc {
	return s.authed(func(w http.ResponseWriter, r *http.Request, u calipso.User) {
		id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
		if err != nil || id <= 0 {
			writeError(w, r, s.Log, fmt.Errorf("%w: experiment link id must be a positive number", errBadRequest))
			return
		}
		var req struct {
			Favorite *flexBool `json:"favorite"`
		}
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		if req.Favorite == nil {
			writeError(w, r, s.Log, fmt.Errorf("%w: favorite is required (true, false, \"1\" or \"0\")", errBadRequest))
			return
		}
		if err := s.Store.SetFavorite(r.Context(), u.ID, id, bool(*req.Favorite)); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		s.sessions.forgetUser(u.Username) // the experiments version moved
		writeJSON(w, http.StatusOK, map[string]any{"id": id, "favorite": bool(*req.Favorite)})
	})
}

// flexBool accepts true/false and the frontend's "1"/"0" (and "true"/"false").
type flexBool bool

func (b *flexBool) UnmarshalJSON(data []byte) error {
	switch string(data) {
	case "true", `"1"`, `"true"`, "1", `"True"`:
		*b = true
	case "false", `"0"`, `"false"`, "0", `"False"`:
		*b = false
	default:
		return fmt.Errorf("want true, false, \"1\" or \"0\"")
	}
	return nil
}

// maxSearch bounds the search text used: longer text is cut, not refused.
const maxSearch = 500

// truncateText cuts s to at most n bytes on a rune boundary.
func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// favoriteFilter reads calipsouserexperiment__favorite: 1 or true gives only the
// favourites, 0 or false only the others; any other value is ignored, as by the
// original (Django's BooleanFilter), never an error.
func favoriteFilter(v string) *bool {
	var fav bool
	switch strings.ToLower(v) {
	case "1", "true":
		fav = true
	case "0", "false":
		fav = false
	default:
		return nil
	}
	return &fav
}

// handleInvestigationUsers is GET experiments/<investigation_id>/users (with ICAT):
// who took part in the investigation (name, fullName, role, investigationName,
// investigationId, as CalipsoPlus' ICAT plugin answered), to its participants and to
// admins only; the original answered anyone logged in.
func (s *server) handleInvestigationUsers() http.HandlerFunc {
	return s.authed(func(w http.ResponseWriter, r *http.Request, u calipso.User) {
		id, err := strconv.ParseInt(mux.Vars(r)["investigation_id"], 10, 64)
		if err != nil || id <= 0 {
			writeError(w, r, s.Log, fmt.Errorf("%w: investigation id %q is not a positive integer", errBadRequest, mux.Vars(r)["investigation_id"]))
			return
		}
		users, err := s.Catalogue.Participants(r.Context(), id, u.Username, accessOf(r).Can(calipso.PermAdmin))
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, users)
	})
}
