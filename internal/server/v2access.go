package server

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/store"
)

// meV2 is GET api/v2/me: who the caller is and what it may do.
type meV2 struct {
	Username    string               `json:"username"`
	Roles       []string             `json:"roles"`
	Permissions []calipso.Permission `json:"permissions"`
	Quota       quotaJSON            `json:"quota"`
	// Via is how the request proved it: session, oidc or token.
	Via   string   `json:"via"`
	Token *tokenV2 `json:"token,omitempty"`
}

func (s *server) handleV2Me() http.HandlerFunc {
	return s.authedV2(func(w http.ResponseWriter, r *http.Request, u calipso.User) {
		c := callerOf(r)
		q, err := s.quotaOf(r, u)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		out := meV2{Username: u.Username, Roles: nonNil(c.access.Roles), Permissions: nonNil(c.access.Permissions),
			Quota: toQuotaJSON(q), Via: c.via}
		if c.token != nil {
			t := toTokenV2(*c.token)
			out.Token = &t
		}
		writeJSON(w, http.StatusOK, out)
	})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// handleV2Resources is GET api/v2/resources: the caller's live resources; with
// all=true every user's, for holders of see_all_resources.
func (s *server) handleV2Resources() http.HandlerFunc {
	return s.authedV2(func(w http.ResponseWriter, r *http.Request, u calipso.User) {
		f := store.ResourceFilter{UserID: u.ID, States: calipso.LiveStates}
		all, err := wantAll(r, calipso.PermSeeAllResources)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		if all {
			f.UserID = 0
		}
		rs, err := s.Store.Resources(r.Context(), f)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		out := make([]resourceV2, 0, len(rs))
		for _, res := range rs {
			out = append(out, s.toResourceV2(res))
		}
		writeJSON(w, http.StatusOK, out)
	})
}

// wantAll reads ?all=true|false: every user's, which needs perm.
func wantAll(r *http.Request, perm calipso.Permission) (bool, error) {
	switch queryOf(r).Get("all") {
	case "", "false":
		return false, nil
	case "true":
		if !accessOf(r).Can(perm) {
			return false, fmt.Errorf("%w: all=true needs the %s permission", errForbidden, perm)
		}
		return true, nil
	default:
		return false, fmt.Errorf("%w: all must be true or false", errBadRequest)
	}
}

// connectionV2 is how to reach a running resource: its URL or port, and for
// desktops the Guacamole credentials.
type connectionV2 struct {
	Resource          int64  `json:"resource"`
	Protocol          string `json:"protocol"`
	HostPort          string `json:"host_port"`
	GuacamoleUsername string `json:"guacamole_username,omitempty"`
	GuacamolePassword string `json:"guacamole_password,omitempty"`
}

// handleV2Connection is GET api/v2/resources/{id}/connection: to the owner, and to
// holders of support_access helping them (each such access is audited, and refused
// when the audit cannot be written).
func (s *server) handleV2Connection() http.HandlerFunc {
	return s.authedV2(func(w http.ResponseWriter, r *http.Request, u calipso.User) {
		res, err := s.v2Resource(r, u)
		if err == nil && !ownerOrSupport(r, res.UserID) {
			err = fmt.Errorf("%w: another user's connection needs the support_access permission", errForbidden)
		}
		if err == nil && res.State != calipso.Running {
			err = calipso.Errorf(calipso.ECONFLICT, "resource %d is %s, not running", res.ID, res.State)
		}
		if err == nil && res.UserID != u.ID {
			err = s.Store.RecordAction(r.Context(), u.Username, "support_access", "resource", strconv.FormatInt(res.ID, 10),
				map[string]any{"owner": res.Username, "via": callerOf(r).via})
		}
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, connectionV2{Resource: res.ID, Protocol: res.Protocol, HostPort: res.HostPort,
			GuacamoleUsername: res.GuacamoleUsername, GuacamolePassword: res.GuacamolePassword})
	})
}

// tokenV2 is an API token as listed: never its secret.
type tokenV2 struct {
	ID        int64                `json:"id"`
	Owner     string               `json:"owner"`
	Name      string               `json:"name"`
	Scope     []calipso.Permission `json:"scope"`
	CreatedBy string               `json:"created_by"`
	Created   time.Time            `json:"created_at"`
	Expires   time.Time            `json:"expires_at"`
	LastUsed  *time.Time           `json:"last_used_at"`
	Revoked   *time.Time           `json:"revoked_at"`
}

func toTokenV2(t calipso.Token) tokenV2 {
	return tokenV2{ID: t.ID, Owner: t.Username, Name: t.Name, Scope: nonNil(t.Scope), CreatedBy: t.CreatedBy,
		Created: t.Created, Expires: t.Expires, LastUsed: t.LastUsed, Revoked: t.Revoked}
}

// notByToken refuses callers that came with an API token: a token never makes,
// lists or revokes tokens, so that a leaked one cannot outlive its revocation.
func (s *server) notByToken(h func(w http.ResponseWriter, r *http.Request, u calipso.User)) func(w http.ResponseWriter, r *http.Request, u calipso.User) {
	return func(w http.ResponseWriter, r *http.Request, u calipso.User) {
		if callerOf(r).via == viaToken {
			writeError(w, r, s.Log, fmt.Errorf("%w: API tokens are managed with a login session or an OpenID token, not with an API token", errForbidden))
			return
		}
		h(w, r, u)
	}
}

// handleV2Tokens is GET api/v2/tokens (the caller's; all=true every user's, for
// admins) and POST api/v2/tokens {"name", "scope": [permissions], "expires_in":
// seconds, "username": a service account, admins only}: 201 with the secret, shown
// this once.
func (s *server) handleV2Tokens() http.HandlerFunc {
	list := s.authedV2(s.notByToken(func(w http.ResponseWriter, r *http.Request, u calipso.User) {
		owner := u.ID
		all, err := wantAll(r, calipso.PermAdmin)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		if all {
			owner = 0
		}
		ts, err := s.Store.Tokens(r.Context(), owner)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		out := make([]tokenV2, 0, len(ts))
		for _, t := range ts {
			out = append(out, toTokenV2(t))
		}
		writeJSON(w, http.StatusOK, out)
	}))
	create := s.authedV2(s.notByToken(func(w http.ResponseWriter, r *http.Request, me calipso.User) {
		var req struct {
			Name      string    `json:"name"`
			Scope     *[]string `json:"scope"`
			ExpiresIn *int64    `json:"expires_in"` // seconds
			Username  string    `json:"username"`
		}
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		owner, have := me, accessOf(r).Permissions
		if req.Username != "" && req.Username != me.Username {
			// A service account: an admin makes it (if new) and its token.
			if !accessOf(r).Can(calipso.PermAdmin) {
				writeError(w, r, s.Log, fmt.Errorf("%w: a token for another account needs the admin permission", errForbidden))
				return
			}
			if !store.ValidUsername(req.Username) {
				writeError(w, r, s.Log, fmt.Errorf("%w: %q cannot name an account", errBadRequest, req.Username))
				return
			}
			var err error
			if owner, err = s.Store.EnsureUser(r.Context(), req.Username); err != nil {
				writeError(w, r, s.Log, err)
				return
			}
			have = s.Config.Policy.Access(owner).Permissions
		}
		scope := slices.Clone(have)
		if req.Scope != nil {
			scope = nil
			for _, p := range *req.Scope {
				perm, err := calipso.ParsePermission(p)
				if err != nil {
					writeError(w, r, s.Log, fmt.Errorf("%w: scope: %s", errBadRequest, calipso.ErrorMessage(err)))
					return
				}
				if !slices.Contains(scope, perm) {
					scope = append(scope, perm)
				}
			}
		}
		if missing := scopeWithin(scope, have); len(missing) > 0 {
			writeError(w, r, s.Log, fmt.Errorf("%w: %s does not hold %v, so a token of it cannot", errForbidden, owner.Username, missing))
			return
		}
		life := s.Config.TokenLifetime
		if req.ExpiresIn != nil {
			maxSeconds := int64(s.Config.TokenMaxLifetime / time.Second)
			if *req.ExpiresIn <= 0 || *req.ExpiresIn > maxSeconds {
				writeError(w, r, s.Log, fmt.Errorf("%w: expires_in must be from 1 to %d seconds", errBadRequest, maxSeconds))
				return
			}
			life = time.Duration(*req.ExpiresIn) * time.Second
		}
		t, secret, err := s.Store.CreateToken(r.Context(), me.Username, owner.ID, req.Name, scope, time.Now().Add(life))
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusCreated, struct {
			tokenV2
			Secret string `json:"secret"`
		}{toTokenV2(t), secret})
	}))
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			create(w, r)
			return
		}
		list(w, r)
	}
}

// handleV2Token is DELETE api/v2/tokens/{id}: its owner or an admin revokes it (204;
// revoking a revoked token is success). Another user's token is answered as unknown.
func (s *server) handleV2Token() http.HandlerFunc {
	return s.authedV2(s.notByToken(func(w http.ResponseWriter, r *http.Request, u calipso.User) {
		id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
		if err != nil || id <= 0 {
			writeError(w, r, s.Log, fmt.Errorf("%w: token id %q is not a positive integer", errBadRequest, mux.Vars(r)["id"]))
			return
		}
		t, err := s.Store.Token(r.Context(), id)
		if err == nil && t.UserID != u.ID && !accessOf(r).Can(calipso.PermAdmin) {
			err = fmt.Errorf("token %d: %w", id, store.ErrNotFound)
		}
		if err == nil {
			err = s.Store.RevokeToken(r.Context(), u.Username, id)
		}
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
}

// rolesV2 is a user's roles: those granted here (which PUT sets) and all it holds.
type rolesV2 struct {
	Username string   `json:"username"`
	Granted  []string `json:"granted"`
	Roles    []string `json:"roles"`
}

// handleV2UserRoles is GET and PUT api/v2/users/{username}/roles {"roles": [...]}:
// admins read and grant roles (those mapped from a login stay as the login says).
func (s *server) handleV2UserRoles() http.HandlerFunc {
	return s.authedV2(s.can(calipso.PermAdmin, func(w http.ResponseWriter, r *http.Request, me calipso.User) {
		name := mux.Vars(r)["username"]
		if r.Method == http.MethodPut {
			var req struct {
				Roles *[]string `json:"roles"`
			}
			if err := decodeJSON(r, &req); err != nil {
				writeError(w, r, s.Log, err)
				return
			}
			if req.Roles == nil {
				writeError(w, r, s.Log, fmt.Errorf("%w: roles is required (an empty list takes every granted role)", errBadRequest))
				return
			}
			policy := s.Config.Policy
			if policy.Roles == nil {
				policy = calipso.DefaultPolicy()
			}
			for _, role := range *req.Roles {
				if _, ok := policy.Roles[role]; !ok {
					writeError(w, r, s.Log, fmt.Errorf("%w: no role %q here (the settings' [access.roles] define them)", errBadRequest, role))
					return
				}
			}
			if _, err := s.Store.SetRoles(r.Context(), me.Username, name, store.RoleGranted, *req.Roles); err != nil {
				writeError(w, r, s.Log, err)
				return
			}
			s.sessions.forgetUser(name)
		}
		target, err := s.Store.User(r.Context(), name)
		var granted []string
		if err == nil {
			granted, err = s.Store.GrantedRoles(r.Context(), name)
		}
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, rolesV2{Username: name, Granted: nonNil(granted), Roles: nonNil(s.Config.Policy.Access(target).Roles)})
	}))
}
