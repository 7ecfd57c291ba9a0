package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// settingsFile writes a local-profile settings file whose state lives in dir.
func settingsFile(t *testing.T, dir string) string {
	t.Helper()
	var buf bytes.Buffer
	if err := run(context.Background(), []string{"settings", "show", "local"}, nil, &buf, &buf); err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(buf.String(), ".calipso/", dir+"/")
	text = strings.Replace(text, `data_dir = ".calipso"`, `data_dir = "`+dir+`"`, 1)
	text = strings.Replace(text, "[docker]\nenabled = true", "[docker]\nenabled = false", 1)
	path := filepath.Join(dir, "settings.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func runCLI(t *testing.T, settings string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), append([]string{"--settings", settings}, args...), func(string) string { return "" }, &out, &errOut)
	return out.String() + errOut.String(), err
}

func TestCommands(t *testing.T) {
	dir := t.TempDir()
	cfg := settingsFile(t, dir)
	users := filepath.Join(dir, "users.csv")
	os.WriteFile(users, []byte("username,is_admin,uid,gid,home\ndave,false,3000,3000,/home/dave\nerin,true,,,\n"), 0o600)
	badUsers := filepath.Join(dir, "bad-users.csv")
	os.WriteFile(badUsers, []byte("frank\n../root\ngina,maybe\n"), 0o600)
	exps := filepath.Join(dir, "experiments.csv")
	os.WriteFile(exps, []byte("proposal_id,subject,body,beam_line,uid,gid\n2024001,Crystals,,BL01,.,.\n2024002,Powder,x,BL02,4000,4000\n"), 0o600)
	sessions := filepath.Join(dir, "sessions.csv")
	os.WriteFile(sessions, []byte("2024001,S1,first,,2024-01-01,2024-01-02,\"{'/2024001': {'bind': '/data', 'mode': 'ro'}}\"\n2024001,S2\n"), 0o600)
	badSessions := filepath.Join(dir, "bad-sessions.csv")
	os.WriteFile(badSessions, []byte("2024001,S3,,,,,\"{'/../etc': {'bind': '/data'}}\"\n2024001,S4,,,yesterday\n"), 0o600)

	cases := []struct {
		name    string
		args    []string
		wantErr bool
		want    []string
	}{
		{"help", []string{"help"}, false, []string{"Usage: calipso"}},
		{"unknown", []string{"frobnicate"}, true, nil},
		{"settings check", []string{"settings", "check"}, false, []string{"ok"}},
		{"migrate", []string{"migrate"}, false, []string{"up to date"}},
		{"migrate status", []string{"migrate", "--status"}, false, []string{"00001"}},
		{"user add", []string{"user", "add", "bob", "--admin", "--uid", "1500", "--gid", "1500"}, false, []string{"user bob saved"}},
		{"user add half identity", []string{"user", "add", "bad", "--uid", "1"}, true, nil},
		{"user add bad name", []string{"user", "add", "../x"}, true, nil},
		{"user import", []string{"user", "import", users}, false, []string{"2 records imported"}},
		{"user import names bad lines and imports nothing", []string{"user", "import", badUsers}, true, nil},
		{"experiment import", []string{"experiment", "import", exps}, false, []string{"2 records imported"}},
		{"experiment import again is idempotent", []string{"experiment", "import", exps}, false, []string{"2 records imported"}},
		{"session import", []string{"session", "import", sessions}, false, []string{"2 records imported"}},
		{"session import refuses traversal and bad dates", []string{"session", "import", badSessions}, true, nil},
		{"session add", []string{"session", "add", "2024002", "S1", "--data-set-path", "[]"}, false, []string{"saved"}},
		{"link", []string{"link", "dave", "2024001"}, false, []string{"done"}},
		{"link unknown experiment", []string{"link", "dave", "9999"}, true, nil},
		{"quota set", []string{"quota", "set", "dave", "--cpu", "2", "--memory", "4G", "--hdd", "10G", "--max", "2"}, false, []string{"quota of dave set"}},
		{"quota set bad unit", []string{"quota", "set", "dave", "--cpu", "2", "--memory", "4Q", "--hdd", "10G", "--max", "2"}, true, nil},
		{"unlink", []string{"unlink", "dave", "2024001"}, false, []string{"done"}},
		{"user admin revoke", []string{"user", "admin", "bob", "--revoke"}, false, []string{"admin: false"}},
		{"bootstrap", []string{"bootstrap", "--admin", "root-admin"}, false, []string{"up to date", "admins: carol, root-admin", "staff"}},
		{"bootstrap again", []string{"bootstrap", "--admin", "root-admin"}, false, []string{"admins: carol, root-admin"}},
		{"user role", []string{"user", "role", "bob", "staff"}, false, []string{"user bob roles: staff, user"}},
		{"user role unknown", []string{"user", "role", "bob", "wizard"}, true, nil},
		{"user role revoke", []string{"user", "role", "bob", "staff", "--revoke"}, false, []string{"user bob roles: user\n"}},
		{"token create", []string{"token", "create", "svc-ci", "--name", "ci", "--scope", "launch", "--expires", "24h"}, false, []string{"scope launch", "calipso_pat_"}},
		{"token create beyond the roles", []string{"token", "create", "svc-ci", "--name", "ci", "--scope", "admin"}, true, nil},
		{"token create too long", []string{"token", "create", "svc-ci", "--name", "ci", "--expires", "87600h"}, true, nil},
		{"token revoke", []string{"token", "revoke", "1"}, false, []string{"token 1 revoked"}},
		{"token list", []string{"token", "list", "svc-ci"}, false, []string{"svc-ci", "ci", "launch", "revoked"}},
		{"experiment remove", []string{"experiment", "remove", "2024002"}, false, []string{"removed"}},
		{"user remove", []string{"user", "remove", "erin"}, false, []string{"removed"}},
		{"user remove unknown", []string{"user", "remove", "erin"}, true, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := runCLI(t, cfg, c.args...)
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, want error %v; output:\n%s", err, c.wantErr, out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, strings.ReplaceAll(w, `\n`, "\n")) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}

	// The bad user file named its lines and imported nothing.
	_, err := runCLI(t, cfg, "user", "import", badUsers)
	if err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("errors should name lines 2 and 3: %v", err)
	}
	if _, err := runCLI(t, cfg, "user", "admin", "frank"); err == nil {
		t.Fatal("frank was imported from a file with bad lines")
	}
}

func TestBadSettingsFileIsAClearStartupError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(path, []byte("environment = \"moon\"\n[quotas]\nmemory = \"lots\"\nnonsense = true\n"), 0o600)
	out, err := runCLI(t, path, "settings", "check")
	if err == nil {
		t.Fatalf("bad settings accepted:\n%s", out)
	}
	for _, key := range []string{"environment", "quotas.memory", "quotas.nonsense"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error does not name %s: %v", key, err)
		}
	}
	if _, err := runCLI(t, filepath.Join(t.TempDir(), "missing.toml")); err == nil {
		t.Fatal("a missing settings file was accepted")
	}
}

func TestHealthcheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"status":"ok"}`))
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	var out bytes.Buffer
	if err := healthcheck(context.Background(), "0.0.0.0:"+port, &out); err != nil || !strings.Contains(out.String(), "ok") {
		t.Fatalf("healthy server: %v %q", err, out.String())
	}
	srv.Close()
	if err := healthcheck(context.Background(), "127.0.0.1:"+port, &out); err == nil {
		t.Fatal("a closed server passed the health check")
	}
}

// The demo images run `calipso demo-workload KIND` with no settings file at all: the
// command is dispatched before settings are loaded, and is not in the help.
func TestDemoWorkloadNeedsNoSettings(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.toml")
	out, err := runCLI(t, missing, "demo-workload", "bogus")
	if err == nil || !strings.Contains(err.Error(), "usage: calipso demo-workload notebook|desktop") {
		t.Fatalf("err = %v, want the command's usage (not a settings error)\n%s", err, out)
	}
	if help, _ := runCLI(t, missing, "help"); strings.Contains(help, "demo-workload") {
		t.Errorf("the hidden command is in the help:\n%s", help)
	}
}
