package launch_test

import (
	"context"
	"database/sql"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/guacamole"
	"github.com/calipsoplus/calipso/internal/launch"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/internal/testenv"
	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/provisioner/docker"
	"github.com/calipsoplus/calipso/settings"
)

// Images the tests launch: all run the test workload, which listens on every port.
const (
	desktopImage  = "desk"     // vnc: gets a Guacamole record
	notebookImage = "notebook" // http with a token in its log
	missingImage  = "missing"  // a reference the engine does not have
	tokenRegex    = `token=([0-9a-f]+)`
)

// env is one launch.Service on the real engine, a real application database and a
// real Guacamole database, all fresh and private to the test.
type env struct {
	svc      *launch.Service
	db       *store.Store
	cfg      *settings.Settings
	engine   *docker.Provisioner
	cli      *client.Client
	guacDB   *sql.DB // nil without Guacamole
	instance string
	workload string // the test workload image
	user     calipso.User
	datasets string // datasets root
	output   string // output root
}

type envOptions struct {
	driver    string // "sqlite" (default) or "mysql"
	noGuac    bool
	dockerURL string                               // engine URL; empty: the test engine
	desktops  launch.Desktops                      // replaces the real Guacamole store
	edit      func(*settings.Settings)             // settings changes before New
	log       *slog.Logger                         // default: discard
	hook      func(launch.Stage, calipso.Resource) // see Service.SetHook
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	e := &env{cli: testenv.DockerClient(t), instance: testenv.Instance(t)}
	image := testenv.WorkloadImage(t)
	e.workload = image
	ctx := context.Background()

	e.db = openStore(t, o.driver)
	e.datasets, e.output = filepath.Join(t.TempDir(), "datasets"), filepath.Join(t.TempDir(), "output")
	cfg := settings.Defaults()
	cfg.Instance = e.instance
	cfg.Workloads.DatasetsRoot, cfg.Workloads.OutputRoot = e.datasets, e.output
	cfg.Workloads.LaunchTimeout = settings.Duration{Duration: 2 * time.Minute}
	cfg.Workloads.ReadyTimeout = settings.Duration{Duration: 30 * time.Second}
	cfg.Guacamole.Hostname = "guacd-sees-me"
	cfg.Workloads.AllowUnenforced = []string{"disk"} // Docker does not limit disk
	if o.edit != nil {
		o.edit(cfg)
	}
	e.cfg = cfg
	log := o.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	var err error
	e.engine, err = docker.New(ctx, docker.Config{
		Host: o.dockerURL, Instance: e.instance, HostAddress: "127.0.0.1", PublishAddress: "127.0.0.1",
		ReadyTimeout: cfg.Workloads.ReadyTimeout.Duration, StopTimeout: 3 * time.Second, Logger: log,
	})
	if err != nil {
		t.Fatalf("docker.New: %v", err)
	}
	t.Cleanup(func() { e.engine.Close() })

	desktops := o.desktops
	if desktops == nil && !o.noGuac {
		var gs *guacamole.Store
		gs, e.guacDB = guacStore(t, e.instance)
		desktops = gs
	}
	e.svc = launch.New(e.db, map[calipso.ResourceType]provisioner.Provisioner{calipso.Docker: e.engine}, desktops, launch.ConfigFrom(cfg), log)
	if o.hook != nil {
		e.svc.SetHook(func(_ context.Context, st launch.Stage, r calipso.Resource) { o.hook(st, r) })
	}

	for _, im := range []calipso.Image{
		{PublicName: desktopImage, Image: image, Protocol: "vnc", CPU: 0.5, Memory: "64M", HDD: "1G", ResourceType: "docker"},
		{PublicName: notebookImage, Image: image, Protocol: "http", CPU: 0.25, Memory: "32M", HDD: "1G", ResourceType: "docker", LogRegex: tokenRegex},
		{PublicName: missingImage, Image: "calipso-test-no-such-image:" + e.instance, Protocol: "vnc", CPU: 0.5, Memory: "64M", HDD: "1G", ResourceType: "docker"},
	} {
		if _, err := e.db.PutImage(ctx, "test", im); err != nil {
			t.Fatalf("PutImage %s: %v", im.PublicName, err)
		}
	}
	e.user = e.newUser(t, "ana")
	return e
}

// openStore opens and migrates a fresh application database.
func openStore(t testing.TB, driver string) *store.Store {
	t.Helper()
	dsn := filepath.Join(t.TempDir(), "calipso.db")
	if driver == "" {
		driver = "sqlite"
	}
	if driver == "mysql" {
		dsn = testenv.MySQLDSN(t)
	}
	ctx := context.Background()
	db, err := store.Open(ctx, driver, dsn)
	if err != nil {
		t.Fatalf("open %s store: %v", driver, err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return db
}

// newUser creates an account with a quota roomy enough for every test but the race.
func (e *env) newUser(t testing.TB, name string) calipso.User {
	t.Helper()
	ctx := context.Background()
	u, err := e.db.EnsureUser(ctx, name)
	if err != nil {
		t.Fatalf("EnsureUser %s: %v", name, err)
	}
	if err := e.db.SetQuota(ctx, "test", u.ID, calipso.Quota{MaxSimultaneous: 50, CPUs: 100, MemoryBytes: 100 << 30, DiskBytes: 1 << 40}); err != nil {
		t.Fatalf("SetQuota: %v", err)
	}
	return u
}

// experiment stores proposal with the given sessions (number → data_set_path) and
// links user to it; it returns the "proposal~session" ref of the first one.
func (e *env) experiment(t testing.TB, u calipso.User, proposal string, uid, gid *int, sessions ...calipso.Session) string {
	t.Helper()
	if len(sessions) == 0 {
		// Session numbers are unique, as user offices give them: the frontend ties a
		// resource to its session row by the number alone.
		sessions = []calipso.Session{{SessionNumber: proposal + "-01", Subject: "beamtime"}}
	}
	ctx := context.Background()
	if _, err := e.db.PutExperiment(ctx, "test", calipso.Experiment{ProposalID: proposal, Subject: "test " + proposal, UID: uid, GID: gid, Sessions: sessions}); err != nil {
		t.Fatalf("PutExperiment %s: %v", proposal, err)
	}
	if err := e.db.Link(ctx, "test", u.Username, proposal); err != nil {
		t.Fatalf("Link %s: %v", proposal, err)
	}
	return proposal + "~" + sessions[0].SessionNumber
}

// containers lists every container of this test's installation, stopped ones too.
func (e *env) containers(t testing.TB) []container.Summary {
	t.Helper()
	list, err := e.cli.ContainerList(context.Background(), container.ListOptions{
		All: true, Filters: filters.NewArgs(filters.Arg("label", provisioner.LabelInstance+"="+e.instance)),
	})
	if err != nil {
		t.Fatalf("list containers: %v", err)
	}
	return list
}

// inspect returns the container of a resource; ok is false when there is none.
func (e *env) inspect(t testing.TB, name string) (container.InspectResponse, bool) {
	t.Helper()
	info, err := e.cli.ContainerInspect(context.Background(), name)
	if cerrdefs.IsNotFound(err) {
		return info, false
	}
	if err != nil {
		t.Fatalf("inspect %s: %v", name, err)
	}
	return info, true
}

// usage is the user's live share of the quota.
func (e *env) usage(t testing.TB, u calipso.User) calipso.Quota {
	t.Helper()
	q, err := e.db.Usage(context.Background(), u.ID)
	if err != nil {
		t.Fatalf("Usage: %v", err)
	}
	return q
}

// records lists every resource record of the installation's database.
func (e *env) records(t testing.TB) []calipso.Resource {
	t.Helper()
	list, err := e.db.Resources(context.Background(), store.ResourceFilter{})
	if err != nil {
		t.Fatalf("Resources: %v", err)
	}
	return list
}

// assertNothingLeft checks that no container, no Guacamole row and no quota is held.
func (e *env) assertNothingLeft(t testing.TB, u calipso.User) {
	t.Helper()
	if list := e.containers(t); len(list) != 0 {
		t.Errorf("%d containers left behind: %v", len(list), list[0].Names)
	}
	if q := e.usage(t, u); q.MaxSimultaneous != 0 || q.CPUs != 0 || q.MemoryBytes != 0 {
		t.Errorf("usage = %+v, want nothing held", q)
	}
	if e.guacDB != nil {
		if n := guacConnections(t, e.guacDB); n != 0 {
			t.Errorf("%d Guacamole connections left behind", n)
		}
	}
}

// guacConnection is a connection as Guacamole reads it from its tables.
type guacConnection struct {
	protocol string
	params   map[string]string
	users    int // entities with a permission on it
}

// readConnection reads the connection named name; ok is false when there is none.
func readConnection(t testing.TB, db *sql.DB, name string) (guacConnection, bool) {
	t.Helper()
	var (
		c  guacConnection
		id int64
	)
	err := db.QueryRow(`SELECT connection_id, protocol FROM guacamole_connection WHERE connection_name = ?`, name).Scan(&id, &c.protocol)
	if err == sql.ErrNoRows {
		return c, false
	}
	if err != nil {
		t.Fatalf("read connection %s: %v", name, err)
	}
	c.params = map[string]string{}
	rows, err := db.Query(`SELECT parameter_name, parameter_value FROM guacamole_connection_parameter WHERE connection_id = ?`, id)
	if err != nil {
		t.Fatalf("read parameters: %v", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatalf("scan parameter: %v", err)
		}
		c.params[k] = v
	}
	if err := db.QueryRow(`SELECT COUNT(DISTINCT entity_id) FROM guacamole_connection_permission WHERE connection_id = ?`, id).Scan(&c.users); err != nil {
		t.Fatalf("read permissions: %v", err)
	}
	return c, true
}

// guacConnections counts the connections in Guacamole's database.
func guacConnections(t testing.TB, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM guacamole_connection`).Scan(&n); err != nil {
		t.Fatalf("count connections: %v", err)
	}
	return n
}

// guacStore returns a Guacamole store on a fresh MariaDB database loaded with
// Guacamole's own schema, and a pool to read that database with.
func guacStore(t testing.TB, instance string) (*guacamole.Store, *sql.DB) {
	t.Helper()
	fresh, dsn := testenv.MySQL(t)
	testenv.LoadGuacamoleSchema(t, fresh, "mysql")
	db, err := guacamole.Open(context.Background(), "mysql", dsn)
	if err != nil {
		t.Fatalf("guacamole.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return guacamole.New(db, guacamole.MySQL, guacamole.Options{NamePrefix: "calipso-" + instance + "-", Logger: slog.New(slog.DiscardHandler)}), fresh
}

// mkdirAll makes dir (and parents) with perm, whatever the umask.
func mkdirAll(t testing.TB, dir string, perm os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(dir, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, perm); err != nil {
		t.Fatal(err)
	}
}

func intp(v int) *int { return &v }

func itoa(v int) string { return strconv.Itoa(v) }
