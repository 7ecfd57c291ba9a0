package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/securecookie"

	"github.com/calipsoplus/calipso/experiments"
	"github.com/calipsoplus/calipso/federation"
	"github.com/calipsoplus/calipso/internal/store"
)

// The Umbrella flow: umbrella/login/ → IdP (or mod_shib) → the identity is kept in this
// browser's session → umbrella/frontend/ → <frontend>/autologin → the frontend reads
// umbrella/session/ and posts it to umbrella/wuo/, where the user office maps the hash
// to the local account that is logged in.

func (s *server) frontendURL(path string) string {
	return strings.TrimSuffix(s.Config.FrontendURL, "/") + path
}

// apiURL is a path under the base path as the client sees it.
func (s *server) apiURL(r *http.Request, path string) string {
	c := client(r)
	return c.scheme + "://" + c.host + s.Config.BasePath + path
}

// federatedCookie holds the identity the IdP (or mod_shib) vouched for, apart from
// the login session: the autologin page calls umbrella/logout/ right before
// umbrella/session/, so an identity kept in the login session would be gone and the
// browser would go round the IdP for ever. It is sealed (signed and encrypted), lives
// a few minutes, and is consumed by a successful umbrella/wuo/.
const federatedCookie = "calipso_federated"

// federatedTTL is how long an identity waits for umbrella/wuo/.
const federatedTTL = 10 * time.Minute

// federatedIdentity is what federatedCookie holds.
type federatedIdentity struct {
	Hash string `json:"h"` // the EAA hash
	UID  string `json:"u"` // the IdP's uid attribute
	// Username is the account the user office maps Hash to, once asked: what
	// umbrella/session/ answers as uid and umbrella/wuo/ logs in.
	Username string `json:"n,omitempty"`
	// Values are the role attribute's (access.saml_attribute), mapped to roles at
	// umbrella/wuo/.
	Values []string `json:"v,omitempty"`
	// NameID and SessionIndex name the IdP's session, for single logout.
	Email        string `json:"e,omitempty"` // where the lifecycle policies' warnings go
	NameID       string `json:"i,omitempty"`
	Format       string `json:"f,omitempty"`
	SessionIndex string `json:"s,omitempty"`
}

// fromFederation is what the cookie keeps of a federated identity.
func fromFederation(id federation.Identity) federatedIdentity {
	return federatedIdentity{Hash: id.EAAHash, UID: id.UID, Values: id.Values, Email: id.Email, NameID: id.NameID, Format: id.NameIDFormat, SessionIndex: id.SessionIndex}
}

// newFederatedCodec seals federatedCookie with keys of its own, derived from the
// secret key.
func newFederatedCodec(secret []byte) *securecookie.SecureCookie {
	c := securecookie.New(deriveKey(secret, "calipso federated identity hash"), deriveKey(secret, "calipso federated identity block"))
	c.MaxAge(int(federatedTTL.Seconds()))
	c.SetSerializer(securecookie.JSONEncoder{})
	return c
}

// deriveKey is a key of its own for one use of the secret key.
func deriveKey(secret []byte, label string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(label))
	return m.Sum(nil)
}

// keepIdentity stores the federated identity in its own cookie.
func (s *server) keepIdentity(w http.ResponseWriter, r *http.Request, id federatedIdentity) error {
	v, err := s.federated.Encode(federatedCookie, id)
	if err != nil {
		return fmt.Errorf("seal federated identity: %w", err)
	}
	http.SetCookie(w, &http.Cookie{Name: federatedCookie, Value: v, Path: s.Config.BasePath, MaxAge: int(federatedTTL.Seconds()),
		HttpOnly: true, Secure: s.Config.Auth.SecureCookies || client(r).scheme == "https", SameSite: http.SameSiteLaxMode})
	return nil
}

// forgetIdentity deletes the federated identity's cookie.
func (s *server) forgetIdentity(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: federatedCookie, Value: "", Path: s.Config.BasePath, MaxAge: -1, HttpOnly: true})
}

// identity returns this browser's federated identity: in header mode from mod_shib's
// headers when a trusted proxy sends them (as the original read them), else from
// federatedCookie.
func (s *server) identity(r *http.Request) (federatedIdentity, bool) {
	if s.Header != nil {
		if id, ok := s.Header.Identity(r); ok && id.EAAHash != "" {
			return fromFederation(id), true
		}
	}
	c, err := r.Cookie(federatedCookie)
	if err != nil {
		return federatedIdentity{}, false
	}
	var id federatedIdentity
	if err := s.federated.Decode(federatedCookie, c.Value, &id); err != nil || id.Hash == "" {
		return federatedIdentity{}, false // forged, expired or from an old key
	}
	return id, true
}

func (s *server) handleUmbrellaLogin() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch {
		case s.SAML != nil:
			if err := s.SAML.StartLogin(w, r, s.apiURL(r, "umbrella/frontend/")); err != nil {
				writeError(w, r, s.Log, fmt.Errorf("umbrella login: %w", err))
			}
		case s.Header != nil && s.Config.UmbrellaLoginURL != "":
			// mod_shib's login handler returns to umbrella/frontend/ with the headers set.
			target := s.Config.UmbrellaLoginURL
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
		if err := s.keepIdentity(w, r, fromFederation(id)); err != nil {
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
				if err := s.keepIdentity(w, r, fromFederation(id)); err != nil {
					writeError(w, r, s.Log, err)
					return
				}
			}
		}
		http.Redirect(w, r, s.frontendURL("/autologin"), http.StatusFound)
	}
}

// umbrellaAccount asks the user office which account hash belongs to.
func (s *server) umbrellaAccount(ctx context.Context, hash string) (string, error) {
	username, err := s.Office.UmbrellaUser(ctx, hash)
	if err == nil && !store.ValidUsername(username) {
		s.Log.WarnContext(ctx, "user office: Umbrella hash maps to an invalid username", "username", username)
		err = fmt.Errorf("umbrella hash: %w", experiments.ErrNotFound)
	}
	return username, err
}

// handleUmbrellaSession answers the federated identity. Its uid is the account the
// user office maps the hash to, since the frontend uses it as the username from then
// on; while the office knows no account (umbrella/wuo/ then answers 404, sending the
// browser to the user office to link one) or cannot be asked, it is the IdP's uid.
func (s *server) handleUmbrellaSession() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := s.identity(r)
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"msg": "session not found"})
			return
		}
		uid := id.Username
		if uid == "" {
			username, err := s.umbrellaAccount(r.Context(), id.Hash)
			switch {
			case err == nil:
				uid, id.Username = username, username
				if err := s.keepIdentity(w, r, id); err != nil {
					writeError(w, r, s.Log, err)
					return
				}
			case errors.Is(err, experiments.ErrNotFound):
				uid = id.UID
			default:
				s.Log.WarnContext(r.Context(), "user office: Umbrella hash (answering the IdP's uid)", "err", err)
				uid = id.UID
			}
		}
		writeJSON(w, http.StatusOK, map[string]string{"EAAHash": id.Hash, "uid": uid})
	}
}

// handleUmbrellaWUO logs in the account the user office maps this browser's
// federated hash to. The posted uid must be that account (what umbrella/session/
// answered): the original logged in whatever uid was posted.
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
		attempt, wait, limit := s.throttle.begin(client(r).addr, req.UID)
		if attempt == nil {
			s.throttled(w, r, "umbrella", limit, wait)
			return
		}
		// Refusals are failures; "user not found" (an identity not linked to an account
		// yet) is the normal way to the user office, not one.
		failed := false
		defer func() { attempt.end(failed) }()
		id, ok := s.identity(r)
		if !ok || subtle.ConstantTimeCompare([]byte(id.Hash), []byte(req.EAAHash)) != 1 {
			// Only the hash the IdP gave this browser counts: a posted one proves nothing.
			failed = true
			s.metrics.login("umbrella", "refused")
			writeJSON(w, http.StatusForbidden, map[string]string{"msg": "no federated session for this EAAHash"})
			return
		}
		username, err := s.umbrellaAccount(r.Context(), id.Hash)
		if errors.Is(err, experiments.ErrNotFound) {
			s.metrics.login("umbrella", "refused")
			writeJSON(w, http.StatusNotFound, map[string]string{"msg": "user not found"})
			return
		}
		if err != nil {
			s.metrics.login("umbrella", "error")
			writeError(w, r, s.Log, err)
			return
		}
		if req.UID != username {
			failed = true
			s.metrics.login("umbrella", "refused")
			writeJSON(w, http.StatusForbidden, map[string]string{"msg": "uid is not the account of this Umbrella identity: use the uid umbrella/session/ answers"})
			return
		}
		if err := s.startSession(w, r, username, nil); err != nil {
			s.metrics.login("umbrella", "error")
			writeError(w, r, s.Log, err)
			return
		}
		s.rememberSAMLLogin(w, r, id)
		s.keepEmail(r.Context(), username, id.Email)
		if s.Config.SAMLRoleAttribute != "" {
			s.mapRoles(r.Context(), username, store.RoleSAML, s.Config.Policy.SAMLRoles(id.Values))
		}
		s.forgetIdentity(w)
		s.metrics.login("umbrella", "ok")
		writeJSON(w, http.StatusOK, "Login OK")
	}
}

// handleUmbrellaLogout ends the login session only: the autologin page calls it right
// before umbrella/session/, which must still find the federated identity.
//
// A browser navigating to it (not the frontend's call) is sent on to the Shibboleth
// logout, mod_shib's behind Apache or this server's in native mode, which ends the
// login at the identity provider too, and returns to the frontend.
func (s *server) handleUmbrellaLogout() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		// Another site must not log the user out: the frontend's calls, as
		// stateChangingGET allows them, and navigations the browser vouches for as
		// this site's own or the user's (Sec-Fetch-Site same-origin or none; a browser
		// too old to say is refused, as a link from anywhere would look the same).
		if err := s.crossOrigin(r); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		if site := r.Header.Get("Sec-Fetch-Site"); navigation(r) && site != "same-origin" && site != "none" {
			writeError(w, r, s.Log, fmt.Errorf("%w: this call changes state and is not a page: call it from the frontend or a script", errCrossSite))
			return
		}
		if err := s.endSession(w, r); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		if navigation(r) {
			if s.Header == nil && s.SAML == nil {
				http.Redirect(w, r, s.frontendURL("/"), http.StatusFound)
				return
			}
			http.Redirect(w, r, "/Shibboleth.sso/Logout?return="+url.QueryEscape(s.frontendURL("/")), http.StatusFound)
			return
		}
		writeJSON(w, http.StatusOK, "ok logout")
	}
}

// sameOrigin reports whether a and b have the same scheme and host.
func sameOrigin(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	return err1 == nil && err2 == nil && ua.Scheme != "" && ua.Host != "" &&
		strings.EqualFold(ua.Scheme, ub.Scheme) && strings.EqualFold(ua.Host, ub.Host)
}
