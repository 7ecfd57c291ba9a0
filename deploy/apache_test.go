package deploy_test

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calipsoplus/calipso/internal/testenv"
)

// apacheBinary is Debian's httpd (deploy/test.d/apache.sh installs it).
func apacheBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("CALIPSO_TEST_APACHE")
	if bin == "" {
		if _, err := os.Stat("/usr/sbin/apache2"); err == nil {
			bin = "/usr/sbin/apache2"
		} else {
			testenv.Missing(t, "Apache httpd", "CALIPSO_TEST_APACHE is not set and /usr/sbin/apache2 is missing (deploy/test.d/apache.sh installs it)")
		}
	}
	return bin
}

// startApache runs httpd in the foreground with a generated main config that loads
// the modules the shipped file needs and includes it, listening on port.
func startApache(t *testing.T, port int, frontendRoot, backend string) {
	t.Helper()
	bin := apacheBinary(t)
	dir := t.TempDir()
	runAs := "www-data"
	if _, err := user.Lookup(runAs); err != nil {
		runAs = "nobody"
	}
	group := runAs
	if _, err := user.LookupGroup(group); err != nil {
		group = "nogroup"
	}
	modules := "/usr/lib/apache2/modules"
	var load strings.Builder
	for _, m := range []string{"mpm_event", "authz_core", "mime", "dir", "headers", "proxy", "proxy_http"} {
		fmt.Fprintf(&load, "LoadModule %s_module %s/mod_%s.so\n", m, modules, m)
	}
	conf := fmt.Sprintf(`ServerRoot %[1]s
%[2]sListen 127.0.0.1:%[3]d
PidFile %[1]s/httpd.pid
DefaultRuntimeDir %[1]s
ErrorLog %[1]s/error.log
LogLevel warn
User %[4]s
Group %[5]s
ServerName 127.0.0.1
TypesConfig /etc/mime.types
LogFormat "%%h %%l %%u %%t \"%%r\" %%>s %%b" combined
Define APACHE_LOG_DIR %[1]s
Define CALIPSO_PORT %[3]d
Define CALIPSO_SERVER_NAME 127.0.0.1
Define CALIPSO_PROTO http
Define CALIPSO_FRONTEND_ROOT %[6]s
Define CALIPSO_BACKEND %[7]s
Include %[8]s
`, dir, load.String(), port, runAs, group, frontendRoot, backend, deployFile("apache", "calipso.conf"))
	confPath := filepath.Join(dir, "httpd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-t", "-f", confPath).CombinedOutput(); err != nil {
		t.Fatalf("apache2 -t: %v\n%s", err, out)
	}
	var logs syncBuffer
	cmd := exec.Command(bin, "-f", confPath, "-DFOREGROUND")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start apache: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // graceful stop of httpd
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("apache output:\n%s\nerror.log:\n%s", logs.String(), errLog)
		}
	})
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/", port), done, &logs)
}

// TestBehindApache drives a real calipso through a real Apache running the shipped
// deploy/apache/calipso.conf.
func TestBehindApache(t *testing.T) {
	apacheBinary(t)
	cport, aport := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
	public := fmt.Sprintf("http://127.0.0.1:%d", aport)
	apiBase := public + "/calipsoplus-services/"

	// Apache's workers run as www-data: t.TempDir's parent is private to root.
	frontend, err := os.MkdirTemp("", "calipso-frontend-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(frontend) })
	if err := os.Chmod(frontend, 0o755); err != nil {
		t.Fatal(err)
	}
	const marker = "<title>Calipso frontend</title>"
	if err := os.WriteFile(filepath.Join(frontend, "index.html"), []byte("<html>"+marker+"</html>"), 0o644); err != nil {
		t.Fatal(err)
	}
	startCalipso(t, calipsoOptions{
		listen:         fmt.Sprintf("127.0.0.1:%d", cport),
		frontendURL:    public,
		trustedProxies: []string{"127.0.0.1"},
		umbrellaLogin:  public + "/Shibboleth.sso/Login",
	})
	startApache(t, aport, frontend, fmt.Sprintf("http://127.0.0.1:%d", cport))

	t.Run("frontend static files", func(t *testing.T) {
		b := newBrowser(t, public+"/")
		for _, path := range []string{"", "experiments/2019001"} { // the second: the app's own route
			resp, body := b.do(http.MethodGet, path, nil, nil)
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), marker) {
				t.Errorf("GET /%s: %s %q; want index.html", path, resp.Status, body)
			}
		}
	})

	t.Run("health is not proxied", func(t *testing.T) {
		b := newBrowser(t, public+"/")
		if resp, body := b.do(http.MethodGet, "metrics", nil, nil); strings.Contains(string(body), "calipso_") {
			t.Errorf("GET /metrics through Apache: %s, answered by calipso", resp.Status)
		}
	})

	t.Run("login, read and launch", func(t *testing.T) {
		b := newBrowser(t, apiBase)
		resp := b.login("alice", "alice-demo")
		session := cookieNamed(resp, "sessionid")
		if session == nil || session.Path != "/calipsoplus-services/" || session.Secure || !session.HttpOnly {
			t.Errorf("session cookie = %+v; want path /calipsoplus-services/, HttpOnly, not Secure over http", session)
		}
		forged := map[string]string{"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
		for name, headers := range map[string]map[string]string{"plain": nil, "forged X-Forwarded-*": forged} {
			next := b.next("users/alice/experiments/", headers)
			if !strings.HasPrefix(next, apiBase+"users/alice/experiments/?") || !strings.Contains(next, "page=2") {
				t.Errorf("%s: next = %q; want it under %s", name, next, apiBase)
			}
		}
		resp, body := b.do(http.MethodGet, "resource/run/alice/2019001~2019001-01/static_link/", nil, nil)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("launch static_link: %s %s", resp.Status, body)
		}
		resp, body = b.do(http.MethodGet, "resource/list/alice/", nil, nil)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "static_link") {
			t.Errorf("resource/list/alice/: %s %s; want the launched link", resp.Status, body)
		}
	})

	t.Run("admin page links", func(t *testing.T) {
		b := newBrowser(t, apiBase)
		b.login("carol", "carol-demo")
		if next := b.next("users/", nil); !strings.HasPrefix(next, apiBase+"users/?") {
			t.Errorf("users/ next = %q; want it under %s", next, apiBase)
		}
	})

	t.Run("umbrella redirects", func(t *testing.T) {
		b := newBrowser(t, apiBase)
		resp, _ := b.do(http.MethodGet, "umbrella/login/", nil, nil)
		loc := resp.Header.Get("Location")
		wantTarget := "target=" + strings.NewReplacer(":", "%3A", "/", "%2F").Replace(apiBase+"umbrella/frontend/")
		if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, public+"/Shibboleth.sso/Login?") || !strings.Contains(loc, wantTarget) {
			t.Errorf("umbrella/login/: %s Location %q; want the SP login with %s", resp.Status, loc, wantTarget)
		}
		resp, _ = b.do(http.MethodGet, "umbrella/frontend/", nil, nil)
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != public+"/autologin" {
			t.Errorf("umbrella/frontend/: %s Location %q; want %s/autologin", resp.Status, loc, public)
		}
	})

	t.Run("client's Umbrella headers are dropped by Apache", func(t *testing.T) {
		b := newBrowser(t, apiBase)
		b.do(http.MethodGet, "umbrella/frontend/", nil, map[string]string{"EAAHash": "forged-hash", "uid": "mallory", "mail": "m@example.org"})
		if resp, body := b.do(http.MethodGet, "umbrella/session/", nil, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("umbrella/session/ after forged headers through Apache: %s %s; want 404", resp.Status, body)
		}
	})

	t.Run("control: calipso honours the headers from its trusted proxy", func(t *testing.T) {
		// Straight to calipso from 127.0.0.1, which it trusts: the same headers now count,
		// so the test above fails if Apache stops dropping them.
		b := newBrowser(t, fmt.Sprintf("http://127.0.0.1:%d/calipsoplus-services/", cport))
		b.do(http.MethodGet, "umbrella/frontend/", nil, map[string]string{"EAAHash": "trusted-hash", "uid": "dave"})
		if resp, body := b.do(http.MethodGet, "umbrella/session/", nil, nil); resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "trusted-hash") {
			t.Errorf("umbrella/session/: %s %s; want the hash", resp.Status, body)
		}
	})
}

// TestUntrustedClientHeaders: a calipso that trusts only 127.0.0.2 ignores forwarding
// and Umbrella headers sent from 127.0.0.1.
func TestUntrustedClientHeaders(t *testing.T) {
	cport := freePort(t, "127.0.0.1")
	direct := fmt.Sprintf("http://127.0.0.1:%d/calipsoplus-services/", cport)
	startCalipso(t, calipsoOptions{
		listen:         fmt.Sprintf("127.0.0.1:%d", cport),
		frontendURL:    "http://frontend.example",
		trustedProxies: []string{"127.0.0.2"},
		umbrellaLogin:  "http://sp.example/Shibboleth.sso/Login",
	})
	b := newBrowser(t, direct)
	b.login("alice", "alice-demo")
	forged := map[string]string{"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https", "X-Forwarded-For": "10.9.9.9"}
	if next := b.next("users/alice/experiments/", forged); !strings.HasPrefix(next, direct) || strings.Contains(next, "evil.example") {
		t.Errorf("next = %q; want it under %s, the forged host ignored", next, direct)
	}
	resp, _ := b.do(http.MethodGet, "umbrella/login/", nil, forged)
	if loc := resp.Header.Get("Location"); strings.Contains(loc, "evil.example") || strings.Contains(loc, "https%3A") {
		t.Errorf("umbrella/login/ Location %q carries the forged host or scheme", loc)
	}

	u := newBrowser(t, direct)
	u.do(http.MethodGet, "umbrella/frontend/", nil, map[string]string{"EAAHash": "forged-hash", "uid": "mallory"})
	if resp, body := u.do(http.MethodGet, "umbrella/session/", nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("umbrella/session/ after headers from an untrusted address: %s %s; want 404", resp.Status, body)
	}
}
