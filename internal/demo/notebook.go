package demo

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// NotebookCookie is the login cookie the notebook sets once a request brought the
// right token, so that the pages' later requests need no token (as Jupyter's
// username-… cookie). It holds an HMAC of the token, never the token.
const NotebookCookie = "calipso-demo-notebook"

// jupyterTime is how Jupyter writes times in /api/status (RFC 3339, UTC).
const jupyterTime = "2006-01-02T15:04:05.000000Z"

// Notebook serves the notebook-like workload on ln until ctx ends. It prints the
// token line a Jupyter server prints, which the image record's log_regex
// `token=([0-9a-f]+)` finds.
func Notebook(ctx context.Context, ln net.Listener, token string, stdout io.Writer) error {
	nb := newNotebook(token, time.Now)
	srv := &http.Server{Handler: nb, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	port := 0
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		port = a.Port
	}
	fmt.Fprintf(stdout, "Calipso demo notebook is running; to access it, open this URL in a browser:\n")
	fmt.Fprintf(stdout, "    http://127.0.0.1:%d/lab?token=%s\n", port, token)

	select {
	case err := <-errc:
		return fmt.Errorf("notebook: %w", err)
	case <-ctx.Done():
	}
	fmt.Fprintln(stdout, "notebook: shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close() // a client that does not let go must not delay the stop
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("notebook: %w", err)
	}
	return nil
}

type notebook struct {
	token   string
	cookie  string
	started time.Time
	last    atomic.Int64 // last activity, Unix nanoseconds
	now     func() time.Time
}

func newNotebook(token string, now func() time.Time) *notebook {
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte(NotebookCookie))
	nb := &notebook{token: token, cookie: hex.EncodeToString(mac.Sum(nil)), started: now(), now: now}
	nb.last.Store(nb.started.UnixNano())
	return nb
}

func (nb *notebook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	api := strings.HasPrefix(r.URL.Path, "/api/")
	switch r.URL.Path {
	case "/", "/lab", "/tree", "/api/status":
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !nb.authenticate(w, r) {
		if api {
			writeJSON(w, http.StatusForbidden, map[string]any{"message": "Forbidden", "reason": nil})
		} else {
			http.Error(w, "403 Forbidden: open the URL with its ?token= (printed in the log)", http.StatusForbidden)
		}
		return
	}
	if api {
		nb.status(w)
		return
	}
	// Status polls are not activity (as in Jupyter): idle culling reads last_activity.
	nb.last.Store(nb.now().UnixNano())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	io.WriteString(w, notebookPage)
}

// authenticate accepts the token as Jupyter does: ?token=, "Authorization: token X"
// (or Bearer), or the cookie a token login set.
func (nb *notebook) authenticate(w http.ResponseWriter, r *http.Request) bool {
	if t := r.URL.Query().Get("token"); t != "" && equal(t, nb.token) {
		http.SetCookie(w, &http.Cookie{Name: NotebookCookie, Value: nb.cookie, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
		return true
	}
	if scheme, t, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok &&
		(strings.EqualFold(scheme, "token") || strings.EqualFold(scheme, "bearer")) && equal(strings.TrimSpace(t), nb.token) {
		return true
	}
	if c, err := r.Cookie(NotebookCookie); err == nil && equal(c.Value, nb.cookie) {
		return true
	}
	return false
}

// NotebookStatus is Jupyter's /api/status answer.
type NotebookStatus struct {
	Started      string `json:"started"`
	LastActivity string `json:"last_activity"`
	Connections  int    `json:"connections"`
	Kernels      int    `json:"kernels"`
}

func (nb *notebook) status(w http.ResponseWriter) {
	writeJSON(w, http.StatusOK, NotebookStatus{
		Started:      nb.started.UTC().Format(jupyterTime),
		LastActivity: time.Unix(0, nb.last.Load()).UTC().Format(jupyterTime),
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

const notebookPage = `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Calipso demo notebook</title></head>
<body>
<h1>Calipso demo notebook</h1>
<p>This is the demo workload Calipso launches on its embedded default: it stands in
for a Jupyter server (token login, <a href="api/status">api/status</a>) so that a
launch can be tried with no image registry.</p>
</body>
</html>
`
