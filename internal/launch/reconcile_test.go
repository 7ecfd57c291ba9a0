package launch_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/docker/docker/api/types/container"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/guacamole"
	"github.com/calipsoplus/calipso/internal/launch"
)

// TestReconcile: orphans on the engine and in Guacamole are removed, a running record
// whose workload vanished ends in error, and live resources are left alone.
func TestReconcile(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	keep := e.experiment(t, e.user, "keep", nil, nil)
	lose := e.experiment(t, e.user, "lose", nil, nil)
	kept, err := e.svc.Launch(ctx, e.user, keep, desktopImage)
	if err != nil {
		t.Fatal(err)
	}
	lost, err := e.svc.Launch(ctx, e.user, lose, desktopImage)
	if err != nil {
		t.Fatal(err)
	}
	// The engine loses one workload behind Calipso's back.
	if err := e.cli.ContainerRemove(ctx, lost.EngineName, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	// An orphan container of this installation (a record id never made) and an orphan
	// Guacamole connection.
	if err := e.directStart(ctx, "calipso-"+e.instance+"-9999"); err != nil {
		t.Fatal(err)
	}
	gs := guacamole.New(e.guacDB, guacamole.MySQL, guacamole.Options{NamePrefix: "calipso-" + e.instance + "-", Logger: slog.New(slog.DiscardHandler)})
	if err := gs.Create(ctx, guacamole.Connection{Name: "calipso-" + e.instance + "-9998", Protocol: "vnc",
		Params: map[string]string{"hostname": "h", "port": "1"}, Username: "calipso-" + e.instance + "-9998", Password: "pw"}); err != nil {
		t.Fatal(err)
	}

	rep := e.svc.Reconcile(ctx)
	want := launch.Report{Vanished: 1, OrphanWorkloads: 1, OrphanDesktops: 1}
	if rep.String() != want.String() {
		t.Errorf("report = %s %v, want %s", rep, rep.Errors, want)
	}
	if r, err := e.db.Resource(ctx, lost.ID); err != nil || r.State != calipso.Failed {
		t.Errorf("lost record = %s, %v; want error", r.State, err)
	}
	if r, err := e.db.Resource(ctx, kept.ID); err != nil || r.State != calipso.Running {
		t.Errorf("kept record = %s, %v; want running", r.State, err)
	}
	if list := e.containers(t); len(list) != 1 || list[0].Names[0] != "/"+kept.EngineName {
		t.Errorf("containers = %d, want only %s", len(list), kept.EngineName)
	}
	if n := guacConnections(t, e.guacDB); n != 1 {
		t.Errorf("%d Guacamole connections, want only the kept desktop's", n)
	}
	if again := e.svc.Reconcile(ctx); again.String() != (launch.Report{}).String() {
		t.Errorf("second pass = %s, want nothing to do", again)
	}
}
