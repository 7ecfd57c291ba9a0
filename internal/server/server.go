// Package server is Calipso's HTTP API: the CalipsoPlus-compatible endpoints the
// existing web frontend calls (docs in API.md), under a configurable base path.
// Handlers are functions that close over their dependencies; routes.go lists them all.
package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/gorilla/securecookie"
	"github.com/gorilla/sessions"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/cors"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/experiments/icat"
	"github.com/calipsoplus/calipso/federation"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/settings"
)

// Federation is the SAML service provider (federation.ServiceProvider).
type Federation interface {
	StartLogin(w http.ResponseWriter, r *http.Request, relayState string) error
	ConsumeAssertion(w http.ResponseWriter, r *http.Request) (federation.Identity, string, error)
	MetadataHandler() http.Handler
	MetadataURL() url.URL
	ACSURL() url.URL
	// Single logout (federation/logout.go).
	SLOURL() url.URL
	StartLogout(w http.ResponseWriter, r *http.Request, s federation.Session, relayState string) error
	ConsumeLogout(w http.ResponseWriter, r *http.Request) (federation.LogoutMessage, error)
	RespondLogout(w http.ResponseWriter, r *http.Request, requestID, relayState string) error
}

// Catalogue is what experiments/<id>/users needs of an ICAT catalogue (icat.Client).
type Catalogue interface {
	Participants(ctx context.Context, id int64, login string, admin bool) ([]icat.InvestigationUser, error)
}

// Check is one readiness check of /readyz.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Config is what the HTTP layer uses of the settings.
type Config struct {
	BasePath, FrontendURL     string
	AllowedHosts, CORSOrigins []string
	TrustedPrefixes           []netip.Prefix
	SecretKey                 []byte
	Auth                      settings.Auth
	Server                    settings.Server
	Pagination                settings.Pagination
	// Experiments says how experiments are fetched again from the user office.
	Experiments struct {
		Dynamic         bool // from the user office (else the local database only)
		RefreshInterval time.Duration
		Timeout         time.Duration
	}
	DefaultQuota calipso.Quota
	// Policy is the site's roles; the zero Policy is the built-in one.
	Policy calipso.Policy
	// TokenLifetime is a new API token's life unless its creator names one, up to
	// TokenMaxLifetime.
	TokenLifetime, TokenMaxLifetime time.Duration
	// CatalogueTakesTokens keeps an OpenID login's access token in its session, for
	// the catalogue's sessions (icat.openid_connect).
	CatalogueTakesTokens bool
	// Reclaim is what the lifecycle policies do, for the notices of the v2 API.
	Reclaim calipso.Reclaim
	// SAMLRoleAttribute names the SAML attribute (header mode: the header) whose
	// values map to roles; "": none.
	SAMLRoleAttribute string
	// UmbrellaLoginURL is mod_shib's login handler (header mode).
	UmbrellaLoginURL string
	// OIDCLoginRedirect is where the browser goes after an OpenID login.
	OIDCLoginRedirect string
}

// ConfigFrom takes the HTTP layer's part of the settings.
func ConfigFrom(s *settings.Settings) Config {
	c := Config{BasePath: s.BasePath, FrontendURL: s.FrontendURL, AllowedHosts: s.AllowedHosts, CORSOrigins: s.CORSOrigins,
		TrustedPrefixes: s.TrustedPrefixes, SecretKey: s.SecretKey, Auth: s.Auth, Server: s.Server, Pagination: s.Pagination,
		DefaultQuota: s.Quotas.Default, UmbrellaLoginURL: s.Umbrella.LoginURL, OIDCLoginRedirect: s.OIDC.LoginRedirect,
		Policy: s.Access.Policy, TokenLifetime: s.Access.TokenLifetime.Duration, TokenMaxLifetime: s.Access.TokenMaxLifetime.Duration,
		SAMLRoleAttribute: s.Access.SAMLAttribute, Reclaim: s.Lifecycle.Reclaim,
		CatalogueTakesTokens: s.ICAT.Enabled && s.ICAT.OpenIDConnect}
	if c.OIDCLoginRedirect == "" {
		c.OIDCLoginRedirect = strings.TrimSuffix(s.FrontendURL, "/") + "/"
	}
	c.Experiments.Dynamic = s.UserOffice.DynamicExperiments
	c.Experiments.RefreshInterval = s.UserOffice.RefreshInterval.Duration
	c.Experiments.Timeout = s.UserOffice.Timeout.Duration
	return c
}

// Deps is everything the server uses.
type Deps struct {
	Config    Config
	Store     *store.Store
	Office    calipso.UserOffice
	Resources calipso.ResourceService
	// SAML is nil unless umbrella.enabled in saml mode; Header is set in header mode.
	SAML   Federation
	Header *federation.HeaderMode
	// OpenID is nil unless oidc.enabled.
	OpenID OpenID
	// Experiments lists users' experiments (nil: Office); Catalogue, with ICAT, also
	// answers who took part in an investigation (experiments/<id>/users).
	Experiments calipso.ExperimentSource
	Catalogue   Catalogue
	Checks      []Check
	Log         *slog.Logger
	Metrics     *prometheus.Registry
}

// server holds what the handlers share.
type server struct {
	Deps
	sessions *dbSessionStore
	metrics  *metrics
	cop      *http.CrossOriginProtection
	throttle *throttle // failed logins (throttle.go)
	// trustedOrigin are the frontend origins (cors_origins), as cop has them.
	trustedOrigin map[string]bool
	csrfKey       []byte // csrfTokenFor's key
	office        *officeCache
	pages         *pageCache
	images        *imageList
	acsPath       string // the SAML assertion consumer's path, exempt from CSRF; "" without SAML
	sloPath       string // the SAML single logout path, likewise
	// anonymousPOST are the paths posted to by browsers not logged in yet: they need
	// no CSRF token, only the cross-origin check.
	anonymousPOST map[string]bool
	federated     *securecookie.SecureCookie // seals the federated identity's cookie
	sloLogins     *securecookie.SecureCookie // seals sloCookie (slo.go)
	oidcLogins    *securecookie.SecureCookie // seals the OpenID login under way
}

// New returns the HTTP handler of the whole API.
func New(d Deps) (http.Handler, error) {
	s := d.Config
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if d.Metrics == nil {
		d.Metrics = prometheus.NewRegistry()
	}
	sessOpts := sessions.Options{
		Path:     s.BasePath,
		MaxAge:   int(s.Auth.SessionMaxAge.Seconds()),
		HttpOnly: true,
		Secure:   s.Auth.SecureCookies,
		SameSite: http.SameSiteLaxMode,
	}
	srv := &server{
		Deps:     d,
		sessions: newSessionStore(d.Store, s.SecretKey, sessOpts, s.Server.CacheTTL.Duration),
		metrics:  newMetrics(d.Metrics),
		cop:      http.NewCrossOriginProtection(),
	}
	srv.federated = newFederatedCodec(s.SecretKey)
	srv.sloLogins = newSLOCodec(s.SecretKey, s.Auth.SessionMaxAge.Duration)
	srv.oidcLogins = newOIDCCodec(s.SecretKey)
	srv.throttle = newThrottle(time.Now)
	srv.metrics.watchThrottle(d.Metrics, srv.throttle)
	srv.csrfKey = deriveKey(s.SecretKey, "calipso csrf token")
	srv.trustedOrigin = map[string]bool{}
	source := d.Experiments
	if source == nil && d.Office != nil {
		source = d.Office
	}
	srv.office = newOfficeCache(d.Store, source, s.Experiments.Dynamic, s.Experiments.RefreshInterval, s.Experiments.Timeout, d.Log)
	srv.pages = newPageCache(4096)
	srv.images = &imageList{ttl: s.Server.CacheTTL.Duration}
	if d.SAML != nil {
		srv.acsPath = d.SAML.ACSURL().Path
		srv.sloPath = d.SAML.SLOURL().Path
	}
	srv.anonymousPOST = map[string]bool{s.BasePath + "login/": true, s.BasePath + "umbrella/wuo/": true}
	for _, o := range s.CORSOrigins {
		if err := srv.cop.AddTrustedOrigin(o); err != nil {
			return nil, err
		}
		srv.trustedOrigin[o] = true
	}
	// Refusals answer JSON like every other error.
	srv.cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, d.Log, errCrossSite)
	}))

	// No path cleaning: mux would answer "/a/../b" with a redirect to "/b" (turning a
	// POST into a GET); saneRequest refuses dot segments instead.
	root := mux.NewRouter().SkipClean(true)
	api := srv.routes(root)
	// mux answers a known path with the wrong method 404 when routes sit in a
	// subrouter; a path that some route matches is told 405 here instead.
	var paths []*regexp.Regexp
	_ = root.Walk(func(rt *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		if re, err := rt.GetPathRegexp(); err == nil && rt.GetHandler() != nil { // not the base path's prefix
			paths = append(paths, regexp.MustCompile(re))
		}
		return nil
	})
	notFound := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, re := range paths {
			if re.MatchString(r.URL.Path) {
				writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
				return
			}
		}
		writeError(w, r, d.Log, errNotFound)
	})
	root.NotFoundHandler, api.NotFoundHandler = notFound, notFound

	corsHandler := cors.New(cors.Options{
		AllowedOrigins:   s.CORSOrigins,
		AllowedMethods:   []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions},
		AllowedHeaders:   []string{"Content-Type", "X-CSRFToken", "X-Requested-With", "Authorization", "Last-Event-ID"},
		AllowCredentials: true,
		MaxAge:           600,
	})
	var h http.Handler = root
	h = srv.saneRequest(h)
	h = srv.csrf(h)
	h = corsHandler.Handler(h)
	h = srv.limitBody(h)
	h = srv.allowedHosts(h)
	h = srv.logAndMeasure(h)
	h = srv.forwarded(h)
	h = srv.recoverPanics(h)
	return h, nil
}

// HTTPServer serves h at listen with the settings' timeouts.
func HTTPServer(listen string, s settings.Server, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Addr:              listen,
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       s.ReadTimeout.Duration,
		WriteTimeout:      s.WriteTimeout.Duration,
		IdleTimeout:       s.IdleTimeout.Duration,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// recoverPanics turns a panic into a logged 500: one bad request never takes the
// server down.
func (s *server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.Log.ErrorContext(r.Context(), "panic", "path", r.URL.Path, "panic", v)
				writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal error"})
			}
		}()
		next.ServeHTTP(w, r)
	})
}

type ctxKey int

const (
	clientKey ctxKey = iota
	userKey
)

// clientInfo is what forwarded() learnt of the client.
type clientInfo struct {
	addr   string // the client's address (X-Forwarded-For from a trusted proxy)
	scheme string // http or https, as the client used
	host   string // the host the client asked for
	proxy  bool   // the request came through a trusted proxy
}

func client(r *http.Request) clientInfo {
	if c, ok := r.Context().Value(clientKey).(clientInfo); ok {
		return c
	}
	return clientInfo{addr: r.RemoteAddr, scheme: "http", host: r.Host}
}

// trusted reports whether the connection comes from a configured proxy.
func (s *server) trusted(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range s.Config.TrustedPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forwarded honours X-Forwarded-For/Proto/Host only from trusted proxies; from
// anyone else they are ignored, so a client can't fake its address or the links.
func (s *server) forwarded(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := clientInfo{addr: r.RemoteAddr, scheme: "http", host: r.Host}
		if r.TLS != nil {
			c.scheme = "https"
		}
		if s.trusted(r.RemoteAddr) {
			c.proxy = true
			if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
				// The proxy appends the address it saw: the last entry is the one it vouches for.
				parts := strings.Split(xff, ",")
				c.addr = strings.TrimSpace(parts[len(parts)-1])
			}
			if p := r.Header.Get("X-Forwarded-Proto"); p == "https" || p == "http" {
				c.scheme = p
			}
			if h := r.Header.Get("X-Forwarded-Host"); h != "" {
				// As for X-Forwarded-For: the client may send its own header, which the
				// proxy appends to; only the last entry is the proxy's.
				parts := strings.Split(h, ",")
				c.host = strings.TrimSpace(parts[len(parts)-1])
			}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), clientKey, c)))
	})
}

// allowedHosts refuses Host headers not in allowed_hosts (Django's ALLOWED_HOSTS).
func (s *server) allowedHosts(next http.Handler) http.Handler {
	allowed := s.Config.AllowedHosts
	if slices.Contains(allowed, "*") || len(allowed) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := client(r).host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if !slices.Contains(allowed, strings.ToLower(host)) && !s.anyHost(r) {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "host not allowed"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// anyHost: the operations paths that answer whatever the Host. Load balancers and
// kubelets probe by IP. /healthz tells only that the process serves; /metrics has its
// bearer token (server.metrics_token, required in prod); /readyz, which names the
// parts and their state, answers other hosts only on the loopback and to trusted
// proxies (the load balancer): a kubelet probing the pod's IP from its node sends
// an allowed Host (httpHeaders) or its node is a trusted proxy.
func (s *server) anyHost(r *http.Request) bool {
	switch r.URL.Path {
	case "/healthz", "/metrics":
		return true
	case "/readyz":
		return loopback(r.RemoteAddr) || s.trusted(r.RemoteAddr)
	}
	return false
}

// loopback reports a connection from this host.
func loopback(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// isProbe: the operations paths, logged at debug level (probes come every few seconds).
func isProbe(r *http.Request) bool {
	return r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || r.URL.Path == "/metrics"
}

func (s *server) limitBody(next http.Handler) http.Handler {
	max := s.Config.Server.MaxBodyBytes
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			writeError(w, r, s.Log, errTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, max)
		next.ServeHTTP(w, r)
	})
}

// saneRequest refuses, with a 400 that says why, paths with dot segments or NUL bytes
// (decoded: %2e%2e is ..). Query strings are never refused: see queryOf.
func (s *server) saneRequest(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if strings.ContainsRune(p, 0) {
			writeError(w, r, s.Log, fmt.Errorf("%w: NUL byte in the path", errBadRequest))
			return
		}
		for seg := range strings.SplitSeq(p, "/") {
			if seg == "." || seg == ".." {
				writeError(w, r, s.Log, fmt.Errorf("%w: . and .. are not allowed in paths", errBadRequest))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// csrfCookie is the cookie the frontend reads and sends back as X-CSRFToken (Django's).
const csrfCookie = "csrftoken"

// csrf guards cookie-authenticated state changes twice: the cross-origin check
// (crossOrigin: Sec-Fetch-Site / Origin against the trusted frontend origins) and,
// for the existing frontend, Django's token: unsafe methods must send the csrftoken
// cookie's value in X-CSRFToken. gorilla/csrf can't serve here: its header must
// carry a masked token, not the cookie's value.
//
// The token is tied to the session (csrfTokenFor: an HMAC of the session's id), so a
// token from another session, or one planted in the cookie by a sibling site, is
// refused, and it changes with every login (startSession sets the new one). A
// visitor without a session gets a random token, which only has to match its cookie:
// such a visitor can change nothing that needs a login.
func (s *server) csrf(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cookie := ""
		if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) >= 32 && len(c.Value) <= 64 {
			cookie = c.Value
		}
		// The session, loaded once for the request (the handlers get the same one).
		var sessErr error
		token := cookie
		if _, err := r.Cookie(sessionCookie); err == nil {
			sess, err := s.sessions.Get(r, sessionCookie)
			switch {
			case err != nil:
				sessErr = err
			case sess.ID != "":
				token = s.csrfTokenFor(sess.ID)
			}
		}
		if token == "" {
			token = rand32()
		}
		if token != cookie && sessErr == nil {
			s.setCSRFCookie(w, r, token)
		}
		switch {
		case r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions:
		case s.acsPath != "" && r.Method == http.MethodPost && (r.URL.Path == s.acsPath || r.URL.Path == s.sloPath):
			// The IdP's browser POST to the assertion consumer (or single logout) is
			// cross-site by design and carries no token of ours; the signed message is
			// what is checked.
		case s.bearerV2(r):
			// Judged by its token alone (authedV2), never by its cookies.
		case r.Method == http.MethodPost && s.anonymousPOST[r.URL.Path]:
			// login/ and umbrella/wuo/ are called right after a logout, with no token
			// (the frontend sends none on login/ and "none" when it lost the cookie),
			// as Django REST framework never checked anonymous requests. The
			// cross-origin check is what stops login CSRF.
			if err := s.crossOrigin(r); err != nil {
				writeError(w, r, s.Log, err)
				return
			}
		default:
			if err := s.crossOrigin(r); err != nil {
				writeError(w, r, s.Log, err)
				return
			}
			if sessErr != nil { // the token can't be checked: the database is down
				writeError(w, r, s.Log, sessErr)
				return
			}
			sent := r.Header.Get("X-CSRFToken")
			if sent == "" || subtle.ConstantTimeCompare([]byte(sent), []byte(token)) != 1 {
				writeJSON(w, http.StatusForbidden, map[string]string{"error": "CSRF token missing or incorrect: send the csrftoken cookie's value as X-CSRFToken"})
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// csrfTokenFor is the CSRF token of the session with this id: 64 hex digits, an HMAC
// of the id with a key of its own derived from the secret key. Only the server and
// the session's browser know the id, so no one else can compute it.
func (s *server) csrfTokenFor(sessionID string) string {
	m := hmac.New(sha256.New, s.csrfKey)
	m.Write([]byte(sessionID))
	return hex.EncodeToString(m.Sum(nil))
}

// setCSRFCookie sets the csrftoken cookie, replacing one set earlier in this answer
// (csrf() sets the visitor's before login/ sets the session's).
func (s *server) setCSRFCookie(w http.ResponseWriter, r *http.Request, token string) {
	h := w.Header()
	kept := h.Values("Set-Cookie")[:0:0]
	for _, c := range h.Values("Set-Cookie") {
		if !strings.HasPrefix(c, csrfCookie+"=") {
			kept = append(kept, c)
		}
	}
	h.Del("Set-Cookie")
	for _, c := range kept {
		h.Add("Set-Cookie", c)
	}
	http.SetCookie(w, &http.Cookie{
		// Path "/": the frontend's JavaScript, served outside the base path, must read
		// it (so not HttpOnly either).
		Name: csrfCookie, Value: token, Path: "/",
		MaxAge: 365 * 24 * 3600, Secure: s.Config.Auth.SecureCookies || client(r).scheme == "https", SameSite: http.SameSiteLaxMode,
	})
}

// crossOrigin refuses requests sent by pages of other sites: the standard library's
// CrossOriginProtection (Sec-Fetch-Site; without it, Origin against Host; the trusted
// frontend origins exempt), checked against the host the client asked for (a trusted
// proxy's X-Forwarded-Host), and for every method (the state-changing GETs too).
// CrossOriginProtection compares only the host of Origin with Host, so an old
// browser's Origin https://host passed for an http Host: a request from another
// origin (another scheme is another origin) is refused here.
func (s *server) crossOrigin(r *http.Request) error {
	c := client(r)
	probe := r.WithContext(r.Context()) // a shallow copy: the headers are only read
	probe.Method, probe.Host = http.MethodPost, c.host
	if err := s.cop.Check(probe); err != nil {
		return fmt.Errorf("%w: %w", errCrossSite, err)
	}
	if r.Header.Get("Sec-Fetch-Site") != "" {
		return nil // the browser compared the whole origin
	}
	origin := r.Header.Get("Origin")
	if origin == "" || s.trustedOrigin[origin] {
		return nil
	}
	if u, err := url.Parse(origin); err != nil || !strings.EqualFold(u.Scheme, c.scheme) {
		return fmt.Errorf("%w: Origin %s is not this site's %s origin", errCrossSite, origin, c.scheme)
	}
	return nil
}

// navigation reports a top-level navigation (a link, a form, a typed URL, a script
// setting location): Sec-Fetch-Mode says so, and browsers too old to send it ask for
// HTML first. The API's calls come from the frontend's XHRs (Accept: application/json,
// text/plain, */*) or from scripts (curl: */*), never from navigations.
func navigation(r *http.Request) bool {
	if r.Header.Get("Sec-Fetch-Mode") == "navigate" {
		return true
	}
	for _, accept := range r.Header.Values("Accept") {
		for rng := range strings.SplitSeq(accept, ",") {
			media, params, _ := strings.Cut(rng, ";")
			media = strings.ToLower(strings.TrimSpace(media))
			if media != "text/html" && media != "application/xhtml+xml" {
				continue
			}
			if q, ok := qValue(params); !ok || q > 0 {
				return true
			}
		}
	}
	return false
}

// qValue finds q= in a media range's parameters.
func qValue(params string) (float64, bool) {
	for p := range strings.SplitSeq(params, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(strings.TrimSpace(k), "q") {
			q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return q, err == nil
		}
	}
	return 0, false
}

// stateChangingGET protects the compat API's GETs that change state (resource/run,
// stop, rm; logout/ and umbrella/logout/): they get the cross-origin check an unsafe
// method would, and navigations are refused. A cross-site page can make the
// browser navigate to a URL (a link, a form, window.location) with the session's
// cookie (SameSite=Lax lets top-level navigations have it), and an old browser then
// sends neither Sec-Fetch-Site nor Origin; the frontend only ever calls these by XHR.
// Subresources (<img src>) of another site get no cookie (SameSite=Lax).
func (s *server) stateChangingGET(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := s.crossOrigin(r); err != nil {
			writeError(w, r, s.Log, err)
			return
		}
		if navigation(r) {
			writeError(w, r, s.Log, fmt.Errorf("%w: this call changes state and is not a page: call it from the frontend or a script", errCrossSite))
			return
		}
		next(w, r)
	}
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// logAndMeasure logs each request and counts it by route template.
func (s *server) logAndMeasure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		info := &requestInfo{route: "unmatched"}
		next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), infoKey{}, info)))
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		took := time.Since(start)
		s.metrics.observe(info.route, r.Method, rec.status, took)
		level := slog.LevelInfo
		if rec.status >= 500 {
			level = slog.LevelError
		}
		if isProbe(r) {
			level = slog.LevelDebug
		}
		if s.Log.Enabled(r.Context(), level) {
			s.Log.LogAttrs(r.Context(), level, "request",
				slog.String("method", r.Method), slog.String("route", info.route), slog.String("path", r.URL.Path),
				slog.Int("status", rec.status), slog.Duration("took", took),
				slog.String("client", client(r).addr), slog.String("user", info.user))
		}
	})
}

type infoKey struct{}

// requestInfo is filled in by the router and the auth layer for the request log.
type requestInfo struct {
	route string
	user  string
}

func infoOf(r *http.Request) *requestInfo {
	if i, ok := r.Context().Value(infoKey{}).(*requestInfo); ok {
		return i
	}
	return &requestInfo{}
}

// routeName records the matched route template for logs and metrics.
func routeName(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rt := mux.CurrentRoute(r); rt != nil {
			if tpl, err := rt.GetPathTemplate(); err == nil {
				infoOf(r).route = tpl
			}
		}
		next.ServeHTTP(w, r)
	})
}
