package server

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/launch"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/quotas"
)

// containerJSON is CalipsoPlus' container record, plus id (compat-api.md).
type containerJSON struct {
	ID                int64     `json:"id"`
	CalipsoUser       int64     `json:"calipso_user"`
	Username          string    `json:"username"`
	CalipsoExperiment string    `json:"calipso_experiment"`
	ContainerID       string    `json:"container_id"`
	ContainerName     string    `json:"container_name"`
	ContainerStatus   string    `json:"container_status"`
	ContainerLogs     string    `json:"container_logs"`
	GuacamoleUsername string    `json:"guacamole_username"`
	GuacamolePassword string    `json:"guacamole_password"`
	CreationDate      time.Time `json:"creation_date"`
	HostPort          string    `json:"host_port"`
	PublicName        string    `json:"public_name"`
	ContainerInfo     string    `json:"container_info"`
	Image             *int64    `json:"image"`
	NumCPUs           float64   `json:"num_cpus"`
	MemoryAllocated   string    `json:"memory_allocated"`
	HDDAllocated      string    `json:"hdd_allocated"`
	// Calipso's own (the frontend reads none of them): when the lifetime ends, and
	// since when the resource is idle.
	ExpiresAt *time.Time `json:"expires_at"`
	IdleSince *time.Time `json:"idle_since"`
}

// compatStatus maps our states to the statuses the frontend knows: "created" is the
// only one it takes as up ("running" shows as a red error).
func compatStatus(s calipso.State) string {
	switch s {
	case calipso.Pending, calipso.Stopping:
		return "busy"
	case calipso.Running:
		return "created"
	case calipso.Stopped:
		return "stopped"
	case calipso.Removed:
		return "removed"
	default:
		return "error"
	}
}

// notCreatedYet is what the original showed as container_id while launching.
const notCreatedYet = "not created yet"

// toContainerJSON renders a record with its Guacamole credentials: answers go
// through toContainerJSONFor, which keeps them from those who may not have them.
func toContainerJSON(r calipso.Resource) containerJSON {
	session, proposal := calipso.SplitExperiment(r.Experiment)
	id := r.EngineID
	if id == "" {
		id = notCreatedYet
	}
	return containerJSON{
		ID: r.ID, CalipsoUser: r.UserID, Username: r.Username, CalipsoExperiment: session,
		ContainerID: id, ContainerName: r.EngineName, ContainerStatus: compatStatus(r.State),
		ContainerLogs: r.Error, GuacamoleUsername: r.GuacamoleUsername, GuacamolePassword: r.GuacamolePassword,
		CreationDate: r.Created.UTC(), HostPort: r.HostPort, PublicName: r.PublicName, ContainerInfo: proposal,
		Image: r.ImageID, NumCPUs: r.CPU, MemoryAllocated: quotas.FormatGiB(r.MemoryBytes), HDDAllocated: quotas.FormatGiB(r.DiskBytes),
		ExpiresAt: r.ExpiresAt, IdleSince: r.IdleSince,
	}
}

// toContainerJSONFor renders a record for the request's caller: another user's
// Guacamole credentials only to holders of support_access.
func (s *server) toContainerJSONFor(r *http.Request, res calipso.Resource) containerJSON {
	c := toContainerJSON(res)
	if !ownerOrSupport(r, res.UserID) {
		c.GuacamoleUsername, c.GuacamolePassword = "", ""
	}
	return c
}

func (s *server) toContainersJSONFor(r *http.Request, rs []calipso.Resource) []containerJSON {
	out := make([]containerJSON, 0, len(rs))
	for _, res := range rs {
		out = append(out, s.toContainerJSONFor(r, res))
	}
	return out
}

func (s *server) handleRun() http.HandlerFunc {
	return s.stateChangingGET(s.own(calipso.PermAdmin, func(w http.ResponseWriter, r *http.Request, _, target calipso.User) {
		v := mux.Vars(r)
		if err := s.mayLaunchAs(r, target, v["experiment"]); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		res, err := s.Resources.Launch(r.Context(), target, v["experiment"], v["public_name"])
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeJSON(w, http.StatusCreated, s.toContainerJSONFor(r, res))
	}))
}

// mayLaunch checks that access allows u to launch ref. An experiment session needs
// the launch permission. An own resource (ref without "~") needs launch_own, or the
// user office's authorisation: the frontend offers the "Own resource" launcher only
// when login/type/ says so, and the server holds to the same answer. A token's scope
// is never widened by the office.
func (s *server) mayLaunch(ctx context.Context, a calipso.Access, u calipso.User, ref string) error {
	if !launch.IsOwnResource(ref) {
		if !a.Can(calipso.PermLaunch) {
			return fmt.Errorf("%w: launching needs the launch permission", errForbidden)
		}
		return nil
	}
	if a.Can(calipso.PermLaunchOwn) {
		return nil
	}
	if c, _ := ctx.Value(callerKey{}).(caller); c.token != nil {
		return fmt.Errorf("%w: the token's scope does not include launch_own", errForbidden)
	}
	ok, err := s.authorised(ctx, u)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %s may not launch own resources (the user office does not authorise it, and no role gives launch_own)", errForbidden, u.Username)
	}
	return nil
}

// ownedResource finds the record named in the path and checks it is target's.
func (s *server) ownedResource(r *http.Request, target calipso.User) (calipso.Resource, error) {
	v := mux.Vars(r)
	res, err := s.Store.ResourceByName(r.Context(), v["name"])
	if err != nil {
		return calipso.Resource{}, err
	}
	if res.UserID != target.ID {
		// Same answer as for an unknown name: don't reveal other users' resources.
		return calipso.Resource{}, fmt.Errorf("resource %q: %w", v["name"], store.ErrNotFound)
	}
	if pn := v["public_name"]; pn != "" && pn != res.PublicName {
		return calipso.Resource{}, fmt.Errorf("%w: resource %q runs %q, not %q", errBadRequest, v["name"], res.PublicName, pn)
	}
	return res, nil
}

func (s *server) handleStop() http.HandlerFunc {
	return s.stateChangingGET(s.own(calipso.PermAdmin, func(w http.ResponseWriter, r *http.Request, _, target calipso.User) {
		res, err := s.ownedResource(r, target)
		if err == nil {
			res, err = s.Resources.Stop(r.Context(), res)
		}
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, s.toContainerJSONFor(r, res))
	}))
}

func (s *server) handleRemove() http.HandlerFunc {
	return s.stateChangingGET(s.own(calipso.PermAdmin, func(w http.ResponseWriter, r *http.Request, _, target calipso.User) {
		res, err := s.ownedResource(r, target)
		if err == nil {
			res, err = s.Resources.Remove(r.Context(), res)
		}
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, s.toContainerJSONFor(r, res))
	}))
}

// shownStates are the records a user's list shows: the live ones, launching or up
// (which are also what the used quota counts). Stopped, removed and failed records
// are not listed, so that a failed launch leaves no card behind.
var shownStates = calipso.LiveStates

func (s *server) handleUserContainers() http.HandlerFunc {
	return s.own(calipso.PermSeeAllResources, func(w http.ResponseWriter, r *http.Request, _, target calipso.User) {
		rs, err := s.Store.Resources(r.Context(), store.ResourceFilter{UserID: target.ID, States: shownStates})
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, s.toContainersJSONFor(r, rs))
	})
}

func (s *server) handleAllContainers(states []calipso.State) http.HandlerFunc {
	return s.allowed(calipso.PermSeeAllResources, func(w http.ResponseWriter, r *http.Request, _ calipso.User) {
		rs, err := s.Store.Resources(r.Context(), store.ResourceFilter{States: states})
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, s.toContainersJSONFor(r, rs))
	})
}

func (s *server) handleContainer() http.HandlerFunc {
	return s.allowed(calipso.PermSeeAllResources, func(w http.ResponseWriter, r *http.Request, _ calipso.User) {
		id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
		if err != nil || id <= 0 {
			writeError(w, r, s.Log, fmt.Errorf("%w: container id must be a positive number", errBadRequest))
			return
		}
		res, err := s.Store.Resource(r.Context(), id)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, s.toContainerJSONFor(r, res))
	})
}
