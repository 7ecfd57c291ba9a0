package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/calipsoplus/calipso/experiments"
	"github.com/calipsoplus/calipso/federation"
	"github.com/calipsoplus/calipso/internal/store"
)

// The Umbrella flow: umbrella/login/ → IdP (or mod_shib) → the identity is kept in this
// browser's session → umbrella/frontend/ → <frontend>/autologin → the frontend reads
// umbrella/session/ and posts it to umbrella/wuo/, where the user office maps the hash
// to the local account that is logged in.

func (s *server) frontendURL(path string) string {
	return strings.TrimSuffix(s.Settings.FrontendURL, "/") + path
}

// apiURL is a path under the base path as the client sees it.
func (s *server) apiURL(r *http.Request, path string) string {
	c := client(r)
	return c.scheme + "://" + c.host + s.Settings.BasePath + path
}

// keepIdentity stores the federated identity in the browser's session.
func (s *server) keepIdentity(w http.ResponseWriter, r *http.Request, id federation.Identity) error {
	sess := s.session(r)
	if err := s.sessions.rotate(r.Context(), sess); err != nil {
		return err
	}
	sess.Values = map[any]any{keyUmbrellaHash: id.EAAHash, keyUmbrellaUID: id.UID}
	sess.Options.MaxAge = int(s.Settings.Auth.SessionMaxAge.Seconds())
	return sess.Save(r, w)
}

func (s *server) handleUmbrellaLogin() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch {
		case s.SAML != nil:
			if err := s.SAML.StartLogin(w, r, s.apiURL(r, "umbrella/frontend/")); err != nil {
				writeError(w, r, s.Log, fmt.Errorf("umbrella login: %w", err))
			}
		case s.Header != nil && s.Settings.Umbrella.LoginURL != "":
			// mod_shib's login handler returns to umbrella/frontend/ with the headers set.
			target := s.Settings.Umbrella.LoginURL
			sep := "?"
			if strings.Contains(target, "?") {
				sep = "&"
			}
			http.Redirect(w, r, target+sep+"target="+urlQueryEscape(s.apiURL(r, "umbrella/frontend/")), http.StatusFound)
		default:
			writeError(w, r, s.Log, fmt.Errorf("%w: Umbrella login is not enabled here", errNotFound))
		}
	}
}

// handleACS consumes the IdP's answer (SAML mode).
func (s *server) handleACS() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, relay, err := s.SAML.ConsumeAssertion(w, r)
		if err != nil {
			s.metrics.login("umbrella", "refused")
			s.Log.WarnContext(r.Context(), "umbrella assertion refused", "err", err, "client", client(r).addr)
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "login failed"})
			return
		}
		if err := s.keepIdentity(w, r, id); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		if relay == "" {
			relay = s.apiURL(r, "umbrella/frontend/")
		}
		http.Redirect(w, r, relay, http.StatusFound)
	}
}

func (s *server) handleUmbrellaFrontend() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.Header != nil {
			// Header mode: mod_shib vouches for the identity; ignored from anyone but
			// a trusted proxy (HeaderMode checks the connection's address).
			if id, ok := s.Header.Identity(r); ok {
				if err := s.keepIdentity(w, r, id); err != nil {
					writeError(w, r, s.Log, err)
					return
				}
			}
		}
		http.Redirect(w, r, s.frontendURL("/autologin"), http.StatusFound)
	}
}

func (s *server) handleUmbrellaSession() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess := s.session(r)
		hash, _ := sess.Values[keyUmbrellaHash].(string)
		uid, _ := sess.Values[keyUmbrellaUID].(string)
		if hash == "" {
			writeJSON(w, http.StatusNotFound, map[string]string{"msg": "session not found"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"EAAHash": hash, "uid": uid})
	}
}

func (s *server) handleUmbrellaWUO() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			EAAHash string `json:"EAAHash"`
			UID     string `json:"uid"`
		}
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		if req.EAAHash == "" || req.UID == "" {
			writeError(w, r, s.Log, fmt.Errorf("%w: EAAHash and uid are required", errBadRequest))
			return
		}
		sess := s.session(r)
		hash, _ := sess.Values[keyUmbrellaHash].(string)
		if hash == "" || hash != req.EAAHash {
			// Only the hash the IdP gave this browser counts: a posted one proves nothing.
			s.metrics.login("umbrella", "refused")
			writeJSON(w, http.StatusForbidden, map[string]string{"msg": "no federated session for this EAAHash"})
			return
		}
		username, err := s.Office.UmbrellaUser(r.Context(), hash)
		if errors.Is(err, experiments.ErrNotFound) || (err == nil && !store.ValidUsername(username)) {
			s.metrics.login("umbrella", "refused")
			writeJSON(w, http.StatusNotFound, map[string]string{"msg": "user not found"})
			return
		}
		if err != nil {
			s.metrics.login("umbrella", "error")
			writeError(w, r, s.Log, err)
			return
		}
		keep := map[string]string{keyUmbrellaHash: hash, keyUmbrellaUID: req.UID}
		if err := s.startSession(w, r, username, keep); err != nil {
			s.metrics.login("umbrella", "error")
			writeError(w, r, s.Log, err)
			return
		}
		s.metrics.login("umbrella", "ok")
		writeJSON(w, http.StatusOK, "Login OK")
	}
}

func (s *server) handleUmbrellaLogout() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := s.endSession(w, r); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, "ok logout")
	}
}
