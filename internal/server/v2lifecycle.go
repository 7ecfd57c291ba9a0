package server

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/calipsoplus/calipso"
)

// extensionV2 is an extension request as the v2 API answers it.
type extensionV2 struct {
	ID          int64      `json:"id"`
	Resource    int64      `json:"resource"`
	RequestedBy string     `json:"requested_by"`
	Hours       float64    `json:"hours"`
	Reason      string     `json:"reason"`
	State       string     `json:"state"` // pending, granted, refused
	DecidedBy   string     `json:"decided_by,omitempty"`
	Created     time.Time  `json:"created_at"`
	Decided     *time.Time `json:"decided_at"`
}

func toExtensionV2(e calipso.Extension) extensionV2 {
	return extensionV2{ID: e.ID, Resource: e.ResourceID, RequestedBy: e.RequestedBy, Hours: e.Duration.Hours(), Reason: e.Reason,
		State: e.State, DecidedBy: e.DecidedBy, Created: e.Created, Decided: e.Decided}
}

func toExtensionsV2(es []calipso.Extension) []extensionV2 {
	out := make([]extensionV2, 0, len(es))
	for _, e := range es {
		out = append(out, toExtensionV2(e))
	}
	return out
}

// maxExtensionHours bounds one request (a year): longer is a new resource.
const maxExtensionHours = 24 * 366

// handleV2Extensions is GET (the record's requests: its owner, or see_all_resources)
// and POST {"hours", "reason"} api/v2/resources/{id}/extensions: its owner asks for
// more lifetime. Granted at once when the new lifetime is within the owner's roles'
// max_lifetime (201, "granted"), otherwise it waits for an admin (202, "pending").
func (s *server) handleV2Extensions() http.HandlerFunc {
	list := s.authedV2(func(w http.ResponseWriter, r *http.Request, u calipso.User) {
		res, err := s.v2Resource(r, u)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		es, err := s.Store.Extensions(r.Context(), res.ID, "")
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, toExtensionsV2(es))
	})
	request := s.authedV2(s.can(calipso.PermLaunch, func(w http.ResponseWriter, r *http.Request, u calipso.User) {
		var req struct {
			Hours  *float64 `json:"hours"`
			Reason string   `json:"reason"`
		}
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		if req.Hours == nil || *req.Hours < 1 || *req.Hours > maxExtensionHours || *req.Hours != float64(int(*req.Hours)) {
			writeError(w, r, s.Log, fmt.Errorf("%w: hours must be a whole number from 1 to %d", errBadRequest, maxExtensionHours))
			return
		}
		res, err := s.v2Resource(r, u)
		if err == nil && res.UserID != u.ID {
			err = fmt.Errorf("%w: only its owner asks for an extension of a resource", errForbidden)
		}
		if err == nil && (res.ExpiresAt == nil || !res.State.Live()) {
			err = calipso.Errorf(calipso.ECONFLICT, "resource %d has no lifetime to extend", res.ID)
		}
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		d := time.Duration(*req.Hours) * time.Hour
		grant := s.Config.Policy.Access(u).WithinLimit(res.Created, res.ExpiresAt.Add(d))
		e, err := s.Store.RequestExtension(r.Context(), u.Username, res.ID, d, req.Reason, grant)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		status := http.StatusCreated
		if !grant {
			status = http.StatusAccepted
		}
		writeJSON(w, status, toExtensionV2(e))
	}))
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			request(w, r)
			return
		}
		list(w, r)
	}
}

// handleV2PendingExtensions is GET api/v2/extensions?state=pending (admin): the
// requests waiting for a decision (state: pending, granted, refused or empty, all).
func (s *server) handleV2PendingExtensions() http.HandlerFunc {
	return s.authedV2(s.can(calipso.PermAdmin, func(w http.ResponseWriter, r *http.Request, _ calipso.User) {
		state := queryOf(r).Get("state")
		switch state {
		case "", calipso.ExtensionPending, calipso.ExtensionGranted, calipso.ExtensionRefused:
		default:
			writeError(w, r, s.Log, fmt.Errorf("%w: state must be pending, granted or refused", errBadRequest))
			return
		}
		es, err := s.Store.Extensions(r.Context(), 0, state)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, toExtensionsV2(es))
	}))
}

// handleV2DecideExtension is POST api/v2/extensions/{id} {"grant": bool} (admin): a
// pending request granted (the expiry moves) or refused (audited either way).
func (s *server) handleV2DecideExtension() http.HandlerFunc {
	return s.authedV2(s.can(calipso.PermAdmin, func(w http.ResponseWriter, r *http.Request, me calipso.User) {
		id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
		if err != nil || id <= 0 {
			writeError(w, r, s.Log, fmt.Errorf("%w: extension id %q is not a positive integer", errBadRequest, mux.Vars(r)["id"]))
			return
		}
		var req struct {
			Grant *bool `json:"grant"`
		}
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		if req.Grant == nil {
			writeError(w, r, s.Log, fmt.Errorf("%w: grant (true or false) is required", errBadRequest))
			return
		}
		e, err := s.Store.DecideExtension(r.Context(), me.Username, id, *req.Grant)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, toExtensionV2(e))
	}))
}
