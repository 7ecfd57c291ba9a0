package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/launch"
	"github.com/calipsoplus/calipso/internal/store"
)

// resourceV2 is a record as the v2 API answers it.
type resourceV2 struct {
	ID         int64  `json:"id"`
	Name       string `json:"name"`
	Owner      string `json:"owner"`
	Experiment string `json:"experiment"`
	Image      string `json:"image"`
	State      string `json:"state"`
	Error      string `json:"error,omitempty"`
	Events     string `json:"events"` // the progress stream's path
	// ExpiresAt is when the lifetime ends (null: never); IdleSince, since when the
	// resource is idle (null: active or not watched); Notice, what the policies are
	// about to do, once its user has been warned.
	ExpiresAt *time.Time `json:"expires_at"`
	IdleSince *time.Time `json:"idle_since"`
	Notice    string     `json:"notice,omitempty"`
}

func (s *server) v2Path(id int64) string {
	return strings.TrimSuffix(s.Config.BasePath, "/") + "/api/v2/resources/" + strconv.FormatInt(id, 10)
}

func (s *server) toResourceV2(r calipso.Resource) resourceV2 {
	return resourceV2{ID: r.ID, Name: r.EngineName, Owner: r.Username, Experiment: r.Experiment, Image: r.PublicName,
		State: string(r.State), Error: r.Error, Events: s.v2Path(r.ID) + "/events", ExpiresAt: r.ExpiresAt, IdleSince: r.IdleSince,
		Notice: s.Config.Reclaim.Notice(r)}
}

// handleV2Launch is POST api/v2/resources {"experiment": "proposal~session" or an
// own resource's id, "image": public name}: 202 with the pending record and its
// Location once the quota is reserved; the launch goes on in the background, its
// progress at …/events.
func (s *server) handleV2Launch() http.HandlerFunc {
	return s.authedV2(func(w http.ResponseWriter, r *http.Request, u calipso.User) {
		var req struct {
			Experiment string `json:"experiment"`
			Image      string `json:"image"`
		}
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		if req.Experiment == "" || req.Image == "" {
			writeError(w, r, s.Log, fmt.Errorf("%w: experiment and image are required", errBadRequest))
			return
		}
		if err := s.mayLaunch(r.Context(), accessOf(r), u, req.Experiment); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		res, err := s.Resources.Begin(r.Context(), u, req.Experiment, req.Image)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		w.Header().Set("Location", s.v2Path(res.ID))
		writeJSON(w, http.StatusAccepted, s.toResourceV2(res))
	})
}

// v2Resource finds the record of the path's id, answering another user's as unknown
// unless the caller may see all resources.
func (s *server) v2Resource(r *http.Request, u calipso.User) (calipso.Resource, error) {
	id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
	if err != nil || id <= 0 {
		return calipso.Resource{}, fmt.Errorf("%w: resource id %q is not a positive integer", errBadRequest, mux.Vars(r)["id"])
	}
	res, err := s.Store.Resource(r.Context(), id)
	if err != nil {
		return calipso.Resource{}, err
	}
	if res.UserID != u.ID && !accessOf(r).Can(calipso.PermSeeAllResources) {
		return calipso.Resource{}, fmt.Errorf("resource %d: %w", id, store.ErrNotFound)
	}
	return res, nil
}

func (s *server) handleV2Resource() http.HandlerFunc {
	return s.authedV2(func(w http.ResponseWriter, r *http.Request, u calipso.User) {
		res, err := s.v2Resource(r, u)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, s.toResourceV2(res))
	})
}

// eventPoll is how often the event stream looks for new events: they are in the
// database, so that a client may follow a launch that another replica runs.
const eventPoll = 200 * time.Millisecond

// lastEventGrace is how long after a launch's record left pending its last event may
// still come: it is written after the record's move, within a couple of seconds.
const lastEventGrace = 5 * time.Second

// handleV2Events is GET api/v2/resources/{id}/events: Server-Sent Events, one per
// stage of the launch (event: the stage; id: its sequence number; data: JSON with
// stage, message and at), ending after ready or failed. A client that reconnects
// with Last-Event-ID gets the events after that one.
func (s *server) handleV2Events() http.HandlerFunc {
	return s.authedV2(func(w http.ResponseWriter, r *http.Request, u calipso.User) {
		res, err := s.v2Resource(r, u)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		after := 0
		if last := r.Header.Get("Last-Event-ID"); last != "" {
			if after, err = strconv.Atoi(last); err != nil || after < 0 {
				writeError(w, r, s.Log, fmt.Errorf("%w: Last-Event-ID %q is not an event id of this stream", errBadRequest, last))
				return
			}
		}
		rc := http.NewResponseController(w)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Accel-Buffering", "no") // proxies must not hold events back
		w.WriteHeader(http.StatusOK)
		ctx := r.Context()
		for {
			// A stream lives as long as the launch, past the server's write timeout.
			_ = rc.SetWriteDeadline(time.Now().Add(time.Minute))
			events, err := s.Resources.Events(ctx, res.ID, after)
			if err != nil {
				s.Log.WarnContext(ctx, "event stream", "resource", res.ID, "err", err)
				return // the client reconnects with Last-Event-ID
			}
			for _, e := range events {
				data, _ := json.Marshal(map[string]any{"stage": e.Stage, "message": e.Message, "at": e.At.Format(time.RFC3339Nano)})
				if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Stage, data); err != nil {
					return
				}
				after = e.Seq
				if e.Stage == launch.EventReady || e.Stage == launch.EventFailed {
					_ = rc.Flush()
					return
				}
			}
			if len(events) > 0 {
				if err := rc.Flush(); err != nil {
					return
				}
			} else if cur, err := s.Store.Resource(ctx, res.ID); err == nil && cur.State != calipso.Pending && time.Since(cur.Updated) > lastEventGrace {
				// Over without a last event (a record made before events were kept, or
				// one whose last event could not be written): nothing more will come.
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(eventPoll):
			}
		}
	})
}
