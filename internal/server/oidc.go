package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/securecookie"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/federation/oidc"
	"github.com/calipsoplus/calipso/internal/store"
)

// OpenID is the OpenID Connect login (federation/oidc.Provider).
type OpenID interface {
	Begin(ctx context.Context) (string, oidc.Pending, error)
	Finish(ctx context.Context, p oidc.Pending, state, code string) (oidc.Identity, error)
	VerifyBearer(ctx context.Context, raw string) (oidc.Identity, error)
	LogoutURL(ctx context.Context, idTokenHint, returnTo string) string
}

// The OpenID flow (as mozilla-django-oidc served it to the original): the frontend
// sends the browser to oidc/authenticate/ → the provider → oidc/callback/, which logs
// the account of the username claim in and sends the browser to the frontend; the
// frontend then reads authenticated/. oidc/logout/ ends the session here and at the
// provider.

// oidcCookie keeps a login between oidc/authenticate/ and oidc/callback/ (state,
// nonce, PKCE verifier), sealed, for a few minutes. SameSite=Lax: the provider's
// redirect back is a top-level navigation, which carries it.
const (
	oidcCookie = "calipso_oidc"
	oidcTTL    = 10 * time.Minute
	// keyIDToken keeps the ID token in the login session: the hint of the logout at
	// the provider. keyAccessToken keeps the access token, for a catalogue that opens
	// its sessions with it (icat.openid_connect).
	keyIDToken     = "oidc_id_token"
	keyAccessToken = "oidc_access_token"
)

func newOIDCCodec(secret []byte) *securecookie.SecureCookie {
	c := securecookie.New(deriveKey(secret, "calipso oidc login hash"), deriveKey(secret, "calipso oidc login block"))
	c.MaxAge(int(oidcTTL.Seconds()))
	c.SetSerializer(securecookie.JSONEncoder{})
	return c
}

func (s *server) handleOIDCAuthenticate() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		target, pending, err := s.OpenID.Begin(r.Context())
		if err != nil {
			s.metrics.login("oidc", "error")
			writeError(w, r, s.Log, fmt.Errorf("openid login: %w", err))
			return
		}
		v, err := s.oidcLogins.Encode(oidcCookie, pending)
		if err != nil {
			writeError(w, r, s.Log, fmt.Errorf("seal openid login: %w", err))
			return
		}
		http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: v, Path: s.Config.BasePath, MaxAge: int(oidcTTL.Seconds()),
			HttpOnly: true, Secure: s.Config.Auth.SecureCookies || client(r).scheme == "https", SameSite: http.SameSiteLaxMode})
		http.Redirect(w, r, target, http.StatusFound)
	}
}

func (s *server) handleOIDCCallback() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := queryOf(r)
		// The cookie is spent whatever happens: a callback is answered once.
		http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: "", Path: s.Config.BasePath, MaxAge: -1, HttpOnly: true})
		if e := q.Get("error"); e != "" {
			s.metrics.login("oidc", "refused")
			// The provider's own words stay in the log: they are not ours to show.
			s.Log.InfoContext(r.Context(), "openid login refused by the provider", "error", e, "description", q.Get("error_description"))
			writeError(w, r, s.Log, fmt.Errorf("%w: the provider answered %q", oidc.ErrRefused, e))
			return
		}
		var pending oidc.Pending
		c, err := r.Cookie(oidcCookie)
		if err != nil || s.oidcLogins.Decode(oidcCookie, c.Value, &pending) != nil {
			s.metrics.login("oidc", "refused")
			writeError(w, r, s.Log, fmt.Errorf("%w: no login is under way in this browser (it expired, or it began elsewhere): log in again", errBadRequest))
			return
		}
		id, err := s.OpenID.Finish(r.Context(), pending, q.Get("state"), q.Get("code"))
		if err != nil {
			s.metrics.login("oidc", outcome(err))
			writeError(w, r, s.Log, fmt.Errorf("openid login: %w", err))
			return
		}
		if !store.ValidUsername(id.Username) {
			s.metrics.login("oidc", "refused")
			s.Log.WarnContext(r.Context(), "openid login: the username claim is not a valid account name", "subject", id.Subject)
			writeError(w, r, s.Log, fmt.Errorf("%w: the provider's username cannot name an account here", oidc.ErrRefused))
			return
		}
		keep := map[string]string{keyIDToken: id.IDToken}
		if s.Config.CatalogueTakesTokens && id.AccessToken != "" {
			keep[keyAccessToken] = id.AccessToken
		}
		if err := s.startSession(w, r, id.Username, keep); err != nil {
			s.metrics.login("oidc", "error")
			writeError(w, r, s.Log, err)
			return
		}
		s.mapRoles(r.Context(), id.Username, store.RoleOIDC, s.Config.Policy.OIDCRoles(id.Groups))
		s.keepEmail(r.Context(), id.Username, id.Email)
		s.metrics.login("oidc", "ok")
		http.Redirect(w, r, s.Config.OIDCLoginRedirect, http.StatusFound)
	}
}

// outcome is a failed login's metric label.
func outcome(err error) string {
	if calipso.ErrorCode(err) == calipso.EUNAUTHORIZED {
		return "refused"
	}
	return "error"
}

// handleOIDCLogout ends the login session, then sends the browser to the provider's
// logout (which returns to the frontend) when it has one, else to the frontend. A
// navigation, as the original's was.
func (s *server) handleOIDCLogout() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		hint, _ := s.session(r).Values[keyIDToken].(string)
		if err := s.endSession(w, r); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		target := s.frontendURL("/")
		if u := s.OpenID.LogoutURL(r.Context(), hint, target); u != "" {
			target = u
		}
		http.Redirect(w, r, target, http.StatusFound)
	}
}

// bearerCaller is who a bearer credential names, on the v2 API only: a personal API
// token (store.TokenPrefix), else a JWT of the OpenID provider. ok is false when
// the request carries no bearer credential. A request with one is judged by it
// alone, never by its cookies, so that a token is never a way around the cookie
// API's CSRF check.
func (s *server) bearerCaller(r *http.Request) (c caller, ok bool, err error) {
	raw, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !found {
		return caller{}, false, nil
	}
	raw = strings.TrimSpace(raw)
	if strings.HasPrefix(raw, store.TokenPrefix) {
		c, err = s.tokenCaller(r.Context(), raw)
		return c, true, err
	}
	if s.OpenID == nil {
		return caller{}, true, fmt.Errorf("%w: this is not an API token, and OpenID Connect is off", errUnauthorized)
	}
	id, err := s.OpenID.VerifyBearer(r.Context(), raw)
	if err != nil {
		return caller{}, true, err
	}
	if !store.ValidUsername(id.Username) {
		return caller{}, true, fmt.Errorf("%w: the token's username cannot name an account here", oidc.ErrRefused)
	}
	u, err := s.Store.EnsureUser(r.Context(), id.Username)
	if errors.Is(err, store.ErrInvalid) {
		return caller{}, true, fmt.Errorf("%w: %w", oidc.ErrRefused, err)
	}
	if err != nil {
		return caller{}, true, err
	}
	// The provider's groups are the truth at every call, as at every login.
	if s.mapRoles(r.Context(), u.Username, store.RoleOIDC, s.Config.Policy.OIDCRoles(id.Groups)) {
		if u, err = s.Store.User(r.Context(), u.Username); err != nil {
			return caller{}, true, err
		}
	}
	return caller{user: u, access: s.Config.Policy.Access(u), via: viaOIDC}, true, nil
}

// errBadToken is every refused API token's answer, whatever the reason (unknown,
// expired, revoked): the reason is logged.
var errBadToken = calipso.NewError(calipso.EUNAUTHORIZED, "the API token is unknown, expired or revoked")

// tokenCaller is the caller a personal API token names, its access narrowed to the
// token's scope; its use is recorded.
func (s *server) tokenCaller(ctx context.Context, secret string) (caller, error) {
	t, err := s.Store.TokenBySecret(ctx, secret)
	if errors.Is(err, store.ErrNotFound) {
		return caller{}, errBadToken
	}
	if err != nil {
		return caller{}, err
	}
	if !t.Valid(time.Now()) {
		s.Log.InfoContext(ctx, "API token refused", "token", t.ID, "user", t.Username, "revoked", t.Revoked != nil, "expires", t.Expires)
		return caller{}, errBadToken
	}
	u, err := s.Store.User(ctx, t.Username)
	if err != nil {
		return caller{}, err
	}
	if err := s.Store.TouchToken(ctx, t.ID); err != nil {
		s.Log.WarnContext(ctx, "API token: record use", "token", t.ID, "err", err)
	}
	return caller{user: u, access: s.Config.Policy.Access(u).Within(t.Scope), via: viaToken, token: &t}, nil
}

// authedV2 serves logged-in users of the v2 API: by a bearer credential when the
// request carries one (its cookies are then ignored), else by the login session as
// authed does.
func (s *server) authedV2(h func(w http.ResponseWriter, r *http.Request, u calipso.User)) http.HandlerFunc {
	cookie := s.authed(h)
	return func(w http.ResponseWriter, r *http.Request) {
		c, bearer, err := s.bearerCaller(r)
		switch {
		case !bearer:
			cookie(w, r)
			return
		case err != nil:
			if calipso.ErrorCode(err) == calipso.EUNAUTHORIZED {
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			}
			writeError(w, r, s.Log, err)
			return
		}
		s.serveAs(w, r, c, h)
	}
}

// bearerV2 reports whether r is a v2 API call authenticated by a bearer token: no
// CSRF token is needed, since nothing ambient (a cookie) authenticates it.
func (s *server) bearerV2(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") && strings.HasPrefix(r.URL.Path, s.Config.BasePath+"api/v2/")
}
