package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/quotas"
)

// userJSON is CalipsoPlus' user shape.
type userJSON struct {
	ID         int64         `json:"id"`
	CalipsoUID string        `json:"calipso_uid"`
	UserID     int64         `json:"user_id"`
	User       innerUserJSON `json:"user"`
}

type innerUserJSON struct {
	Username    string     `json:"username"`
	LastLogin   *time.Time `json:"last_login"`
	IsSuperuser bool       `json:"is_superuser"`
}

func toUserJSON(u calipso.User) userJSON {
	var last *time.Time
	if u.LastLogin != nil {
		t := u.LastLogin.UTC()
		last = &t
	}
	return userJSON{ID: u.ID, CalipsoUID: u.UUID, UserID: u.ID,
		User: innerUserJSON{Username: u.Username, LastLogin: last, IsSuperuser: u.IsAdmin}}
}

// page is Django REST framework's page shape.
type page[T any] struct {
	Count    int     `json:"count"`
	Next     *string `json:"next"`
	Previous *string `json:"previous"`
	PageSize int     `json:"page_size"`
	Results  []T     `json:"results"`
	// Stale is set when the user office could not be asked and the local copy is shown.
	Stale bool `json:"stale,omitempty"`
}

// pageNumber reads ?page= (default 1).
func pageNumber(r *http.Request) (int, error) {
	v := queryOf(r).Get("page")
	if v == "" {
		return 1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1_000_000 {
		return 0, fmt.Errorf("%w: page %q: want a whole number from 1", errBadRequest, v)
	}
	return n, nil
}

// pageLinks builds next/previous as the client sees this URL (behind a proxy: its
// scheme and host), only ?page changed.
func pageLinks(r *http.Request, page, size, count int) (next, prev *string) {
	c := client(r)
	link := func(p int) *string {
		u := url.URL{Scheme: c.scheme, Host: c.host, Path: r.URL.Path}
		q := queryOf(r)
		if p == 1 {
			q.Del("page") // as DRF does
		} else {
			q.Set("page", strconv.Itoa(p))
		}
		u.RawQuery = q.Encode()
		s := u.String()
		return &s
	}
	last := int(math.Ceil(float64(count) / float64(size)))
	if page < last {
		next = link(page + 1)
	}
	if page > 1 {
		prev = link(min(page-1, max(last, 1)))
	}
	return next, prev
}

func (s *server) handleUser() http.HandlerFunc {
	return s.own(calipso.PermAdmin, func(w http.ResponseWriter, r *http.Request, _, target calipso.User) {
		writeJSON(w, http.StatusOK, toUserJSON(target))
	})
}

func (s *server) handleUsers() http.HandlerFunc {
	return s.allowed(calipso.PermAdmin, func(w http.ResponseWriter, r *http.Request, _ calipso.User) {
		p, err := pageNumber(r)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		size := s.Config.Pagination.Users
		q := queryOf(r)
		users, total, err := s.Store.Users(r.Context(), store.UserQuery{Search: q.Get("search"), Ordering: q.Get("ordering"), Page: p, PageSize: size})
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		out := page[userJSON]{Count: total, PageSize: size, Results: []userJSON{}}
		for _, u := range users {
			out.Results = append(out.Results, toUserJSON(u))
		}
		out.Next, out.Previous = pageLinks(r, p, size, total)
		writeJSON(w, http.StatusOK, out)
	})
}

func (s *server) handleUserAdmin() http.HandlerFunc {
	return s.allowed(calipso.PermAdmin, func(w http.ResponseWriter, r *http.Request, me calipso.User) {
		name := mux.Vars(r)["username"]
		target, err := s.Store.User(r.Context(), name)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		if r.Method == http.MethodGet {
			writeJSON(w, http.StatusOK, map[string]bool{"is_admin": target.IsAdmin})
			return
		}
		var req struct {
			IsSuperuser *bool `json:"is_superuser"`
		}
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		if req.IsSuperuser == nil {
			writeError(w, r, s.Log, fmt.Errorf("%w: is_superuser (true or false) is required", errBadRequest))
			return
		}
		if err := s.Store.SetAdmin(r.Context(), me.Username, name, *req.IsSuperuser); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		s.sessions.forgetUser(name) // their next request has the new rights
		writeJSON(w, http.StatusOK, map[string]bool{"is_admin": *req.IsSuperuser})
	})
}

// quotaJSON is CalipsoPlus' quota shape; sizes as strings with a unit.
type quotaJSON struct {
	CPU             float64 `json:"cpu"`
	Memory          string  `json:"memory"`
	HDD             string  `json:"hdd"`
	MaxSimultaneous int     `json:"max_simultaneous"`
}

func toQuotaJSON(q calipso.Quota) quotaJSON {
	return quotaJSON{CPU: q.CPUs, Memory: quotas.FormatGiB(q.MemoryBytes), HDD: quotas.FormatGiB(q.DiskBytes), MaxSimultaneous: q.MaxSimultaneous}
}

// flexNumber accepts 10, 1.5 or "10" (CalipsoPlus' forms send strings).
type flexNumber string

func (f *flexNumber) UnmarshalJSON(b []byte) error {
	var n json.Number
	if err := json.Unmarshal(b, &n); err == nil {
		*f = flexNumber(n)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a number")
	}
	*f = flexNumber(s)
	return nil
}

// quotaOf is u's limit: its own quota, else its roles', else the site's default.
func (s *server) quotaOf(r *http.Request, u calipso.User) (calipso.Quota, error) {
	q, err := s.Store.Quota(r.Context(), u.ID)
	if err == nil {
		return q, nil
	}
	if errors.Is(err, store.ErrNotFound) {
		return s.Config.Policy.Access(u).QuotaOr(s.Config.DefaultQuota), nil
	}
	return calipso.Quota{}, err
}

func (s *server) handleQuota() http.HandlerFunc {
	get := s.own(calipso.PermManageQuotas, func(w http.ResponseWriter, r *http.Request, _, target calipso.User) {
		q, err := s.quotaOf(r, target)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, toQuotaJSON(q))
	})
	set := s.allowed(calipso.PermManageQuotas, func(w http.ResponseWriter, r *http.Request, me calipso.User) {
		target, err := s.Store.User(r.Context(), mux.Vars(r)["username"])
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		var req struct {
			CPU             *flexNumber `json:"cpu"`
			Memory          *string     `json:"memory"`
			HDD             *string     `json:"hdd"`
			MaxSimultaneous *flexNumber `json:"max_simultaneous"`
		}
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		if req.CPU == nil || req.Memory == nil || req.HDD == nil || req.MaxSimultaneous == nil {
			writeError(w, r, s.Log, fmt.Errorf("%w: cpu, memory, hdd and max_simultaneous are required", errBadRequest))
			return
		}
		var q calipso.Quota
		var errs []string
		if q.CPUs, err = quotas.ParseCPUs(string(*req.CPU)); err != nil {
			errs = append(errs, err.Error())
		}
		if q.MemoryBytes, err = quotas.ParseGiB(*req.Memory); err != nil {
			errs = append(errs, "memory: "+err.Error())
		}
		if q.DiskBytes, err = quotas.ParseGiB(*req.HDD); err != nil {
			errs = append(errs, "hdd: "+err.Error())
		}
		if n, err := strconv.Atoi(string(*req.MaxSimultaneous)); err != nil || n < 0 || n > 10000 {
			errs = append(errs, "max_simultaneous must be a whole number from 0 to 10000")
		} else {
			q.MaxSimultaneous = n
		}
		if len(errs) > 0 {
			writeError(w, r, s.Log, fmt.Errorf("%w: %v", errBadRequest, errs))
			return
		}
		if err := s.Store.SetQuota(r.Context(), me.Username, target.ID, q); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, toQuotaJSON(q))
	})
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost || r.Method == http.MethodPut {
			set(w, r)
			return
		}
		get(w, r)
	}
}

func (s *server) handleUsedQuota() http.HandlerFunc {
	return s.own(calipso.PermManageQuotas, func(w http.ResponseWriter, r *http.Request, _, target calipso.User) {
		used, err := s.Store.Usage(r.Context(), target.ID)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, toQuotaJSON(used))
	})
}

// imageJSON is the contract's image shape. log_regex is site
// configuration: shown to admins (who set them), not part of what users see.
type imageJSON struct {
	PublicName   string  `json:"public_name"`
	Image        string  `json:"image"`
	Protocol     string  `json:"protocol"`
	CPU          float64 `json:"cpu"`
	Memory       string  `json:"memory"`
	HDD          string  `json:"hdd"`
	ResourceType string  `json:"resource_type"`
}

func toImageJSON(im calipso.Image, admin bool) any {
	share := quotas.ImageShare(im)
	out := imageJSON{PublicName: im.PublicName, Image: im.Image, Protocol: im.Protocol, CPU: im.CPU,
		Memory: quotas.FormatGiB(share.MemoryBytes), HDD: quotas.FormatGiB(share.DiskBytes), ResourceType: string(im.ResourceType)}
	if !admin {
		return out
	}
	return adminImageJSON{imageJSON: out, LogRegex: im.LogRegex, PidsLimit: im.PidsLimit}
}

// adminImageJSON adds the site configuration admins set.
type adminImageJSON struct {
	imageJSON
	LogRegex  string `json:"log_regex,omitempty"`
	PidsLimit int64  `json:"pids_limit,omitempty"` // 0: the settings' workloads.pids_limit
}

// imageRequest is what POST and PUT images/<public_name>/ take: the admin forms'
// fields, cpu as a number or the typed text, sizes in whole gigabytes, protocol in
// any case.
type imageRequest struct {
	PublicName   string      `json:"public_name"`
	Image        string      `json:"image"`
	Protocol     string      `json:"protocol"`
	CPU          *flexNumber `json:"cpu"`
	Memory       string      `json:"memory"`
	HDD          string      `json:"hdd"`
	ResourceType string      `json:"resource_type"`
	LogRegex     string      `json:"log_regex"`
	// PidsLimit is kept as it is when absent: the frontend's forms do not send it.
	PidsLimit *int64 `json:"pids_limit"`
}

// toImage checks the request, naming every problem.
func (req imageRequest) toImage() (calipso.Image, error) {
	im := calipso.Image{PublicName: strings.TrimSpace(req.PublicName), Image: strings.TrimSpace(req.Image),
		Protocol: strings.ToLower(strings.TrimSpace(req.Protocol)), ResourceType: calipso.ResourceType(strings.TrimSpace(req.ResourceType)),
		LogRegex: req.LogRegex}
	var errs []string
	if req.CPU == nil || strings.TrimSpace(string(*req.CPU)) == "" {
		errs = append(errs, "cpu is required (a number of cores)")
	} else if cpu, err := quotas.ParseCPUs(string(*req.CPU)); err != nil {
		errs = append(errs, err.Error())
	} else {
		im.CPU = cpu
	}
	for _, f := range []struct {
		name, in string
		out      *string
	}{{"memory", req.Memory, &im.Memory}, {"hdd", req.HDD, &im.HDD}} {
		b, err := quotas.ParseGiB(f.in)
		if err != nil {
			errs = append(errs, f.name+": "+err.Error())
			continue
		}
		*f.out = quotas.FormatGiB(b)
	}
	if len(errs) > 0 {
		return calipso.Image{}, fmt.Errorf("%w: %s", errBadRequest, strings.Join(errs, "; "))
	}
	return im, nil
}

// imageList keeps the image list, which every page of the portal asks for and
// admins rarely change, encoded as answered to users and to image managers, for the
// settings' cache_ttl; this server's changes drop it.
type imageList struct {
	ttl   time.Duration
	mu    sync.Mutex
	list  []calipso.Image
	body  [2][]byte // [0] for users, [1] for image managers; shared: read only
	until time.Time
	gen   uint64 // moved by forget: a read that began before it is not kept
}

// json returns the list as a caller with access sees it: image managers see every
// image and its site configuration; others, the images their roles allow.
func (c *imageList) json(ctx context.Context, db *store.Store, a calipso.Access) ([]byte, error) {
	manager := a.Can(calipso.PermManageImages)
	i := 0
	if manager {
		i = 1
	}
	now := time.Now()
	c.mu.Lock()
	list, bodies, fresh, gen := c.list, c.body, now.Before(c.until), c.gen
	c.mu.Unlock()
	if !fresh {
		var err error
		if list, err = db.Images(ctx); err != nil {
			return nil, err
		}
		for j := range bodies {
			if bodies[j], err = encodeImages(list, j == 1, nil); err != nil {
				return nil, err
			}
		}
		c.mu.Lock()
		if c.gen == gen {
			c.list, c.body, c.until = list, bodies, now.Add(c.ttl)
		}
		c.mu.Unlock()
	}
	if manager || a.AllImages {
		return bodies[i], nil
	}
	return encodeImages(list, false, a.MayUse)
}

// encodeImages is the list's JSON, of the images keep allows (nil: all).
func encodeImages(list []calipso.Image, manager bool, keep func(publicName string) bool) ([]byte, error) {
	out := make([]any, 0, len(list))
	for _, im := range list {
		if keep == nil || keep(im.PublicName) {
			out = append(out, toImageJSON(im, manager))
		}
	}
	return json.Marshal(out)
}

func (c *imageList) forget() {
	c.mu.Lock()
	c.list, c.body, c.until = nil, [2][]byte{}, time.Time{}
	c.gen++
	c.mu.Unlock()
}

func (s *server) handleImages() http.HandlerFunc {
	return s.authed(func(w http.ResponseWriter, r *http.Request, u calipso.User) {
		body, err := s.images.json(r.Context(), s.Store, accessOf(r))
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeRawJSON(w, http.StatusOK, body)
	})
}

func (s *server) handleImage() http.HandlerFunc {
	get := s.authed(func(w http.ResponseWriter, r *http.Request, u calipso.User) {
		im, err := s.Store.Image(r.Context(), mux.Vars(r)["public_name"])
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, toImageJSON(im, accessOf(r).Can(calipso.PermManageImages)))
	})
	change := s.allowed(calipso.PermManageImages, func(w http.ResponseWriter, r *http.Request, me calipso.User) {
		name := mux.Vars(r)["public_name"]
		defer s.images.forget()
		if r.Method == http.MethodDelete {
			if err := s.Store.DeleteImage(r.Context(), me.Username, name); err != nil {
				writeError(w, r, s.Log, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		var req imageRequest
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		im, err := req.toImage()
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		if im.PublicName == "" {
			im.PublicName = name
		}
		if im.PublicName != name {
			writeError(w, r, s.Log, fmt.Errorf("%w: public_name %q differs from the path's %q", errBadRequest, im.PublicName, name))
			return
		}
		if req.PidsLimit != nil {
			im.PidsLimit = *req.PidsLimit
		} else if old, err := s.Store.Image(r.Context(), name); err == nil {
			im.PidsLimit = old.PidsLimit
		} else if !errors.Is(err, store.ErrNotFound) {
			writeError(w, r, s.Log, err)
			return
		}
		created, err := s.Store.PutImage(r.Context(), me.Username, im)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		status := http.StatusOK
		if created {
			status = http.StatusCreated
		}
		writeJSON(w, status, toImageJSON(im, true))
	})
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			get(w, r)
			return
		}
		change(w, r)
	}
}
