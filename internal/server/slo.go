package server

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/securecookie"

	"github.com/calipsoplus/calipso/federation"
	"github.com/calipsoplus/calipso/internal/store"
)

// Single logout in native SAML mode. The frontend logs an Umbrella user out with
// GET umbrella/logout/ (which ends the login session) and then sends the browser to
// <host>/Shibboleth.sso/Logout?return=<frontend>, outside the base path, where the
// session's cookie does not go. So a SAML login also leaves sloCookie there: what
// names the login at the IdP. Shibboleth.sso/Logout ends every session of that login
// and sends the browser to the IdP's single logout, whose answer (at saml/slo) sends
// it on to the frontend. The IdP's own LogoutRequests (a logout at the IdP or at
// another service) arrive at saml/slo too and end the sessions they name.

const (
	sloCookie     = "calipso_slo"
	sloCookiePath = "/Shibboleth.sso/"
)

// sloRef is what sloCookie holds.
type sloRef struct {
	NameID       string `json:"i"`
	Format       string `json:"f,omitempty"`
	SessionIndex string `json:"s,omitempty"`
}

func newSLOCodec(secret []byte, maxAge time.Duration) *securecookie.SecureCookie {
	c := securecookie.New(deriveKey(secret, "calipso single logout hash"), deriveKey(secret, "calipso single logout block"))
	c.MaxAge(int(maxAge.Seconds()))
	c.SetSerializer(securecookie.JSONEncoder{})
	return c
}

// rememberSAMLLogin ties the login session just started to the IdP's login id, for
// single logout: in the database (the IdP's LogoutRequest finds it) and in sloCookie
// (Shibboleth.sso/Logout finds it). A failure is logged: the login stands, and only
// single logout will not find it.
func (s *server) rememberSAMLLogin(w http.ResponseWriter, r *http.Request, id federatedIdentity) {
	if id.NameID == "" || s.SAML == nil {
		return
	}
	if err := s.Store.SetHTTPSessionSSO(r.Context(), s.session(r).ID, store.SSOSubject(id.NameID), id.SessionIndex); err != nil {
		s.Log.WarnContext(r.Context(), "single logout will not find this login", "err", err)
		return
	}
	v, err := s.sloLogins.Encode(sloCookie, sloRef{NameID: id.NameID, Format: id.Format, SessionIndex: id.SessionIndex})
	if err != nil {
		s.Log.WarnContext(r.Context(), "single logout will not find this login", "err", err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sloCookie, Value: v, Path: sloCookiePath, MaxAge: int(s.Config.Auth.SessionMaxAge.Seconds()),
		HttpOnly: true, Secure: s.Config.Auth.SecureCookies || client(r).scheme == "https", SameSite: http.SameSiteLaxMode})
}

// logoutTarget is ?return= when it is the frontend (never elsewhere: an open
// redirect), else the frontend's root.
func (s *server) logoutTarget(ret string) string {
	if ret != "" && sameOrigin(ret, s.Config.FrontendURL) {
		return ret
	}
	return s.frontendURL("/")
}

// handleShibbolethLogout stands in for mod_shib's logout handler in native SAML mode:
// it ends the login session and the federated identity, and, for a SAML login, every
// session of that login and the login at the IdP (single logout), which then sends
// the browser to ?return= (the frontend).
func (s *server) handleShibbolethLogout() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := s.endSession(w, r); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		s.forgetIdentity(w)
		target := s.logoutTarget(queryOf(r).Get("return"))
		var ref sloRef
		c, err := r.Cookie(sloCookie)
		if err != nil || s.sloLogins.Decode(sloCookie, c.Value, &ref) != nil || ref.NameID == "" {
			http.Redirect(w, r, target, http.StatusFound) // no SAML login here: nothing more to end
			return
		}
		http.SetCookie(w, &http.Cookie{Name: sloCookie, Value: "", Path: sloCookiePath, MaxAge: -1, HttpOnly: true})
		s.endSAMLSessions(r, ref.NameID, ref.SessionIndex)
		err = s.SAML.StartLogout(w, r, federation.Session{NameID: ref.NameID, NameIDFormat: ref.Format, SessionIndex: ref.SessionIndex}, target)
		switch {
		case errors.Is(err, federation.ErrNoSingleLogout):
			http.Redirect(w, r, target, http.StatusFound)
		case err != nil:
			s.Log.ErrorContext(r.Context(), "single logout: cannot reach the identity provider", "err", err)
			http.Redirect(w, r, target, http.StatusFound) // Calipso's sessions are over; the IdP's may not be
		}
	}
}

// endSAMLSessions ends the login sessions of the IdP's login (all of nameID's when
// sessionIndex is ""), and has the caches forget them.
func (s *server) endSAMLSessions(r *http.Request, nameID, sessionIndex string) int {
	names, err := s.Store.EndHTTPSessionsBySSO(r.Context(), store.SSOSubject(nameID), sessionIndex)
	if err != nil {
		s.Log.ErrorContext(r.Context(), "single logout: end sessions", "err", err)
	}
	for _, n := range names {
		s.sessions.forgetUser(n) // every cached session of the account: none outlives its row
	}
	return len(names)
}

// handleSLO is the SAML single logout endpoint (GET for HTTP-Redirect, POST for
// HTTP-POST): the IdP's answer to Shibboleth.sso/Logout's request sends the browser
// on to the frontend; the IdP's own LogoutRequest ends the sessions it names and is
// answered with a LogoutResponse.
func (s *server) handleSLO() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		m, err := s.SAML.ConsumeLogout(w, r)
		if err != nil {
			s.Log.WarnContext(r.Context(), "single logout message refused", "err", err, "client", client(r).addr)
			writeError(w, r, s.Log, fmt.Errorf("%w: the logout message was refused", errBadRequest))
			return
		}
		if !m.Request {
			if m.Status != "urn:oasis:names:tc:SAML:2.0:status:Success" {
				s.Log.WarnContext(r.Context(), "single logout: the identity provider ended it only in part", "status", m.Status)
			}
			http.Redirect(w, r, s.logoutTarget(m.RelayState), http.StatusFound)
			return
		}
		n := s.endSAMLSessions(r, m.NameID, m.SessionIndex)
		s.Log.InfoContext(r.Context(), "single logout from the identity provider", "sessions", n)
		if err := s.SAML.RespondLogout(w, r, m.ID, m.RelayState); err != nil {
			writeError(w, r, s.Log, err)
		}
	}
}
