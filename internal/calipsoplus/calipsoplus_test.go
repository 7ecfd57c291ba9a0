package calipsoplus

import (
	"context"
	"database/sql"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/internal/testenv"
)

// calipsoPlusSchema finds shared/fixtures/calipsoplus/schema-mysql.sql above the working directory.
func calipsoPlusSchema(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		p := filepath.Join(dir, "shared", "fixtures", "calipsoplus", "schema-mysql.sql")
		if b, err := os.ReadFile(p); err == nil {
			return string(b)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			testenv.Missing(t, "CalipsoPlus schema fixture", "no shared/fixtures/calipsoplus above the working directory")
		}
		dir = parent
	}
}

// calipsoPlusRows is a small CalipsoPlus site with the oddities real ones have.
const calipsoPlusRows = `
INSERT INTO auth_user (id, password, is_superuser, username, first_name, last_name, email, is_staff, is_active, date_joined) VALUES
 (1, 'pbkdf2_sha256$x', 1, 'admin', '', '', 'admin@example.org', 1, 1, '2018-01-01'),
 (2, 'pbkdf2_sha256$x', 0, 'alice', 'Alice', 'A', 'alice@example.org', 0, 1, '2018-02-01'),
 (3, 'pbkdf2_sha256$x', 0, 'bob', 'Bob', 'B', 'bob@example.org', 0, 1, '2018-03-01'),
 (4, 'pbkdf2_sha256$x', 0, 'gone', '', '', '', 0, 0, '2018-03-01'),
 (5, 'pbkdf2_sha256$x', 0, 'bad name', '', '', '', 0, 1, '2018-03-01');
INSERT INTO calipso_users (id, calipso_uid, bio, location, user_id) VALUES
 (10, 'a0000000000000000000000000000001', '', '', 1),
 (20, 'a0000000000000000000000000000002', '', '', 2),
 (30, 'a0000000000000000000000000000003', '', '', 3),
 (40, 'a0000000000000000000000000000004', '', '', 4);
INSERT INTO calipso_experiments (id, subject, body, proposal_id, beam_line, uid, gid) VALUES
 (100, 'Protein crystals', 'MX study', '2019001', 'XALOC', '1001', '2001'),
 (200, 'Magnetism', 'Thin films', '2019002', 'BOREAS', '.', '.'),
 (300, 'Duplicate', 'again', '2019001', 'XALOC', '1001', '2001');
INSERT INTO calipso_sessions (session_number, start_date, end_date, subject, body, data_set_path, experiment_id) VALUES
 ('2019001-01', '2019-03-01 08:00:00', '2019-03-03 08:00:00', 'Shift 1', '', '[{"name": "raw", "path": "2019001/raw", "mode": "ro"}]', 100),
 ('2019002-01', NULL, NULL, 'Shift A', '', '[]', 200),
 ('2019001-02', '2019-04-01 08:00:00', NULL, 'Shift 2', '', '', 300);
INSERT INTO calipso_user_experiment (favorite, calipso_experiment_id, calipso_user_id) VALUES
 (1, 100, 20), (0, 200, 20), (0, 100, 30), (1, 200, 40);
INSERT INTO calipso_quotas (max_simultaneous, cpu, memory, hdd, calipso_user_id) VALUES
 (3, 4, '30G', '80G', 20), (1, 1, 'lots', '1G', 30);
INSERT INTO calipso_resource_types (id, resource_type) VALUES (1, 'docker_container'), (2, 'static_link'), (3, 'kubernetes'), (4, 'virtual_machine');
INSERT INTO calipso_images (public_name, image, docker_daemon, host_domain, port_hook, logs_er, protocol, cpu, memory, hdd, resource_type_id) VALUES
 ('desktop', 'calipso/desktop:1', 'unix:///var/run/docker.sock', 'localhost', '5901', '', 'VNC', 2, '3G', '5G', 1),
 ('elog', 'https://elog.example.org/', '', '', '', '', '', 0, '0', '0', 2),
 ('k8s_jupyter', 'jupyter/base-notebook', '', '', '8888', 'token=(\\w+)', 'http', 1, '2G', '5G', 3),
 ('winvm', 'win10', '', '', '3389', '', 'rdp', 2, '4G', '40G', 4),
 ('oldstyle', 'calipso/old:1', '', '', '5901', '', 'vnc', 1, '1G', '1G', NULL);
INSERT INTO calipso_containers (calipso_experiment, container_id, container_name, container_status, container_info, container_logs,
  guacamole_username, guacamole_password, vnc_password, creation_date, host_port, public_name, calipso_user_id, image_id) VALUES
 ('2019001-01', 'abc', 'alice_1', 'Running', '', '', '', '', '', '2019-03-01', '32768', 'desktop', 20, 1),
 ('2019001-01', 'def', 'alice_0', 'removed', '', '', '', '', '', '2019-03-01', '32769', 'desktop', 20, 1),
 ('2019001-01', 'ghi', 'bob_0', 'Pending', '', '', '', '', '', '2019-03-01', '32770', 'desktop', 30, NULL);
`

func TestImport(t *testing.T) {
	ctx := context.Background()
	dsn := testenv.MySQLDSN(t)
	site, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer site.Close()
	if _, err := site.ExecContext(ctx, calipsoPlusSchema(t)); err != nil {
		t.Fatalf("schema: %v", err)
	}
	if _, err := site.ExecContext(ctx, calipsoPlusRows); err != nil {
		t.Fatalf("rows: %v", err)
	}

	db, err := store.Open(ctx, "sqlite", filepath.Join(t.TempDir(), "calipso.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Migrate(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}

	src, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Import(ctx, db, *src)
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	first := rep.String()
	t.Logf("first run:\n%s", first)
	for _, want := range []string{
		"users: 3 (3 new, 1 granted admin)",
		"experiments: 2 (2 new), sessions: 3",
		"participations: 3 (3 new, 1 favourites set)",
		"quotas: 1 (1 changed)",
		"images: 5 (5 new, 0 changed)",
		"containers: 3 not imported, 2 of them may still run",
		"alice_1 (Running, alice)", "bob_0 (Pending, bob)",
		`user "gone": inactive`, `user "bad name"`, `quota of bob`,
	} {
		if !strings.Contains(first, want) {
			t.Errorf("report lacks %q", want)
		}
	}

	counts := func() map[string]int {
		t.Helper()
		m := map[string]int{}
		for _, table := range []string{"users", "experiments", "sessions", "user_experiments", "quotas", "images"} {
			var n int
			if err := db.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM "+table).Scan(&n); err != nil {
				t.Fatal(err)
			}
			m[table] = n
		}
		return m
	}
	got := counts()
	want := map[string]int{"users": 3, "experiments": 2, "sessions": 3, "user_experiments": 3, "quotas": 1, "images": 5}
	for table, n := range want {
		if got[table] != n {
			t.Errorf("%s: %d rows, want %d", table, got[table], n)
		}
	}

	t.Run("values", func(t *testing.T) {
		admin, err := db.User(ctx, "admin")
		if err != nil || !admin.IsAdmin {
			t.Errorf("admin: %+v, %v; want an admin", admin, err)
		}
		alice, err := db.User(ctx, "alice")
		if err != nil || alice.IsAdmin {
			t.Fatalf("alice: %+v, %v", alice, err)
		}
		if alice.Email != "alice@example.org" || alice.UUID != "a0000000-0000-0000-0000-000000000002" {
			t.Errorf("alice's e-mail and UUID = %q, %q; want CalipsoPlus's", alice.Email, alice.UUID)
		}
		q, err := db.Quota(ctx, alice.ID)
		wantQ := calipso.Quota{MaxSimultaneous: 3, CPUs: 4, MemoryBytes: 30 << 30, DiskBytes: 80 << 30}
		if err != nil || q != wantQ {
			t.Errorf("alice's quota = %+v, %v; want %+v", q, err, wantQ)
		}
		list, n, err := db.Experiments(ctx, alice.ID, store.ExperimentQuery{Ordering: "proposal_id", Page: 1, PageSize: 10})
		if err != nil || n != 2 {
			t.Fatalf("alice's experiments: %d, %v", n, err)
		}
		e1, e2 := list[0], list[1]
		if e1.ProposalID != "2019001" || !e1.Favorite || e1.UID == nil || *e1.UID != 1001 || *e1.GID != 2001 || len(e1.Sessions) != 2 {
			t.Errorf("2019001 = %+v (uid %v)", e1, e1.UID)
		}
		if e2.ProposalID != "2019002" || e2.Favorite || e2.UID != nil || e2.GID != nil {
			t.Errorf("2019002 = %+v; want '.' uid/gid unknown, not favourite", e2)
		}
		for _, ss := range e1.Sessions {
			switch ss.SessionNumber {
			case "2019001-01":
				if ss.StartDate.Format("2006-01-02") != "2019-03-01" || !strings.Contains(ss.DataSetPath, `"raw"`) {
					t.Errorf("session 01 = %+v", ss)
				}
			case "2019001-02":
				if ss.DataSetPath != "[]" || !ss.EndDate.IsZero() {
					t.Errorf("session 02 (merged from the duplicate proposal) = %+v", ss)
				}
			}
		}
		images := map[string]calipso.ResourceType{"desktop": calipso.Docker, "elog": calipso.StaticLink, "k8s_jupyter": calipso.Kubernetes, "winvm": calipso.VirtualMachine, "oldstyle": calipso.Docker}
		for name, rt := range images {
			im, err := db.Image(ctx, name)
			if err != nil || im.ResourceType != rt {
				t.Errorf("image %s: %+v, %v; want type %q", name, im, err, rt)
			}
		}
		if im, _ := db.Image(ctx, "desktop"); im.Protocol != "vnc" || im.Memory != "3G" || im.CPU != 2 {
			t.Errorf("desktop = %+v", im)
		}
	})

	t.Run("idempotent", func(t *testing.T) {
		auditRows := func() int {
			t.Helper()
			var n int
			if err := db.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM audit_log").Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		audited := auditRows()
		defer func() {
			if n := auditRows(); n != audited {
				t.Errorf("the second run wrote %d audit entries; it changed nothing", n-audited)
			}
		}()
		rep, err := Import(ctx, db, *src)
		if err != nil {
			t.Fatalf("second import: %v", err)
		}
		second := rep.String()
		for _, want := range []string{
			"users: 3 (0 new, 0 granted admin)", "experiments: 2 (0 new)", "participations: 3 (0 new, 0 favourites set)",
			"quotas: 1 (0 changed)", "images: 5 (0 new, 0 changed)",
		} {
			if !strings.Contains(second, want) {
				t.Errorf("second report lacks %q:\n%s", want, second)
			}
		}
		again := counts()
		for table, n := range got {
			if again[table] != n {
				t.Errorf("%s: %d rows after the second run, %d after the first", table, again[table], n)
			}
		}
	})
}

func TestImportUnreadableSource(t *testing.T) {
	db, err := store.Open(t.Context(), "sqlite", filepath.Join(t.TempDir(), "calipso.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	src, err := mysql.ParseDSN("u:p@unix(/nonexistent.sock)/calipsoplus")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Import(t.Context(), db, *src); err == nil || !strings.Contains(err.Error(), "read calipsoplus: users") {
		t.Errorf("Import = %v, want it to say which database and table it could not read", err)
	}
}

func TestIdentity(t *testing.T) {
	n := func(i int) *int { return &i }
	tests := []struct {
		in   string
		want *int
	}{{"1001", n(1001)}, {" 0 ", n(0)}, {".", nil}, {"", nil}, {"-1", nil}, {"abc", nil}}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got := identity(tt.in)
			if (got == nil) != (tt.want == nil) || (got != nil && *got != *tt.want) {
				t.Errorf("identity(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}
