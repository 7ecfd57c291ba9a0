package launch_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/experiments"
	"github.com/calipsoplus/calipso/internal/testenv"
)

// swapperImage is the test workload with SWAP_LOOP=/out/sub,/out/alt set: once
// started, it exchanges the two names in its /out for as long as it runs.
const swapperImage = "swapper"

// raceTries is how many times the co-proposer launches while the swap runs.
const raceTries = 200

// TestMountRace: a desktop with results/P read-write swaps results/P/sub (a directory)
// and results/P/alt (a link to a directory outside the roots) in a tight loop, while
// a co-proposer launches, again and again, the session that mounts results/P/sub. No
// launch may end with anything but sub mounted: the engine's lookup of the path must
// find what Calipso checked. (Before the mounts were sealed, most such launches had
// the outside directory mounted read-write.)
func TestMountRace(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "root", "the test gives a directory to the workload's uid and looks into containers through /proc")
	}
	e := newEnv(t, envOptions{noGuac: true})
	ctx := context.Background()
	ref := swapper(t, e)
	if _, err := e.db.PutImage(ctx, "test", calipso.Image{PublicName: swapperImage, Image: ref, Protocol: "vnc", CPU: 0.5, Memory: "64M", HDD: "1G", ResourceType: "docker"}); err != nil {
		t.Fatal(err)
	}

	// results/P belongs to the proposal's uid, as results directories usually do.
	const uid = 2001
	proposal, sub, alt := filepath.Join(e.output, "P"), filepath.Join(e.output, "P", "sub"), filepath.Join(e.output, "P", "alt")
	outside := filepath.Join(t.TempDir(), "outside")
	for _, d := range []string{sub, outside} {
		mkdirAll(t, d, 0o755)
	}
	for _, d := range []string{proposal, sub} {
		if err := os.Chown(d, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, alt); err != nil {
		t.Fatal(err)
	}
	subID, outsideID := fileID(t, sub), fileID(t, outside)

	ana, bea := e.user, e.newUser(t, "bea")
	s1 := e.experiment(t, ana, "P", intp(uid), intp(uid),
		calipso.Session{SessionNumber: "P-S1", DataSetPath: `{'/P': {'bind': '/out', 'mode': 'rw'}}`},
		calipso.Session{SessionNumber: "P-S2", DataSetPath: `{'/P/sub': {'bind': '/data', 'mode': 'rw'}}`})
	if err := e.db.Link(ctx, "test", bea.Username, "P"); err != nil {
		t.Fatal(err)
	}
	const s2 = "P~P-S2"

	attacker, err := e.svc.Launch(ctx, ana, s1, swapperImage)
	if err != nil {
		t.Fatalf("launch the swapping desktop: %v", err)
	}
	// Stopped before the temporary directories go, whatever the test's end.
	t.Cleanup(func() { _ = e.engine.Remove(context.Background(), attacker.EngineName) })
	waitForSwaps(t, sub)

	var refused, launched, escapes, others int
	reasons := map[string]int{} // refusals by reason
	start := time.Now()
	for i := range raceTries {
		r, err := e.svc.Launch(ctx, bea, s2, desktopImage)
		if err != nil {
			if !errors.Is(err, experiments.ErrInvalidVolume) || calipso.ErrorCode(err) != calipso.EUNLAUNCHABLE {
				t.Errorf("try %d: Launch = %v, want success or a refusal matching ErrInvalidVolume (422)", i, err)
				continue
			}
			refused++
			_, why, _ := strings.Cut(err.Error(), `"/P/sub": `)
			reasons[why]++
			continue
		}
		launched++
		switch got := mountedID(t, e, r.EngineName, "/data"); got {
		case subID:
		case outsideID:
			escapes++
		default:
			others++
		}
		if _, err := e.svc.Remove(ctx, r); err != nil {
			t.Fatalf("try %d: Remove: %v", i, err)
		}
	}
	t.Logf("%d tries in %v while the desktop swapped: %d refused, %d launched, %d with the outside directory mounted, %d with something else",
		raceTries, time.Since(start).Round(time.Millisecond), refused, launched, escapes, others)
	for why, n := range reasons {
		t.Logf("refused %d times: %s", n, why)
	}
	if info, ok := e.inspect(t, attacker.EngineName); !ok || !info.State.Running {
		t.Fatalf("the swapping desktop stopped during the tries")
	}
	waitForSwaps(t, sub) // it swapped all along
	if escapes != 0 || others != 0 {
		t.Fatalf("%d of %d launches mounted the directory outside the roots, %d something else than results/P/sub", escapes, raceTries, others)
	}

	// The refusals are the layout's: once results/P is root's (0755, its session
	// directory the proposal's), the same session launches and mounts sub.
	if _, err := e.svc.Remove(ctx, attacker); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(sub); err != nil {
		t.Fatal(err)
	} else if fi.Mode()&os.ModeSymlink != 0 { // the swap stopped half-way: put the names back
		if err := os.Rename(sub, sub+".link"); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(alt, sub); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(sub+".link", alt); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(proposal, 0, 0); err != nil {
		t.Fatal(err)
	}
	r, err := e.svc.Launch(ctx, bea, s2, desktopImage)
	if err != nil {
		t.Fatalf("Launch with results/P sealed: %v", err)
	}
	if got := mountedID(t, e, r.EngineName, "/data"); got != subID {
		t.Errorf("mounted %v, want results/P/sub %v", got, subID)
	}
	if _, err := e.svc.Remove(ctx, r); err != nil {
		t.Fatal(err)
	}
	e.assertNothingLeft(t, ana)
	e.assertNothingLeft(t, bea)
}

// TestLinkIntoAnotherProposal: a link in P's datasets that leads into Q's is refused
// (422) before anything is reserved; one that stays inside P is followed.
func TestLinkIntoAnotherProposal(t *testing.T) {
	e := newEnv(t, envOptions{noGuac: true})
	ctx := context.Background()
	mkdirAll(t, filepath.Join(e.datasets, "P", "raw"), 0o755)
	mkdirAll(t, filepath.Join(e.datasets, "Q", "secret"), 0o755)
	for target, name := range map[string]string{
		"../Q/secret":                  "q-data",
		filepath.Join(e.datasets, "Q"): "q-abs",
		"raw":                          "latest",
	} {
		if err := os.Symlink(target, filepath.Join(e.datasets, "P", name)); err != nil {
			t.Fatal(err)
		}
	}
	e.experiment(t, e.user, "P", nil, nil,
		calipso.Session{SessionNumber: "P-1", DataSetPath: `{'/P/q-data': {'bind': '/data', 'mode': 'ro'}}`},
		calipso.Session{SessionNumber: "P-2", DataSetPath: `{'/P/q-abs/secret': {'bind': '/data', 'mode': 'ro'}}`},
		calipso.Session{SessionNumber: "P-3", DataSetPath: `{'/P/latest': {'bind': '/data', 'mode': 'ro'}}`})
	for _, ref := range []string{"P~P-1", "P~P-2"} {
		_, err := e.svc.Launch(ctx, e.user, ref, desktopImage)
		if !errors.Is(err, experiments.ErrInvalidVolume) || calipso.ErrorCode(err) != calipso.EUNLAUNCHABLE ||
			!strings.Contains(err.Error(), "proposal directory /P") {
			t.Fatalf("%s: Launch = %v, want a 422 refusal: the link leaves /P", ref, err)
		}
		if n := len(e.records(t)); n != 0 {
			t.Fatalf("%s: %d records made, want none", ref, n)
		}
	}
	r, err := e.svc.Launch(ctx, e.user, "P~P-3", desktopImage)
	if err != nil {
		t.Fatalf("a link inside the proposal: %v", err)
	}
	if got, want := mountedID(t, e, r.EngineName, "/data"), fileID(t, filepath.Join(e.datasets, "P", "raw")); got != want {
		t.Errorf("mounted %v, want P/raw %v", got, want)
	}
	if _, err := e.svc.Remove(ctx, r); err != nil {
		t.Fatal(err)
	}
	e.assertNothingLeft(t, e.user)
}

// inode is a file's identity: device and inode number.
type inode struct{ dev, ino uint64 }

func fileID(t testing.TB, path string) inode {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return inode{uint64(st.Dev), st.Ino}
}

// mountedID is what a running container has at target, seen from the host through
// its first process's root.
func mountedID(t testing.TB, e *env, name, target string) inode {
	t.Helper()
	info, ok := e.inspect(t, name)
	if !ok || info.State == nil || info.State.Pid == 0 {
		t.Fatalf("container %s is not running", name)
	}
	return fileID(t, fmt.Sprintf("/proc/%d/root%s", info.State.Pid, target))
}

// waitForSwaps waits until path has been seen both as a directory and as a link.
func waitForSwaps(t testing.TB, path string) {
	t.Helper()
	var dir, link bool
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if fi, err := os.Lstat(path); err == nil {
			dir = dir || fi.IsDir()
			link = link || fi.Mode()&os.ModeSymlink != 0
		}
		if dir && link {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%s is not being swapped (seen as a directory: %v, as a link: %v)", path, dir, link)
}

// swapper builds (once per workload image) the workload with SWAP_LOOP set, on top of
// the test workload image: nothing is pulled.
func swapper(t testing.TB, e *env) string {
	t.Helper()
	_, tag, _ := strings.Cut(e.workload, ":")
	ref := "calipso-test-swapper:" + tag
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := e.cli.ImageInspect(ctx, ref); err == nil {
		return ref
	}
	dockerfile := "FROM " + e.workload + "\nENV SWAP_LOOP=/out/sub,/out/alt\n"
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(dockerfile))}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(tw, dockerfile); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	resp, err := e.cli.ImageBuild(ctx, &buf, build.ImageBuildOptions{
		Tags: []string{ref}, Dockerfile: "Dockerfile", Remove: true, ForceRemove: true,
		Labels: map[string]string{"calipso.test": "workload"},
	})
	if err != nil {
		t.Fatalf("build %s: %v", ref, err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var msg struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("build %s: %v", ref, err)
		}
		if msg.Error != "" {
			t.Fatalf("build %s: %s", ref, msg.Error)
		}
	}
	return ref
}
