package settings_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/settings"
)

func noenv(string) string { return "" }

func TestEmbeddedProfilesLoad(t *testing.T) {
	for _, p := range []string{"local", "test"} {
		t.Run(p, func(t *testing.T) {
			s, err := settings.Load(p, noenv)
			if err != nil {
				t.Fatalf("load %s: %v", p, err)
			}
			if s.Environment != p || s.Quotas.Default.MaxSimultaneous != 5 || s.Quotas.Default.MemoryBytes != 30<<30 ||
				s.Quotas.Default.DiskBytes != 80<<30 || s.Quotas.Default.CPUs != 10 || s.Pagination.Experiments != 7 || s.Pagination.Users != 20 {
				t.Fatalf("%s: unexpected values %+v", p, s)
			}
			// Only the local profile builds the demo images: tests make their own.
			if s.Docker.DemoImages != (p == "local") {
				t.Errorf("%s: docker.demo_images = %v", p, s.Docker.DemoImages)
			}
			if !filepath.IsAbs(s.Workloads.DatasetsRoot) {
				t.Errorf("datasets root %q is not made absolute", s.Workloads.DatasetsRoot)
			}
		})
	}
}

func TestChoiceFromEnvironment(t *testing.T) {
	s, err := settings.Load("", func(k string) string {
		if k == settings.EnvSettings {
			return "test"
		}
		return ""
	})
	if err != nil || s.Environment != "test" {
		t.Fatalf("CALIPSO_SETTINGS=test gave %v, %v", s, err)
	}
}

// The prod example must refuse to start without its secrets, and name each problem.
func TestProdRefusesWithoutSecrets(t *testing.T) {
	_, err := settings.Load("prod", noenv)
	var se *settings.Error
	if !errors.As(err, &se) {
		t.Fatalf("prod example loaded without secrets: %v", err)
	}
	for _, key := range []string{"secret_key_file", "database.dsn_file", "user_office.password_file", "server.metrics_token_file"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error does not name %s:\n%v", key, err)
		}
	}
}

func TestValidationReportsEveryProblem(t *testing.T) {
	local, _ := settings.Embedded("local")
	cases := []struct {
		name   string
		edit   func(string) string
		expect []string
	}{
		{"unknown keys", func(s string) string { return s + "\nbogus = 1\n[quotas.extra]\nx = 2\n" }, []string{"bogus: unknown setting", "quotas.extra"}},
		{"bad units", func(s string) string {
			return strings.NewReplacer(`memory = "30G"`, `memory = "30Q"`, `hdd = "80G"`, `hdd = "lots"`, `cpu = "10"`, `cpu = "ten"`).Replace(s)
		}, []string{"quotas.memory", "quotas.hdd", "quotas.cpu"}},
		// The frontend reads quota sizes as whole gigabytes.
		{"sizes not whole gigabytes", func(s string) string {
			return strings.NewReplacer(`memory = "30G"`, `memory = "512M"`, `hdd = "80G"`, `hdd = "1.5G"`).Replace(s)
		}, []string{"quotas.memory", "quotas.hdd"}},
		{"bad enums and urls", func(s string) string {
			return strings.NewReplacer(`driver = "sqlite"`, `driver = "oracle"`, `frontend_url = "http://localhost:4200"`, `frontend_url = "localhost"`,
				`log_level = "info"`, `log_level = "loud"`).Replace(s)
		}, []string{"database.driver", "frontend_url", "log_level"}},
		{"root and mounts", func(s string) string {
			return strings.NewReplacer(`uid = 1000`, `uid = 0`, `extra_mounts = []`, `extra_mounts = ["/a:/b:rx", "rel:/c"]`).Replace(s)
		}, []string{"workloads.uid", "workloads.extra_mounts"}},
		{"pids limit off", func(s string) string { return strings.Replace(s, `pids_limit = 1024`, `pids_limit = 0`, 1) }, []string{"workloads.pids_limit"}},
		{"pids limit negative", func(s string) string { return strings.Replace(s, `pids_limit = 1024`, `pids_limit = -1`, 1) }, []string{"workloads.pids_limit"}},
		{"wrong type", func(s string) string {
			return strings.Replace(s, `max_simultaneous = 5`, `max_simultaneous = "five"`, 1)
		}, []string{"max_simultaneous"}},
		{"base path", func(s string) string {
			return strings.Replace(s, `base_path = "/calipsoplus-services/"`, `base_path = "calipso"`, 1)
		}, []string{"base_path"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := settings.Parse([]byte(c.edit(string(local))), c.name, noenv)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, want := range c.expect {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not mention %q:\n%v", want, err)
				}
			}
		})
	}
}

func TestProdStrictness(t *testing.T) {
	prod, _ := settings.Embedded("prod")
	dir := t.TempDir()
	for _, f := range []string{"database.dsn", "guacamole.dsn", "user_office.password"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "metrics.token"), []byte(strings.Repeat("m", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	text := strings.NewReplacer("/etc/calipso/database.dsn", filepath.Join(dir, "database.dsn"),
		"/etc/calipso/guacamole.dsn", filepath.Join(dir, "guacamole.dsn"),
		"/etc/calipso/user_office.password", filepath.Join(dir, "user_office.password"),
		"/etc/calipso/metrics.token", filepath.Join(dir, "metrics.token"),
		`umbrella.psi.ch/idp/shibboleth"`, `umbrella.example/idp"`).Replace(string(prod))
	env := func(k string) string {
		if k == "CALIPSO_SECRET_KEY" {
			return strings.Repeat("k", 40)
		}
		return ""
	}
	text = strings.Replace(text, "[umbrella]\nenabled = true", "[umbrella]\nenabled = false", 1)
	if _, err := settings.Parse([]byte(text), "prod", env); err != nil {
		t.Fatalf("a complete prod file is refused: %v", err)
	}
	for name, edit := range map[string]func(string) string{
		"wildcard hosts": func(s string) string {
			return strings.Replace(s, `allowed_hosts = ["calipso.facility.example"]`, `allowed_hosts = ["*"]`, 1)
		},
		"insecure cookies": func(s string) string { return strings.Replace(s, "secure_cookies = true", "secure_cookies = false", 1) },
		"demo office":      func(s string) string { return strings.Replace(s, "embedded = false", "embedded = true", 1) },
		"demo images":      func(s string) string { return strings.Replace(s, "demo_images = false", "demo_images = true", 1) },
		// /metrics, anonymous, names every route and counts logins.
		"metrics without a token": func(s string) string {
			return regexp.MustCompile(`(?m)^metrics_token_file = .*$`).ReplaceAllString(s, "")
		},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := settings.Parse([]byte(edit(text)), "prod", env); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if _, err := settings.Parse([]byte(text), "prod", noenv); err == nil || !strings.Contains(err.Error(), "secret") {
		t.Fatalf("prod without a secret key: %v", err)
	}
}

func TestSecretKeyCreatedOnce(t *testing.T) {
	s, err := settings.Load("local", noenv)
	if err != nil {
		t.Fatal(err)
	}
	s.SecretKeyFile = filepath.Join(t.TempDir(), "sub", "key")
	s.SecretKey = nil
	if err := s.EnsureSecretKey(); err != nil || len(s.SecretKey) < 32 {
		t.Fatalf("create: %v (%d bytes)", err, len(s.SecretKey))
	}
	first := string(s.SecretKey)
	s.SecretKey = nil
	if err := s.EnsureSecretKey(); err != nil || string(s.SecretKey) != first {
		t.Fatalf("second start made another key: %v", err)
	}
}

func TestParseMount(t *testing.T) {
	for in, ok := range map[string]bool{"/a:/b": true, "/a:/b:rw": true, "/a:/b:ro": true, "/a:/b:x": false, "a:/b": false, "/a/../b:/c": false, "/a": false} {
		if _, err := settings.ParseMount(in); (err == nil) != ok {
			t.Errorf("ParseMount(%q) = %v, want ok=%v", in, err, ok)
		}
	}
}

// TestExtraMountsParsedOnce: the launch service reads workloads.Mounts, parsed when
// the settings are loaded.
func TestExtraMountsParsedOnce(t *testing.T) {
	local, _ := settings.Embedded("local")
	text := strings.Replace(string(local), `extra_mounts = []`, `extra_mounts = ["/opt/tools:/opt/tools", "/scratch:/scratch:rw"]`, 1)
	s, err := settings.Parse([]byte(text), "test", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	want := []provisioner.Mount{{Source: "/opt/tools", Target: "/opt/tools", ReadOnly: true}, {Source: "/scratch", Target: "/scratch"}}
	if !slices.Equal(s.Workloads.Mounts, want) {
		t.Fatalf("Mounts = %+v, want %+v", s.Workloads.Mounts, want)
	}
}

// TestPidsLimitByDefault: every profile limits the processes of workloads, and so does
// a settings file that does not mention it.
func TestPidsLimitByDefault(t *testing.T) {
	for _, profile := range settings.Profiles() {
		text, err := settings.Embedded(profile)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(text), "\npids_limit = ") {
			t.Errorf("profile %s does not show workloads.pids_limit", profile)
		}
	}
	local, _ := settings.Embedded("local")
	without := strings.Replace(string(local), "\npids_limit = ", "\n# pids_limit = ", 1)
	s, err := settings.Parse([]byte(without), "without pids_limit", noenv)
	if err != nil {
		t.Fatal(err)
	}
	if s.Workloads.PidsLimit != settings.DefaultPidsLimit || settings.DefaultPidsLimit != 1024 {
		t.Errorf("workloads.pids_limit left out = %d, want the default 1024", s.Workloads.PidsLimit)
	}
}

// TestMetricsToken (security review, finding 7): server.metrics_token comes from
// CALIPSO_METRICS_TOKEN, server.metrics_token_file or the file itself, in that
// order; a short one is refused; prod needs one while metrics are served.
func TestMetricsToken(t *testing.T) {
	local, _ := settings.Embedded("local")
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("from-the-file-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withToken := func(literal, path string) string {
		return strings.Replace(string(local), `metrics_token = ""`, fmt.Sprintf("metrics_token = %q\nmetrics_token_file = %q", literal, path), 1)
	}
	env := func(k string) string {
		if k == "CALIPSO_METRICS_TOKEN" {
			return "from-the-environment-0123"
		}
		return ""
	}
	for _, c := range []struct {
		name, text string
		getenv     func(string) string
		want       string
	}{
		{"none", string(local), noenv, ""},
		{"literal", withToken("literal-token-0123456789", ""), noenv, "literal-token-0123456789"},
		{"file", withToken("literal-token-0123456789", file), noenv, "from-the-file-0123456789"},
		{"environment", withToken("literal-token-0123456789", file), env, "from-the-environment-0123"},
	} {
		s, err := settings.Parse([]byte(c.text), c.name, c.getenv)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if s.Server.MetricsToken != c.want {
			t.Errorf("%s: token %q, want %q", c.name, s.Server.MetricsToken, c.want)
		}
	}
	for _, bad := range []string{withToken("short", ""), withToken("with spaces 0123456789", ""), withToken("", "/nonexistent/token")} {
		if _, err := settings.Parse([]byte(bad), "bad", noenv); err == nil || !strings.Contains(err.Error(), "server.metrics_token") {
			t.Errorf("accepted, or the error does not name server.metrics_token: %v", err)
		}
	}
}

// TestRetiredKeyIsExplained: a key an earlier version read fails the start with what
// replaced it, not as a typo.
func TestRetiredKeyIsExplained(t *testing.T) {
	_, err := settings.Parse([]byte("[workloads]\nstuck_after = \"10m\"\n"), "old.toml", func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "workloads.stuck_after: no longer used") || !strings.Contains(err.Error(), "lease_ttl") {
		t.Fatalf("err = %v, want the retired key explained", err)
	}
}

func TestLeaderLease(t *testing.T) {
	local, _ := settings.Embedded("local")
	kube := "[kubernetes]\nenabled = false\nkubeconfig = \"\"\nnamespace = \"calipso\"\nhost_address = \"\"\n"
	if !strings.Contains(string(local), kube) {
		t.Fatal("the local profile's [kubernetes] table changed: update this test")
	}
	for _, c := range []struct {
		name    string
		enabled bool
		lease   string
		wantErr string
	}{
		{"a Lease", true, "calipso-leader", ""},
		{"the database", true, "", ""},
		{"not an object name", true, "Calipso_Leader", "kubernetes.leader_lease"},
		{"without Kubernetes", false, "calipso-leader", "needs kubernetes.enabled"},
	} {
		t.Run(c.name, func(t *testing.T) {
			edited := strings.Replace(string(local), kube, fmt.Sprintf(
				"[kubernetes]\nenabled = %t\nleader_lease = %q\nkubeconfig = \"\"\nnamespace = \"calipso\"\nhost_address = \"nodes.example\"\n", c.enabled, c.lease), 1)
			s, err := settings.Parse([]byte(edited), c.name, noenv)
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatal(err)
			case c.wantErr == "" && s.Kubernetes.LeaderLease != c.lease:
				t.Errorf("leader_lease = %q, want %q", s.Kubernetes.LeaderLease, c.lease)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Errorf("err = %v, want it to mention %q", err, c.wantErr)
			}
		})
	}
}

func TestAccess(t *testing.T) {
	local, _ := settings.Embedded("local")
	t.Run("roles", func(t *testing.T) {
		s, err := settings.Parse(append(local, []byte(`
[access.roles.staff]
oidc_groups = ["beamline-staff"]
memory = "64G"
[access.roles.visitor]
permissions = ["launch"]
max_simultaneous = 1
images = ["jupyter"]
max_lifetime = "48h"
saml_values = ["urn:visitor"]
`)...), "roles", noenv)
		if err != nil {
			t.Fatal(err)
		}
		p := s.Access.Policy
		staff, visitor := p.Roles[calipso.RoleStaff], p.Roles["visitor"]
		// A built-in role keeps what the table leaves out; its quota starts from [quotas].
		if !slices.Contains(staff.Permissions, calipso.PermSupportAccess) || staff.Quota == nil ||
			staff.Quota.MemoryBytes != 64<<30 || staff.Quota.MaxSimultaneous != 5 || staff.Quota.CPUs != 10 {
			t.Errorf("staff = %+v (quota %+v)", staff, staff.Quota)
		}
		if !slices.Equal(visitor.Permissions, []calipso.Permission{calipso.PermLaunch}) || visitor.Quota.MaxSimultaneous != 1 ||
			!slices.Equal(visitor.Images, []string{"jupyter"}) || visitor.MaxLifetime != 48*time.Hour {
			t.Errorf("visitor = %+v", visitor)
		}
		if got := p.OIDCRoles([]string{"beamline-staff", "other"}); !slices.Equal(got, []string{calipso.RoleStaff}) {
			t.Errorf("OIDC groups map to %v", got)
		}
		if got := p.SAMLRoles([]string{"urn:visitor"}); !slices.Equal(got, []string{"visitor"}) {
			t.Errorf("SAML values map to %v", got)
		}
		if p.Roles[calipso.RoleUser].Quota != nil || p.DefaultRole != calipso.RoleUser {
			t.Errorf("the user role changed: %+v, default %q", p.Roles[calipso.RoleUser], p.DefaultRole)
		}
	})
	for _, c := range []struct{ name, toml, want string }{
		{"unknown permission", "[access.roles.x]\npermissions = [\"fly\"]\n", "access.roles.x.permissions"},
		{"site role without permissions", "[access.roles.x]\nmax_simultaneous = 1\n", "must list its permissions"},
		{"bad role name", "[access.roles.Beamline]\npermissions = []\n", "access.roles.Beamline"},
		{"admin loses admin", "[access.roles.admin]\npermissions = [\"launch\"]\n", "the admin role keeps"},
		{"bad quota", "[access.roles.staff]\nmemory = \"lots\"\n", "access.roles.staff.memory"},
		{"unknown default role", "", "access.default_role"},
		{"token lifetime above the maximum", "", "access.token_lifetime"},
	} {
		t.Run(c.name, func(t *testing.T) {
			text := string(local) + "\n" + c.toml
			switch c.name {
			case "unknown default role":
				text = strings.Replace(text, `default_role = "user"`, `default_role = "guest"`, 1)
			case "token lifetime above the maximum":
				text = strings.Replace(text, `token_lifetime = "720h"`, `token_lifetime = "9000h"`, 1)
			}
			_, err := settings.Parse([]byte(text), c.name, noenv)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error naming %q", err, c.want)
			}
		})
	}
}

func TestLifecycleSettings(t *testing.T) {
	local, _ := settings.Embedded("local")
	s, err := settings.Parse(append(local, []byte("\n[lifecycle.image_lifetimes]\nbase_jupyter = \"8h\"\n")...), "ok", noenv)
	if err == nil {
		t.Fatal("a second [lifecycle.image_lifetimes] table was accepted")
	}
	text := strings.Replace(string(local), "[lifecycle.image_lifetimes]          # public name = lifetime, overriding default_lifetime\n",
		"[lifecycle.image_lifetimes]\nbase_jupyter = \"8h\"\n", 1)
	text = strings.Replace(text, `default_lifetime = "0s"`, `default_lifetime = "72h"`, 1)
	if s, err = settings.Parse([]byte(text), "ok", noenv); err != nil {
		t.Fatal(err)
	}
	if p := s.Lifecycle.Policy; p.Default != 72*time.Hour || p.Images["base_jupyter"] != 8*time.Hour || p.SessionGrace != 168*time.Hour {
		t.Errorf("policy = %+v", p)
	}
	for _, c := range []struct{ name, from, to, want string }{
		{"action", `expiry_action = "stop"`, `expiry_action = "delete"`, "lifecycle.expiry_action"},
		{"idle too soon", `idle_after = "0s"`, `idle_after = "5m"`, "lifecycle.idle_after"},
		{"negative lifetime", `default_lifetime = "0s"`, `default_lifetime = "-1h"`, "lifecycle.default_lifetime"},
		{"mail without a server", "[mail]\nenabled = false", "[mail]\nenabled = true", "mail.host"},
		{"mail from nobody", "[mail]\nenabled = false\nhost = \"\"", "[mail]\nenabled = true\nhost = \"smtp.example\"", "mail.from"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(string(local), c.from) {
				t.Fatalf("local.toml has no %q", c.from)
			}
			_, err := settings.Parse([]byte(strings.Replace(string(local), c.from, c.to, 1)), c.name, noenv)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error naming %q", err, c.want)
			}
		})
	}
}
