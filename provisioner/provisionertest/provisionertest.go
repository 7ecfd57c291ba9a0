// Package provisionertest is the contract every provisioner.Provisioner keeps, as one
// suite that each engine's tests run against the real engine (the Docker engine, an
// envtest kube-apiserver, static links):
//
//	func TestContract(t *testing.T) {
//		provisionertest.Run(t, func(t *testing.T) provisionertest.Harness {
//			return provisionertest.Harness{Engine: ..., Instance: ..., Image: ...}
//		})
//	}
//
// What an engine cannot show where its tests run (a pod never runs without a node, a
// link keeps no state) is declared in Harness.Exceptions with the reason: the suite
// then checks the documented alternative instead and logs the reason, so that no
// check is skipped in silence.
package provisionertest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/calipsoplus/calipso/provisioner"
)

// Harness is one engine under test and what the suite must know of it.
type Harness struct {
	// Engine is the provisioner under test, working for installation Instance. Each
	// call of Run's newEngine gives a fresh installation no other test sees.
	Engine   provisioner.Provisioner
	Instance string
	// Neighbour is an engine of another installation, NeighbourInstance, on the same
	// backend (the same Docker engine, the same namespace): Engine must not list its
	// workloads, nor stop, remove or report them.
	Neighbour         provisioner.Provisioner
	NeighbourInstance string

	// Image is an image reference (a URL for static links) that Start runs.
	Image string
	// Protocol is the workload's protocol; "" is "http".
	Protocol string
	// LogRegex matches a line Image logs once it runs; the suite needs it to check an
	// engine that claims Capabilities.Logs.
	LogRegex string

	// FailingStarts are specs Start must fail on. At least one is required.
	FailingStarts []FailingStart

	// Applied reads back from the engine's own API what it set on the named workload,
	// to check the capabilities the engine claims. Nil only for an engine that
	// enforces nothing of a spec.
	Applied func(t *testing.T, name string) Applied

	Exceptions Exceptions
}

// FailingStart is a spec Start must refuse or fail on.
type FailingStart struct {
	Name string
	Edit func(*provisioner.Spec) // turns a spec that runs into one that does not
	Want error                   // what Start's error wraps (nil: any error)
}

// Applied is what the engine says it set on a workload (zero: not set).
type Applied struct {
	CPUs        float64
	MemoryBytes int64
	DiskBytes   int64           // any per-workload disk bound; -1 when set in a form the harness cannot read
	PidsLimit   int64           // any bound on the workload's processes
	UID, GID    int             // identity the process is set to run as
	ReadOnly    map[string]bool // mount target: mounted read-only
	// Secrets are the files the workload finds in provisioner.SecretsDir, by name.
	Secrets map[string]SecretFile
	// Shown is everything the engine's API shows of the workload itself (docker
	// inspect, the pod object), where no secret may appear.
	Shown string
}

// SecretFile is a file of provisioner.SecretsDir as the workload finds it.
type SecretFile struct {
	Content  string
	UID, GID int         // its owner
	Mode     fs.FileMode // its permission bits
}

// readableBy says whether uid:gid may read the file (and, without it, whoever else).
func (f SecretFile) readableBy(uid, gid int) bool {
	switch {
	case f.UID == uid:
		return f.Mode&0o400 != 0
	case f.GID == gid:
		return f.Mode&0o040 != 0
	default:
		return f.Mode&0o004 != 0
	}
}

// Exceptions are engine-specific departures from the contract, each given as the
// reason; empty means none.
type Exceptions struct {
	// NeverRuns: workloads are made but never run here (an API server without nodes).
	// Start returns, and Inspect and List report, StatePending where StateRunning is
	// due, and no log is ever written.
	NeverRuns string
	// Untracked: the engine keeps nothing of a workload (static links). Inspect reports
	// any name as running and never says ErrNotFound, List reports nothing, Stop and
	// Remove change nothing.
	Untracked string
	// NewIDOnRestart: Start after Stop makes the workload anew, with a new engine id
	// (Stop deletes the Kubernetes pod); without it the id must stay the same.
	NewIDOnRestart string
}

// The identity and labels every workload of the suite carries: values with "@" and
// "~", which engines with restricted label values must keep all the same.
const (
	owner      = "jane.doe@example.org"
	experiment = "ih-ls3000~2026-01"
)

// contract is the suite: each case gets an engine of its own.
var contract = []struct {
	name string
	run  func(t *testing.T, h Harness)
}{
	{"Ping", testPing},
	{"Capabilities", testCapabilities},
	{"StartIsIdempotent", testStartIsIdempotent},
	{"StopThenRemove", testStopThenRemove},
	{"RestartAfterStop", testRestartAfterStop},
	{"RemoveWithoutStop", testRemoveWithoutStop},
	{"MissingWorkload", testMissingWorkload},
	{"RemoveTwice", testRemoveTwice},
	{"FailedStartLeavesNothing", testFailedStartLeavesNothing},
	{"ListByInstallation", testListByInstallation},
	{"NeighbourLeftAlone", testNeighbourLeftAlone},
}

// Run runs the contract against the engines newEngine makes, one per case, in
// parallel: newEngine must be safe for concurrent use and isolate its engines.
func Run(t *testing.T, newEngine func(t *testing.T) Harness) {
	t.Helper()
	for _, tc := range contract {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newEngine(t)
			h.check(t)
			h.logExceptions(t)
			tc.run(t, h)
		})
	}
}

// check refuses a harness that leaves the suite without what it needs.
func (h Harness) check(t *testing.T) {
	t.Helper()
	var missing []string
	if h.Engine == nil || h.Instance == "" {
		missing = append(missing, "Engine and Instance")
	}
	if h.Neighbour == nil || h.NeighbourInstance == "" || h.NeighbourInstance == h.Instance {
		missing = append(missing, "Neighbour of another NeighbourInstance")
	}
	if h.Image == "" {
		missing = append(missing, "Image")
	}
	if len(h.FailingStarts) == 0 {
		missing = append(missing, "FailingStarts")
	}
	if len(missing) > 0 {
		t.Fatalf("harness: %s required", strings.Join(missing, ", "))
	}
}

// logExceptions says which checks this engine's exceptions change, and why.
func (h Harness) logExceptions(t *testing.T) {
	t.Helper()
	for _, e := range []struct{ what, why string }{
		{"never runs: pending where running is due, no log", h.Exceptions.NeverRuns},
		{"untracked: Inspect reports any name running, List nothing", h.Exceptions.Untracked},
		{"a new id on restart", h.Exceptions.NewIDOnRestart},
	} {
		if e.why != "" {
			t.Logf("engine exception, %s: %s", e.what, e.why)
		}
	}
}

// spec is a workload of this installation that runs on the engine.
func (h Harness) spec(id int64) provisioner.Spec {
	protocol := h.Protocol
	if protocol == "" {
		protocol = "http"
	}
	s := provisioner.Spec{
		Instance: h.Instance, ResourceID: id, Owner: owner, Experiment: experiment,
		Image: h.Image, Protocol: protocol, UID: 1000, GID: 1000,
	}
	if h.Engine.Capabilities().Logs && h.Exceptions.NeverRuns == "" {
		s.LogRegex = h.LogRegex
	}
	return s
}

// live is the state of a started workload: running, unless workloads never run here.
func (h Harness) live() provisioner.State {
	if h.Exceptions.NeverRuns != "" {
		return provisioner.StatePending
	}
	return provisioner.StateRunning
}

// untracked says whether the engine keeps nothing of its workloads.
func (h Harness) untracked() bool { return h.Exceptions.Untracked != "" }

// ctxOf bounds a test's engine calls, so that a hung engine fails the test.
func ctxOf(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// start starts spec on engine, fails the test if it does not, and removes the
// workload when the test ends (Remove must succeed in whatever state it is left).
func start(t *testing.T, engine provisioner.Provisioner, spec provisioner.Spec) provisioner.Workload {
	t.Helper()
	removeAtEnd(t, engine, spec.Name())
	inst, err := engine.Start(ctxOf(t), spec)
	if err != nil {
		t.Fatalf("Start %s: %v", spec.Name(), err)
	}
	return inst
}

func removeAtEnd(t *testing.T, engine provisioner.Provisioner, name string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := engine.Remove(ctx, name); err != nil {
			t.Errorf("Remove %s at the end of the test: %v", name, err)
		}
	})
}

// checkReport fails unless inst reports spec's workload in state want.
func checkReport(t *testing.T, op string, inst provisioner.Workload, spec provisioner.Spec, want provisioner.State) {
	t.Helper()
	if inst.Name != spec.Name() || inst.ID == "" || inst.Owner != spec.Owner || inst.ResourceID != spec.ResourceID || inst.State != want {
		t.Errorf("%s = %+v; want %s, an id, owner %q, resource %d, %s", op, inst, spec.Name(), spec.Owner, spec.ResourceID, want)
	}
}

// inspect checks what Inspect reports of a workload: state want, or, on an engine
// that keeps nothing, running under that name whatever happened.
func inspect(t *testing.T, h Harness, spec provisioner.Spec, want provisioner.State) provisioner.Workload {
	t.Helper()
	inst, err := h.Engine.Inspect(ctxOf(t), spec.Name())
	if err != nil {
		t.Fatalf("Inspect %s: %v", spec.Name(), err)
	}
	if h.untracked() {
		if inst.Name != spec.Name() || inst.State != provisioner.StateRunning {
			t.Errorf("Inspect = %+v; want %s reported running", inst, spec.Name())
		}
		return inst
	}
	if inst.Name != spec.Name() || inst.Owner != spec.Owner || inst.ResourceID != spec.ResourceID || inst.State != want {
		t.Errorf("Inspect = %+v; want %s of owner %q, resource %d, %s", inst, spec.Name(), spec.Owner, spec.ResourceID, want)
	}
	return inst
}

// gone checks that the engine has no workload of that name: Inspect says
// ErrNotFound and List does not report it.
func gone(t *testing.T, h Harness, name string) {
	t.Helper()
	inst, err := h.Engine.Inspect(ctxOf(t), name)
	if h.untracked() {
		if err != nil || inst.Name != name || inst.State != provisioner.StateRunning {
			t.Errorf("Inspect of %s = %+v, %v; want it reported running", name, inst, err)
		}
	} else if !errors.Is(err, provisioner.ErrNotFound) {
		t.Errorf("Inspect of %s = %+v, %v; want ErrNotFound", name, inst, err)
	}
	if got := list(t, h.Engine)[name]; got.Name != "" {
		t.Errorf("List reports %+v; want nothing of that name", got)
	}
}

// list is what List reports, by name; a name reported twice fails the test.
func list(t *testing.T, engine provisioner.Provisioner) map[string]provisioner.Workload {
	t.Helper()
	all, err := engine.List(ctxOf(t))
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	byName := make(map[string]provisioner.Workload, len(all))
	for _, inst := range all {
		if _, dup := byName[inst.Name]; dup {
			t.Errorf("List reports %s twice: %+v", inst.Name, all)
		}
		byName[inst.Name] = inst
	}
	return byName
}

func testPing(t *testing.T, h Harness) {
	if err := h.Engine.Ping(ctxOf(t)); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

// testCapabilities checks that Capabilities is constant and, through Applied, that
// what the engine claims to enforce it applies, and what it does not claim it does
// not apply either (so the claims stay true as the engine changes).
func testCapabilities(t *testing.T, h Harness) {
	caps := h.Engine.Capabilities()
	t.Logf("capabilities: %+v", caps)
	if again := h.Engine.Capabilities(); again != caps {
		t.Errorf("Capabilities changed from %+v to %+v", caps, again)
	}
	enforces := caps.CPULimit || caps.MemoryLimit || caps.DiskLimit || caps.PidsLimit || caps.RunAsUser || caps.ReadOnlyMounts || caps.SecretFiles
	if h.Applied == nil {
		if enforces {
			t.Fatalf("the engine claims to enforce parts of a spec (%+v), but the harness has no Applied to observe them", caps)
		}
		t.Logf("the engine enforces nothing of a spec: nothing to observe")
		return
	}

	spec := h.spec(1)
	spec.CPUs, spec.MemoryBytes, spec.DiskBytes, spec.PidsLimit = 0.5, 64<<20, 1<<30, 100
	spec.UID, spec.GID = 1234, 2345
	secret := "calipso-contract-secret-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	spec.Secrets = map[string]string{"probe": secret}
	spec.Mounts = []provisioner.Mount{
		{Source: t.TempDir(), Target: "/data", ReadOnly: true},
		{Source: t.TempDir(), Target: "/results"},
	}
	inst := start(t, h.Engine, spec)
	applied := h.Applied(t, spec.Name())

	checks := []struct {
		what     string
		claimed  bool
		got      any
		want     any // when claimed
		unclaims any // when not claimed; nil: not checked
	}{
		{"CPU limit", caps.CPULimit, applied.CPUs, spec.CPUs, float64(0)},
		{"memory limit", caps.MemoryLimit, applied.MemoryBytes, spec.MemoryBytes, int64(0)},
		{"disk limit", caps.DiskLimit, applied.DiskBytes, spec.DiskBytes, int64(0)},
		{"pids limit", caps.PidsLimit, applied.PidsLimit, spec.PidsLimit, int64(0)},
		{"uid:gid", caps.RunAsUser, fmt.Sprintf("%d:%d", applied.UID, applied.GID), "1234:2345", nil},
		{"read-only mounts", caps.ReadOnlyMounts, fmt.Sprint(sorted(applied.ReadOnly)), fmt.Sprint(sorted(map[string]bool{"/data": true, "/results": false})), nil},
	}
	for _, c := range checks {
		t.Run(c.what, func(t *testing.T) {
			switch {
			case c.claimed && c.got != c.want:
				t.Errorf("the engine claims to enforce the %s, but applied %v; want %v", c.what, c.got, c.want)
			case !c.claimed && c.unclaims == nil:
				t.Logf("not claimed: not checked")
			case !c.claimed && c.got != c.unclaims:
				t.Errorf("the engine claims not to enforce the %s, yet applied %v: Capabilities is out of date", c.what, c.got)
			}
		})
	}

	t.Run("secret files", func(t *testing.T) {
		file, ok := applied.Secrets["probe"]
		switch {
		case !caps.SecretFiles:
			t.Logf("not claimed: not checked")
		case !ok || file.Content != secret:
			t.Errorf("the engine claims secret files, but %s holds %+v; want the secret", provisioner.SecretPath("probe"), applied.Secrets)
		case !file.readableBy(spec.UID, spec.GID):
			t.Errorf("the secret file %+v is not readable by the workload's %d:%d", file, spec.UID, spec.GID)
		case applied.Shown == "":
			t.Errorf("the harness shows nothing of what the engine reports of the workload")
		case strings.Contains(applied.Shown, secret):
			t.Errorf("the engine claims secret files, yet shows the secret with the workload:\n%s", applied.Shown)
		}
	})

	t.Run("logs", func(t *testing.T) {
		switch {
		case !caps.Logs:
			t.Logf("the engine keeps no log: not checked")
		case h.Exceptions.NeverRuns != "":
			t.Logf("log not observable: %s", h.Exceptions.NeverRuns)
		case h.LogRegex == "":
			t.Errorf("the engine claims to keep logs, but the harness gives no LogRegex to check it")
		case inst.LogMatch == "":
			t.Errorf("Start with LogRegex %q = %+v; want what the log matched", spec.LogRegex, inst)
		}
	})
}

// sorted lists a map's entries in key order, for messages and comparison.
func sorted(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, fmt.Sprintf("%s=%v", k, m[k]))
	}
	return out
}

func testStartIsIdempotent(t *testing.T, h Harness) {
	spec := h.spec(1)
	first := start(t, h.Engine, spec)
	checkReport(t, "Start", first, spec, h.live())
	again := start(t, h.Engine, spec)
	if again.Name != first.Name || again.ID != first.ID || again.Host != first.Host || again.Port != first.Port || again.URL != first.URL {
		t.Errorf("second Start = %+v; want the same workload as %+v", again, first)
	}
	listed := list(t, h.Engine)
	if h.untracked() {
		if len(listed) != 0 {
			t.Errorf("List = %+v; want nothing", listed)
		}
		return
	}
	if len(listed) != 1 || listed[spec.Name()].ID != first.ID {
		t.Errorf("List after two Starts = %+v; want only %s (%s)", listed, spec.Name(), first.ID)
	}
}

func testStopThenRemove(t *testing.T, h Harness) {
	ctx := ctxOf(t)
	spec := h.spec(1)
	started := start(t, h.Engine, spec)
	if got := inspect(t, h, spec, h.live()); !h.untracked() && got.ID != started.ID {
		t.Errorf("Inspect id %q, Start's %q", got.ID, started.ID)
	}
	for _, round := range []string{"Stop", "Stop of a stopped workload"} {
		if err := h.Engine.Stop(ctx, spec.Name()); err != nil {
			t.Fatalf("%s: %v", round, err)
		}
		inspect(t, h, spec, provisioner.StateStopped)
	}
	if err := h.Engine.Remove(ctx, spec.Name()); err != nil {
		t.Fatalf("Remove after Stop: %v", err)
	}
	gone(t, h, spec.Name())
}

func testRestartAfterStop(t *testing.T, h Harness) {
	if !h.Engine.Capabilities().Restart {
		t.Logf("the engine does not claim Restart: not checked")
		return
	}
	spec := h.spec(1)
	first := start(t, h.Engine, spec)
	if err := h.Engine.Stop(ctxOf(t), spec.Name()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	restarted := start(t, h.Engine, spec)
	checkReport(t, "Start after Stop", restarted, spec, h.live())
	if h.Exceptions.NewIDOnRestart != "" {
		if restarted.ID == first.ID {
			t.Errorf("Start after Stop kept id %s; want a new one", first.ID)
		}
	} else if restarted.ID != first.ID {
		t.Errorf("Start after Stop = id %s; want the same workload, %s", restarted.ID, first.ID)
	}
	inspect(t, h, spec, h.live())
	if listed := list(t, h.Engine); len(listed) != 1 || listed[spec.Name()].ID != restarted.ID {
		t.Errorf("List after the restart = %+v; want only %s (%s)", listed, spec.Name(), restarted.ID)
	}
}

func testRemoveWithoutStop(t *testing.T, h Harness) {
	spec := h.spec(1)
	start(t, h.Engine, spec)
	if err := h.Engine.Remove(ctxOf(t), spec.Name()); err != nil {
		t.Fatalf("Remove of a started workload: %v", err)
	}
	gone(t, h, spec.Name())
}

func testMissingWorkload(t *testing.T, h Harness) {
	ctx := ctxOf(t)
	name := provisioner.Name(h.Instance, 999)
	if err := h.Engine.Stop(ctx, name); err != nil {
		t.Errorf("Stop of a workload never made: %v, want success", err)
	}
	if err := h.Engine.Remove(ctx, name); err != nil {
		t.Errorf("Remove of a workload never made: %v, want success", err)
	}
	gone(t, h, name)
}

func testRemoveTwice(t *testing.T, h Harness) {
	ctx := ctxOf(t)
	spec := h.spec(1)
	start(t, h.Engine, spec)
	for _, round := range []string{"Remove", "second Remove"} {
		if err := h.Engine.Remove(ctx, spec.Name()); err != nil {
			t.Fatalf("%s: %v", round, err)
		}
	}
	if err := h.Engine.Stop(ctx, spec.Name()); err != nil {
		t.Errorf("Stop of a removed workload: %v, want success", err)
	}
	gone(t, h, spec.Name())
}

// testFailedStartLeavesNothing: a Start that fails says so, and the caller's Remove
// takes away whatever it made.
func testFailedStartLeavesNothing(t *testing.T, h Harness) {
	for i, fs := range h.FailingStarts {
		t.Run(fs.Name, func(t *testing.T) {
			spec := h.spec(int64(i + 1))
			fs.Edit(&spec)
			removeAtEnd(t, h.Engine, spec.Name())
			inst, err := h.Engine.Start(ctxOf(t), spec)
			if err == nil {
				t.Fatalf("Start = %+v; want an error", inst)
			}
			if fs.Want != nil && !errors.Is(err, fs.Want) {
				t.Errorf("Start: %v; want %v", err, fs.Want)
			}
			if err := h.Engine.Remove(ctxOf(t), spec.Name()); err != nil {
				t.Fatalf("Remove after the failed Start: %v", err)
			}
			gone(t, h, spec.Name())
		})
	}
	if listed := list(t, h.Engine); len(listed) != 0 {
		t.Errorf("List after the failed starts = %+v; want nothing left", listed)
	}
}

// testListByInstallation: List reports this installation's workloads, running and
// stopped, and not the neighbour's.
func testListByInstallation(t *testing.T, h Harness) {
	running, stopped := h.spec(1), h.spec(2)
	theirs := h.spec(1)
	theirs.Instance = h.NeighbourInstance
	start(t, h.Engine, running)
	start(t, h.Engine, stopped)
	start(t, h.Neighbour, theirs)
	if err := h.Engine.Stop(ctxOf(t), stopped.Name()); err != nil {
		t.Fatalf("Stop: %v", err)
	}

	listed := list(t, h.Engine)
	if h.untracked() {
		if len(listed) != 0 {
			t.Errorf("List = %+v; want nothing", listed)
		}
		return
	}
	if len(listed) != 2 {
		t.Fatalf("List = %+v; want %s and %s only", listed, running.Name(), stopped.Name())
	}
	checkReport(t, "listed running workload", listed[running.Name()], running, h.live())
	checkReport(t, "listed stopped workload", listed[stopped.Name()], stopped, provisioner.StateStopped)
	if listed[running.Name()].Port == 0 {
		t.Errorf("listed running workload = %+v; want its port", listed[running.Name()])
	}
	if theirList := list(t, h.Neighbour); len(theirList) != 1 || theirList[theirs.Name()].Name == "" {
		t.Errorf("the neighbour's List = %+v; want only %s", theirList, theirs.Name())
	}
}

// testNeighbourLeftAlone: another installation's workload is not reported by this
// one's Inspect, and survives its Stop and Remove (which may refuse or do nothing).
func testNeighbourLeftAlone(t *testing.T, h Harness) {
	ctx := ctxOf(t)
	theirs := h.spec(1)
	theirs.Instance = h.NeighbourInstance
	inst := start(t, h.Neighbour, theirs)
	gone(t, h, theirs.Name())
	if err := h.Engine.Stop(ctx, theirs.Name()); err != nil {
		t.Logf("Stop of the neighbour's workload: %v", err)
	}
	if err := h.Engine.Remove(ctx, theirs.Name()); err != nil {
		t.Logf("Remove of the neighbour's workload: %v", err)
	}
	if h.untracked() {
		return // there is nothing the calls could have touched
	}
	got, err := h.Neighbour.Inspect(ctx, theirs.Name())
	if err != nil || got.ID != inst.ID || got.State != inst.State {
		t.Errorf("the neighbour's workload after our Stop and Remove = %+v, %v; want it untouched, as %+v", got, err, inst)
	}
}
