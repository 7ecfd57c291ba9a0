package server

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"slices"
	"strings"

	"github.com/gorilla/sessions"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/experiments"
	"github.com/calipsoplus/calipso/internal/store"
)

func rand32() string { return strings.ToLower(rand.Text() + rand.Text())[:32] }

// decodeJSON reads a JSON object body into v: size-limited (limitBody), one value,
// unknown fields ignored as Django REST framework does. Errors are 400s that say why.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		var syntax *json.SyntaxError
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &tooLarge):
			return errTooLarge
		case errors.Is(err, io.EOF):
			return fmt.Errorf("%w: empty body, want a JSON object", errBadRequest)
		case errors.As(err, &syntax):
			return fmt.Errorf("%w: malformed JSON at byte %d", errBadRequest, syntax.Offset)
		case errors.As(err, &typeErr):
			return fmt.Errorf("%w: field %q must be a %s", errBadRequest, typeErr.Field, typeErr.Type)
		default:
			return fmt.Errorf("%w: malformed JSON", errBadRequest)
		}
	}
	if dec.More() {
		return fmt.Errorf("%w: more than one JSON value", errBadRequest)
	}
	return nil
}

// session returns the request's session; a broken store gives an empty one (logged).
func (s *server) session(r *http.Request) *sessions.Session {
	sess, err := s.sessions.Get(r, sessionCookie)
	if err != nil {
		s.Log.WarnContext(r.Context(), "session store", "err", err)
	}
	return sess
}

// currentUser returns the logged-in user, or errUnauthorized.
func (s *server) currentUser(r *http.Request) (calipso.User, error) {
	if u, ok := r.Context().Value(userKey).(calipso.User); ok {
		return u, nil
	}
	sess, err := s.sessions.Get(r, sessionCookie)
	if err != nil {
		return calipso.User{}, err
	}
	name, _ := sess.Values[keyUsername].(string)
	if name == "" {
		return calipso.User{}, errUnauthorized
	}
	if u, ok := sess.Values[sessionUserKey{}].(calipso.User); ok && u.Username == name {
		return u, nil
	}
	u, err := s.Store.User(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) { // removed since: the session is worthless
		return calipso.User{}, errUnauthorized
	}
	return u, err
}

// startSession logs username in on this browser, with a fresh session token.
func (s *server) startSession(w http.ResponseWriter, r *http.Request, username string, keep map[string]string) error {
	u, err := s.Store.RecordLogin(r.Context(), username)
	if err != nil {
		return err
	}
	s.sessions.forgetUser(u.Username) // last_login moved
	sess := s.session(r)
	if err := s.sessions.rotate(r.Context(), sess); err != nil {
		return err
	}
	sess.Values = map[any]any{keyUsername: u.Username}
	for k, v := range keep {
		sess.Values[k] = v
	}
	sess.Options.MaxAge = int(s.Config.Auth.SessionMaxAge.Seconds())
	sess.Options.Secure = s.Config.Auth.SecureCookies || client(r).scheme == "https"
	if err := sess.Save(r, w); err != nil {
		return err
	}
	// The new session's CSRF token: the frontend reads the cookie for each call.
	s.setCSRFCookie(w, r, s.csrfTokenFor(sess.ID))
	return nil
}

func (s *server) handleLogin() http.HandlerFunc {
	type request struct {
		Username *string `json:"username"`
		Password *string `json:"password"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.Config.Auth.LocalLogin {
			writeError(w, r, s.Log, fmt.Errorf("%w: local login is disabled: use Umbrella", errForbidden))
			return
		}
		var req request
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		if req.Username == nil || req.Password == nil || *req.Username == "" || *req.Password == "" {
			writeError(w, r, s.Log, fmt.Errorf("%w: username and password are required", errBadRequest))
			return
		}
		attempt, wait, limit := s.throttle.begin(client(r).addr, *req.Username)
		if attempt == nil {
			s.throttled(w, r, "local", limit, wait)
			return
		}
		failed := false
		defer func() { attempt.end(failed) }()
		if !store.ValidUsername(*req.Username) {
			failed = true
			s.metrics.login("local", "refused")
			writeJSON(w, http.StatusUnauthorized, "Unable to authenticate")
			return
		}
		err := s.Office.Login(r.Context(), *req.Username, *req.Password)
		switch {
		case errors.Is(err, experiments.ErrBadCredentials), errors.Is(err, experiments.ErrNotFound), errors.Is(err, experiments.ErrBadRequest):
			failed = true
			s.metrics.login("local", "refused")
			writeJSON(w, http.StatusUnauthorized, "Unable to authenticate")
			return
		case err != nil:
			s.metrics.login("local", "error")
			writeError(w, r, s.Log, fmt.Errorf("login: %w", err))
			return
		}
		if err := s.startSession(w, r, *req.Username, nil); err != nil {
			s.metrics.login("local", "error")
			writeError(w, r, s.Log, err)
			return
		}
		s.metrics.login("local", "ok")
		writeJSON(w, http.StatusOK, "Login OK")
	}
}

// endSession ends the browser's login session. When the session cannot be read (the
// database is down) it cannot be ended either: the browser's cookie is still dropped,
// and the error says the server-side session lives on.
func (s *server) endSession(w http.ResponseWriter, r *http.Request) error {
	sess, err := s.sessions.Get(r, sessionCookie)
	sess.Options.MaxAge = -1
	if err != nil {
		http.SetCookie(w, sessions.NewCookie(sessionCookie, "", sess.Options))
		return err
	}
	if err := sess.Save(r, w); err != nil {
		return err
	}
	s.setCSRFCookie(w, r, rand32()) // the ended session's token is worth nothing now
	return nil
}

// handleLogout ends the session; refused cross-site (stateChangingGET): another site
// must not log the user out.
func (s *server) handleLogout() http.HandlerFunc {
	return s.stateChangingGET(func(w http.ResponseWriter, r *http.Request) {
		if err := s.endSession(w, r); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, "Logout OK")
	})
}

func (s *server) handleAuthenticated() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u, err := s.currentUser(r)
		if errors.Is(err, errUnauthorized) {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"authenticated": "false"})
			return
		}
		if err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"username": u.Username, "authenticated": "true"})
	}
}

func (s *server) handleSettings() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"local_auth": s.Config.Auth.LocalLogin})
	}
}

// authorised says whether u may use the facility's privileged resources (the own
// resource launcher): everyone with default_authorised, else the user office's
// answer; an account the office does not know is not. With access.office_role set,
// the answer also gives or takes that role.
func (s *server) authorised(ctx context.Context, u calipso.User) (bool, error) {
	if s.Config.Auth.DefaultAuthorised {
		return true, nil
	}
	ok, err := s.Office.IsAuthorized(ctx, u.Username)
	if errors.Is(err, experiments.ErrNotFound) {
		ok, err = false, nil
	}
	if err == nil && s.Config.Policy.OfficeRole != "" {
		var roles []string
		if ok {
			roles = []string{s.Config.Policy.OfficeRole}
		}
		s.mapRoles(ctx, u.Username, store.RoleOffice, roles)
	}
	return ok, err
}

// mapRoles makes the roles source gives username exactly roles, and says whether
// they changed. A failure is logged, not fatal: the login goes on with the roles
// held before.
func (s *server) mapRoles(ctx context.Context, username, source string, roles []string) (changed bool) {
	changed, err := s.Store.SetRoles(ctx, source, username, source, roles)
	if err != nil {
		s.Log.WarnContext(ctx, "map roles at login", "user", username, "source", source, "err", err)
		return false
	}
	if changed {
		s.sessions.forgetUser(username)
	}
	return changed
}

// keepEmail records the address the identity provider gives for username (the
// lifecycle policies write to it); a failure is logged, the login stands.
func (s *server) keepEmail(ctx context.Context, username, email string) {
	if email == "" {
		return
	}
	if _, err := mail.ParseAddress(email); err != nil {
		s.Log.InfoContext(ctx, "the identity provider's e-mail address is not one: not kept", "user", username)
		return
	}
	if err := s.Store.SetProfile(ctx, "login", username, email, ""); err != nil {
		s.Log.WarnContext(ctx, "keep the e-mail address", "user", username, "err", err)
	}
}

// withoutRole is u without the role named (none when it is "").
func withoutRole(u calipso.User, role string) calipso.User {
	if role != "" {
		u.Roles = slices.DeleteFunc(slices.Clone(u.Roles), func(r string) bool { return r == role })
	}
	return u
}

func (s *server) handleLoginType() http.HandlerFunc {
	return s.authed(func(w http.ResponseWriter, r *http.Request, u calipso.User) {
		// A role other than the office's may give launch_own; the office's own role is
		// the office's answer, asked again here (every Resources page asks).
		if s.Config.Policy.Access(withoutRole(u, s.Config.Policy.OfficeRole)).Can(calipso.PermLaunchOwn) {
			writeJSON(w, http.StatusOK, map[string]bool{"result": true})
			return
		}
		ok, err := s.authorised(r.Context(), u)
		if err != nil {
			// As the original: false. The Resources page loads its images and resources
			// only after this call succeeds, so a failure would leave it empty.
			s.Log.WarnContext(r.Context(), "user office: is authorised (answering false)", "user", u.Username, "err", err)
			ok = false
		}
		writeJSON(w, http.StatusOK, map[string]bool{"result": ok})
	})
}
