package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
)

// OIDCOptions configures the provider that StartOIDCProvider starts.
type OIDCOptions struct {
	// AccessTokenTTL is how long the access tokens live (hydra's ttl.access_token); 1 h
	// when zero. It is counted in whole milliseconds.
	AccessTokenTTL time.Duration
	// RememberLogin makes hydra remember a login in a session cookie, so that a second
	// authorization request of the same browser passes without the password and an
	// RP-initiated logout goes through the logout app. Off, every login asks for the
	// password again and hydra keeps no session to log out of: its end_session endpoint
	// then sends the browser straight on to the post_logout_redirect_uri.
	RememberLogin bool
}

// OIDCProvider is a real OpenID provider of one test's own: ORY Hydra (`hydra serve all
// --dev` on an in-memory database, on free loopback ports), with the login, consent and
// logout app that hydra delegates to served by the harness. Users are registered with
// AddUser, relying parties with NewClient. Access tokens are JWTs signed with the keys
// of hydra's JWKS (Issuer + "/.well-known/jwks.json"). Everything is stopped and removed
// when the test ends.
type OIDCProvider struct {
	// Issuer is hydra's public URL (no trailing slash) and the OIDC issuer: discovery
	// is at Issuer + "/.well-known/openid-configuration".
	Issuer string
	// AdminURL is hydra's admin API (its paths start with /admin).
	AdminURL string
	// LoggedOutURL is where hydra sends a browser after a logout without
	// post_logout_redirect_uri (urls.post_logout_redirect): a page of the harness.
	LoggedOutURL string

	opts  OIDCOptions
	app   *httptest.Server
	admin *http.Client

	mu    sync.Mutex
	users map[string]oidcUser
	// What the app has handled, for the package's own tests.
	logins, consents, logouts int
}

type oidcUser struct {
	password string
	groups   []string
}

// StartOIDCProvider starts hydra (CALIPSO_TEST_HYDRA, built by deploy/test.sh) and waits
// until it answers; it skips the test (fails it under CI) when hydra is not there.
func StartOIDCProvider(t testing.TB, opts OIDCOptions) *OIDCProvider {
	t.Helper()
	bin := os.Getenv("CALIPSO_TEST_HYDRA")
	if bin == "" {
		Missing(t, "hydra", "CALIPSO_TEST_HYDRA is not set")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("CALIPSO_TEST_HYDRA: %v", err)
	}
	if opts.AccessTokenTTL <= 0 {
		opts.AccessTokenTTL = time.Hour
	}
	p := &OIDCProvider{
		opts:  opts,
		admin: &http.Client{Timeout: 10 * time.Second},
		users: map[string]oidcUser{},
	}
	p.app = httptest.NewServer(p.appHandler())
	t.Cleanup(p.app.Close)
	p.LoggedOutURL = p.app.URL + "/logged-out"

	dir := t.TempDir()
	// Two free ports, taken and let go: another process may grab one in between, so
	// a start that fails on a bound port is tried again on new ones.
	var last string
	for attempt := 0; attempt < 3; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			t.Fatalf("free ports for hydra: %v", err)
		}
		p.Issuer = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		p.AdminURL = fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		logPath := filepath.Join(dir, fmt.Sprintf("hydra-%d.log", attempt))
		cfgPath := filepath.Join(dir, "hydra.json")
		if err := os.WriteFile(cfgPath, p.config(ports[0], ports[1]), 0o600); err != nil {
			t.Fatal(err)
		}
		err = p.start(t, bin, dir, cfgPath, logPath)
		if err == nil {
			return p
		}
		log, _ := os.ReadFile(logPath)
		last = fmt.Sprintf("%v\n--- hydra's log (%s) ---\n%s", err, logPath, log)
		if !bytes.Contains(log, []byte("address already in use")) {
			break
		}
	}
	t.Fatalf("hydra did not come up: %s", last)
	return nil
}

// config is hydra's configuration file (JSON).
func (p *OIDCProvider) config(public, admin int) []byte {
	cfg := map[string]any{
		"log": map[string]any{"level": "info", "format": "text", "leak_sensitive_values": true},
		"serve": map[string]any{
			"public": map[string]any{"host": "127.0.0.1", "port": public},
			"admin":  map[string]any{"host": "127.0.0.1", "port": admin},
		},
		"urls": map[string]any{
			"self":                 map[string]any{"issuer": p.Issuer, "public": p.Issuer, "admin": p.AdminURL},
			"login":                p.app.URL + "/login",
			"consent":              p.app.URL + "/consent",
			"logout":               p.app.URL + "/logout",
			"post_logout_redirect": p.LoggedOutURL,
		},
		"strategies": map[string]any{"access_token": "jwt"},
		"ttl":        map[string]any{"access_token": fmt.Sprintf("%dms", p.opts.AccessTokenTTL.Milliseconds())},
		"secrets":    map[string]any{"system": []string{RandomHex(16)}},
		"oauth2": map[string]any{
			"expose_internal_errors": true,
			// The consent app's claims also stand at the top level of the access
			// token, beside the copy under "ext".
			"allowed_top_level_claims": []string{"preferred_username", "groups", "email"},
		},
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return b
}

// start runs hydra and waits until both its APIs are ready and its signing keys exist.
func (p *OIDCProvider) start(t testing.TB, bin, dir, cfgPath, logPath string) error {
	t.Helper()
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "serve", "all", "--dev", "--sqa-opt-out", "--config", cfgPath)
	// A clean environment: hydra reads any variable named after a configuration key.
	cmd.Env = []string{"DSN=memory", "HOME=" + dir, "TMPDIR=" + dir, "PATH=" + os.Getenv("PATH")}
	c, err := startChild(cmd, dir, logFile)
	if err != nil {
		return err
	}

	// Ready, then the signing keys: hydra makes them on the first request for its JWKS.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, u := range []string{p.AdminURL + "/health/ready", p.Issuer + "/health/ready", p.Issuer + "/.well-known/jwks.json"} {
		if err := waitOK(ctx, u, c.exited); err != nil {
			c.stop()
			if errors.Is(err, errExited) {
				return fmt.Errorf("hydra exited (%v) before %s answered", c.err, u)
			}
			return err
		}
	}
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			log, _ := os.ReadFile(logPath)
			t.Logf("hydra's log (%s), last lines:\n%s", logPath, tail(string(log), 60))
		}
	})
	return nil
}

var errExited = calipso.NewError(calipso.EUNAVAILABLE, "the part's process exited")

// child is a part's process (hydra, mailpit): run in dir with the environment its
// command was given, its output in log; exited closes when it ends, err then says how.
type child struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

func startChild(cmd *exec.Cmd, dir string, log io.Writer) (*child, error) {
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, exited: make(chan struct{})}
	go func() { c.err = cmd.Wait(); close(c.exited) }()
	return c, nil
}

// stop kills the process and waits for it; stopping a stopped one is nothing.
func (c *child) stop() {
	_ = c.cmd.Process.Kill()
	<-c.exited
}

// waitOK polls u until it answers 200, the context ends or the process exits
// (errExited).
func waitOK(ctx context.Context, u string, exited <-chan struct{}) error {
	client := &http.Client{Timeout: 5 * time.Second}
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		res, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET %s: %s", u, res.Status)
		}
		last = err
		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer: %v", u, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func freePorts(n int) ([]int, error) {
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func tail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// AddUser registers a user that the login app accepts with that password. The ID
// token and the access token carry preferred_username (the username), groups and
// email (username@example.org); the subject (sub) is the username.
func (p *OIDCProvider) AddUser(username, password string, groups ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users[username] = oidcUser{password: password, groups: append([]string{}, groups...)}
}

// NewClient registers a confidential OAuth2 client (authorization_code and
// refresh_token grants, response type code, client_secret_basic) that may request the
// scopes openid, profile, email, groups and offline_access, and returns its id and
// secret. Its audience is its own id. Each post-logout redirect URI must have the scheme,
// host and port of the redirect URI (hydra's rule).
func (p *OIDCProvider) NewClient(t testing.TB, redirectURI string, postLogoutRedirectURIs ...string) (clientID, secret string) {
	t.Helper()
	clientID, secret = "client-"+RandomHex(6), RandomHex(16)
	body := map[string]any{
		"client_id":                  clientID,
		"client_name":                clientID,
		"client_secret":              secret,
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"scope":                      "openid profile email groups offline_access offline",
		"token_endpoint_auth_method": "client_secret_basic",
		"audience":                   []string{clientID},
		"redirect_uris":              []string{redirectURI},
		"post_logout_redirect_uris":  append([]string{}, postLogoutRedirectURIs...),
	}
	var created struct {
		ClientID string `json:"client_id"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.adminCall(ctx, http.MethodPost, "/admin/clients", nil, body, &created); err != nil {
		t.Fatalf("create OAuth2 client: %v", err)
	}
	if created.ClientID != clientID {
		t.Fatalf("create OAuth2 client: hydra answered client_id %q, want %q", created.ClientID, clientID)
	}
	return clientID, secret
}

// adminCall sends a JSON request to hydra's admin API and decodes the JSON answer into
// out (when not nil); an answer other than 2xx is an error with hydra's text.
func (p *OIDCProvider) adminCall(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	u := p.AdminURL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	res, err := p.admin.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return err
	}
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, res.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: %v", method, path, err)
		}
	}
	return nil
}

// The login, consent and logout app (hydra's urls.login, urls.consent, urls.logout
// and urls.post_logout_redirect).

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html><head><title>Sign in</title></head><body>
<h1>Sign in</h1>
{{if .Error}}<p class="error">{{.Error}}</p>{{end}}
<form method="post" action="/login">
<input type="hidden" name="login_challenge" value="{{.Challenge}}">
<label>Username <input name="username" value="{{.Username}}" autocomplete="username"></label>
<label>Password <input type="password" name="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button>
</form>
</body></html>
`))

// WrongPasswordText is what the login form shows after a wrong username or password.
const WrongPasswordText = "Wrong username or password."

type hydraRedirect struct {
	RedirectTo string `json:"redirect_to"`
}

type hydraClient struct {
	ClientID string   `json:"client_id"`
	Audience []string `json:"audience"`
}

func (p *OIDCProvider) appHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", p.loginForm)
	mux.HandleFunc("POST /login", p.loginSubmit)
	mux.HandleFunc("GET /consent", p.consent)
	mux.HandleFunc("GET /logout", p.logout)
	mux.HandleFunc("GET /logged-out", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "You are logged out.")
	})
	return mux
}

func appContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 10*time.Second)
}

func (p *OIDCProvider) loginForm(w http.ResponseWriter, r *http.Request) {
	challenge := r.URL.Query().Get("login_challenge")
	if challenge == "" {
		http.Error(w, "no login_challenge", http.StatusBadRequest)
		return
	}
	ctx, cancel := appContext(r)
	defer cancel()
	var lr struct {
		Skip    bool   `json:"skip"`
		Subject string `json:"subject"`
	}
	if err := p.adminCall(ctx, http.MethodGet, "/admin/oauth2/auth/requests/login", url.Values{"login_challenge": {challenge}}, nil, &lr); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if lr.Skip {
		// hydra remembers this browser's login (RememberLogin): no form.
		p.acceptLogin(w, r, challenge, lr.Subject)
		return
	}
	p.showLogin(w, http.StatusOK, challenge, "", "")
}

func (p *OIDCProvider) showLogin(w http.ResponseWriter, status int, challenge, username, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = loginPage.Execute(w, map[string]string{"Challenge": challenge, "Username": username, "Error": msg})
}

func (p *OIDCProvider) loginSubmit(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	challenge, username, password := r.PostForm.Get("login_challenge"), r.PostForm.Get("username"), r.PostForm.Get("password")
	if challenge == "" {
		http.Error(w, "no login_challenge", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	u, ok := p.users[username]
	p.mu.Unlock()
	if !ok || u.password != password {
		p.showLogin(w, http.StatusOK, challenge, username, WrongPasswordText)
		return
	}
	p.acceptLogin(w, r, challenge, username)
}

func (p *OIDCProvider) acceptLogin(w http.ResponseWriter, r *http.Request, challenge, subject string) {
	ctx, cancel := appContext(r)
	defer cancel()
	var res hydraRedirect
	body := map[string]any{"subject": subject, "remember": p.opts.RememberLogin}
	if err := p.adminCall(ctx, http.MethodPut, "/admin/oauth2/auth/requests/login/accept", url.Values{"login_challenge": {challenge}}, body, &res); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	p.mu.Lock()
	p.logins++
	p.mu.Unlock()
	http.Redirect(w, r, res.RedirectTo, http.StatusFound)
}

func (p *OIDCProvider) consent(w http.ResponseWriter, r *http.Request) {
	challenge := r.URL.Query().Get("consent_challenge")
	if challenge == "" {
		http.Error(w, "no consent_challenge", http.StatusBadRequest)
		return
	}
	ctx, cancel := appContext(r)
	defer cancel()
	q := url.Values{"consent_challenge": {challenge}}
	var cr struct {
		Subject           string      `json:"subject"`
		RequestedScope    []string    `json:"requested_scope"`
		RequestedAudience []string    `json:"requested_access_token_audience"`
		Client            hydraClient `json:"client"`
	}
	if err := p.adminCall(ctx, http.MethodGet, "/admin/oauth2/auth/requests/consent", q, nil, &cr); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	p.mu.Lock()
	u, ok := p.users[cr.Subject]
	p.mu.Unlock()
	if !ok {
		http.Error(w, "unknown subject "+cr.Subject, http.StatusForbidden)
		return
	}
	claims := map[string]any{
		"preferred_username": cr.Subject,
		"groups":             u.groups,
		"email":              cr.Subject + "@example.org",
	}
	// The audience asked for (the authorization request's audience parameter), else the
	// client's own (its id, see NewClient): hydra puts exactly this in the access
	// token's aud.
	audience := cr.RequestedAudience
	if len(audience) == 0 {
		audience = cr.Client.Audience
	}
	body := map[string]any{
		"grant_scope":                 append([]string{}, cr.RequestedScope...),
		"grant_access_token_audience": append([]string{}, audience...),
		"remember":                    false,
		"session":                     map[string]any{"id_token": claims, "access_token": claims},
	}
	var res hydraRedirect
	if err := p.adminCall(ctx, http.MethodPut, "/admin/oauth2/auth/requests/consent/accept", q, body, &res); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	p.mu.Lock()
	p.consents++
	p.mu.Unlock()
	http.Redirect(w, r, res.RedirectTo, http.StatusFound)
}

func (p *OIDCProvider) logout(w http.ResponseWriter, r *http.Request) {
	challenge := r.URL.Query().Get("logout_challenge")
	if challenge == "" {
		http.Error(w, "no logout_challenge", http.StatusBadRequest)
		return
	}
	ctx, cancel := appContext(r)
	defer cancel()
	var res hydraRedirect
	if err := p.adminCall(ctx, http.MethodPut, "/admin/oauth2/auth/requests/logout/accept", url.Values{"logout_challenge": {challenge}}, nil, &res); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	p.mu.Lock()
	p.logouts++
	p.mu.Unlock()
	http.Redirect(w, r, res.RedirectTo, http.StatusFound)
}

var (
	formAction    = regexp.MustCompile(`<form method="post" action="([^"]*)"`)
	formChallenge = regexp.MustCompile(`name="login_challenge" value="([^"]*)"`)
)

// SignIn drives a browser (c, which must not follow redirects itself) from start
// through the provider's sign-in form, filled with user and password, until a
// redirect reaches stop (a URL prefix), and returns that redirect's target, not
// followed. When the form comes back (the credentials refused) it fails the test,
// unless wrongPassword says it should come back: then it returns "".
func SignIn(t testing.TB, c *http.Client, start, stop, user, password string, wrongPassword bool) string {
	t.Helper()
	next, method, form := start, http.MethodGet, url.Values(nil)
	for range 20 {
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequest(method, next, body)
		if err != nil {
			t.Fatal(err)
		}
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		base := resp.Request.URL
		switch {
		case resp.StatusCode == http.StatusFound || resp.StatusCode == http.StatusSeeOther:
			loc, err := base.Parse(resp.Header.Get("Location"))
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(loc.String(), stop) {
				return loc.String()
			}
			next, method, form = loc.String(), http.MethodGet, nil
		case resp.StatusCode == http.StatusOK && formChallenge.Match(page):
			if form != nil { // the form again: the credentials were refused
				if !wrongPassword || !strings.Contains(string(page), WrongPasswordText) {
					t.Fatalf("the provider refused %s's credentials: %s", user, page)
				}
				return ""
			}
			action, err := base.Parse(html.UnescapeString(string(formAction.FindSubmatch(page)[1])))
			if err != nil {
				t.Fatal(err)
			}
			next, method = action.String(), http.MethodPost
			form = url.Values{"login_challenge": {html.UnescapeString(string(formChallenge.FindSubmatch(page)[1]))},
				"username": {user}, "password": {password}}
		default:
			t.Fatalf("%s %s: %d %s", method, next, resp.StatusCode, page)
		}
	}
	t.Fatalf("no redirect to %s after 20 steps", stop)
	return ""
}
