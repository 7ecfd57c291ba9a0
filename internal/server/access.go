package server

import (
	"context"
	"fmt"
	"net/http"
	"slices"

	"github.com/gorilla/mux"

	"github.com/calipsoplus/calipso"
)

// How a request proved who it is: every check of what it may do reads its Access,
// which a token's scope narrows.
const (
	viaCookie = "session" // the login session's cookie
	viaOIDC   = "oidc"    // a bearer JWT of the OpenID provider
	viaToken  = "token"   // a personal API token
)

// caller is who asks, as authed and authedV2 put it in the request's context.
type caller struct {
	user   calipso.User
	access calipso.Access
	via    string
	token  *calipso.Token // the token used, when via is viaToken
}

type callerKey struct{}

// callerOf is the request's caller; the zero caller (no access) outside authed.
func callerOf(r *http.Request) caller {
	c, _ := r.Context().Value(callerKey{}).(caller)
	return c
}

// accessOf is what the request may do.
func accessOf(r *http.Request) calipso.Access { return callerOf(r).access }

// serveAs runs h for c.
func (s *server) serveAs(w http.ResponseWriter, r *http.Request, c caller, h func(w http.ResponseWriter, r *http.Request, u calipso.User)) {
	infoOf(r).user = c.user.Username
	ctx := context.WithValue(r.Context(), userKey, c.user)
	ctx = context.WithValue(ctx, callerKey{}, c)
	h(w, r.WithContext(ctx), c.user)
}

// authed serves only logged-in users (the login session's cookie); the handler gets
// the user, and accessOf what the user's roles allow.
func (s *server) authed(h func(w http.ResponseWriter, r *http.Request, u calipso.User)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u, err := s.currentUser(r)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		s.serveAs(w, r, caller{user: u, access: s.Config.Policy.Access(u), via: viaCookie}, h)
	}
}

// can serves only callers whose access includes perm.
func (s *server) can(perm calipso.Permission, h func(w http.ResponseWriter, r *http.Request, me calipso.User)) func(w http.ResponseWriter, r *http.Request, me calipso.User) {
	return func(w http.ResponseWriter, r *http.Request, me calipso.User) {
		if !accessOf(r).Can(perm) {
			writeError(w, r, s.Log, fmt.Errorf("%w: this needs the %s permission", errForbidden, perm))
			return
		}
		h(w, r, me)
	}
}

// allowed serves logged-in users (cookie API) whose access includes perm.
func (s *server) allowed(perm calipso.Permission, h func(w http.ResponseWriter, r *http.Request, me calipso.User)) http.HandlerFunc {
	return s.authed(s.can(perm, h))
}

// own serves a <username> path to that user, and to others only with perm: nobody
// reads or acts on another user's experiments, resources or credentials without it.
func (s *server) own(perm calipso.Permission, h func(w http.ResponseWriter, r *http.Request, me, target calipso.User)) http.HandlerFunc {
	return s.authed(s.ownedBy(perm, h))
}

func (s *server) ownedBy(perm calipso.Permission, h func(w http.ResponseWriter, r *http.Request, me, target calipso.User)) func(w http.ResponseWriter, r *http.Request, me calipso.User) {
	return func(w http.ResponseWriter, r *http.Request, me calipso.User) {
		name := mux.Vars(r)["username"]
		if name == me.Username {
			h(w, r, me, me)
			return
		}
		if !accessOf(r).Can(perm) {
			writeError(w, r, s.Log, fmt.Errorf("%w: %s may not act for %s (that needs the %s permission)", errForbidden, me.Username, name, perm))
			return
		}
		target, err := s.Store.User(r.Context(), name)
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		h(w, r, me, target)
	}
}

// mayLaunchAs checks that the caller may launch ref for target: an experiment
// session needs the launch permission, an own resource launch_own or the user
// office's authorisation (login/type/); for another user, admin.
func (s *server) mayLaunchAs(r *http.Request, target calipso.User, ref string) error {
	a, me := accessOf(r), callerOf(r).user
	if target.ID != me.ID && !a.Can(calipso.PermAdmin) {
		return fmt.Errorf("%w: %s may not launch for %s (that needs the admin permission)", errForbidden, me.Username, target.Username)
	}
	return s.mayLaunch(r.Context(), a, target, ref)
}

// ownerOrSupport says whether the caller may have the credentials of a resource
// owned by the user of ownerID: its owner, or holders of support_access.
func ownerOrSupport(r *http.Request, ownerID int64) bool {
	c := callerOf(r)
	return c.user.ID == ownerID || c.access.Can(calipso.PermSupportAccess)
}

// scopeWithin reports the permissions of scope that have is missing.
func scopeWithin(scope, have []calipso.Permission) []calipso.Permission {
	var missing []calipso.Permission
	for _, p := range scope {
		if !slices.Contains(have, p) {
			missing = append(missing, p)
		}
	}
	return missing
}
