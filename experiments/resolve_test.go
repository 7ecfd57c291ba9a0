package experiments

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/calipsoplus/calipso"
)

// resolveTree is a datasets and an output root with the links and modes that
// ResolveHostPaths must tell apart, and a directory outside both.
type resolveTree struct {
	base    string
	roots   Roots
	outside string
	asRoot  bool // the directories owned by another user exist (chown needs root)
}

func makeResolveTree(t testing.TB) resolveTree {
	t.Helper()
	base, err := filepath.EvalSymlinks(t.TempDir()) // the real paths ResolveHostPaths answers
	if err != nil {
		t.Fatal(err)
	}
	tr := resolveTree{base: base, roots: Roots{Datasets: filepath.Join(base, "datasets"), Output: filepath.Join(base, "output")},
		outside: filepath.Join(base, "outside"), asRoot: os.Geteuid() == 0}
	d, o := tr.roots.Datasets, tr.roots.Output
	dir := func(p string, perm os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, perm); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, name string) {
		t.Helper()
		if err := os.Symlink(target, name); err != nil {
			t.Fatal(err)
		}
	}
	file := func(p string) {
		t.Helper()
		if err := os.WriteFile(p, []byte("data\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	owned := func(p string, uid int) {
		t.Helper()
		if !tr.asRoot {
			return
		}
		dir(p, 0o755)
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	dir(filepath.Join(tr.outside, "secret"), 0o755)
	dir(filepath.Join(d, "P", "raw"), 0o755)
	dir(filepath.Join(d, "P", "deep", "a", "b"), 0o755)
	dir(filepath.Join(d, "P", "open", "x"), 0o755)
	dir(filepath.Join(d, "P", "open"), 0o777)       // anyone may swap x
	dir(filepath.Join(d, "P", "group", "x"), 0o755) //
	dir(filepath.Join(d, "P", "group"), 0o2775)     // the group may swap x
	dir(filepath.Join(d, "P", "open-leaf"), 0o777)  // writable itself: its entries may change, not what it is
	dir(filepath.Join(d, "Q", "secret"), 0o755)     //
	owned(filepath.Join(d, "P", "theirs"), 2001)    // a workload's uid owns it...
	owned(filepath.Join(d, "P", "theirs", "x"), 0)  // ...and may swap x
	file(filepath.Join(d, "P", "file"))             //
	if err := syscall.Mkfifo(filepath.Join(d, "P", "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	link("raw", filepath.Join(d, "P", "in"))                                // stays in P
	link("deep/a", filepath.Join(d, "P", "in-deep"))                        // stays in P
	link("../Q", filepath.Join(d, "P", "up"))                               // into Q (finding 2)
	link("../Q/secret", filepath.Join(d, "P", "up-secret"))                 // same
	link(filepath.Join(d, "Q"), filepath.Join(d, "P", "abs-q"))             // same, absolute
	link("../Q/back", filepath.Join(d, "P", "chain"))                       // through Q and back into P
	link("../P/raw", filepath.Join(d, "Q", "back"))                         //
	link(tr.outside, filepath.Join(d, "P", "abs-out"))                      // out of the root
	link("../../outside", filepath.Join(d, "P", "rel-out"))                 // same, relative
	link("loop", filepath.Join(d, "P", "loop"))                             //
	link("P", filepath.Join(d, "P-alias"))                                  // a proposal directory that is a link
	link(d, filepath.Join(d, "P", "root"))                                  // the root itself
	dir(filepath.Join(o, "P", "results"), 0o777)                            // the usual rw mount
	dir(filepath.Join(o, "shared", "sub"), 0o755)                           //
	dir(filepath.Join(o, "shared"), 0o777)                                  // a proposal directory anyone may write
	owned(filepath.Join(o, "mine"), 2001)                                   // a proposal directory of the workload's uid
	owned(filepath.Join(o, "mine", "sub"), 2001)                            //
	link(d, filepath.Join(o, "P", "datasets-rw"))                           // rw into the ro root
	link(filepath.Join(d, "P"), filepath.Join(o, "P", "dataset-rw"))        // same
	link(filepath.Join(tr.outside, "secret"), filepath.Join(o, "P", "alt")) // the race's link
	return tr
}

func TestResolveHostPaths(t *testing.T) {
	tr := makeResolveTree(t)
	tests := []struct {
		name   string
		host   string
		mode   string
		want   string // the real path under its root; "" when refused
		reason string // part of the refusal
		root   bool   // needs the directories only root can make
	}{
		{name: "plain directory", host: "/P/raw", mode: "ro", want: "/P/raw"},
		{name: "the proposal directory", host: "/P", mode: "ro", want: "/P"},
		{name: "a regular file", host: "/P/file", mode: "ro", want: "/P/file"},
		{name: "link inside the proposal", host: "/P/in", mode: "ro", want: "/P/raw"},
		{name: "through a link inside the proposal", host: "/P/in-deep/b", mode: "ro", want: "/P/deep/a/b"},
		{name: "out of the proposal and back", host: "/P/chain", mode: "ro", want: "/P/raw"},
		{name: "writable itself", host: "/P/open-leaf", mode: "ro", want: "/P/open-leaf"},
		{name: "usual rw mount", host: "/P/results", mode: "rw", want: "/P/results"},
		{name: "rw proposal directory anyone may write", host: "/shared", mode: "rw", want: "/shared"},
		{name: "rw proposal directory of the workload's uid", host: "/mine", mode: "rw", want: "/mine", root: true},

		{name: "link into another proposal", host: "/P/up", mode: "ro", reason: "proposal directory /P"},
		{name: "link to another proposal's data", host: "/P/up-secret", mode: "ro", reason: "proposal directory /P"},
		{name: "absolute link into another proposal", host: "/P/abs-q/secret", mode: "ro", reason: "proposal directory /P"},
		{name: "link to the root", host: "/P/root", mode: "ro", reason: "proposal directory /P"},
		{name: "proposal directory is a link", host: "/P-alias/raw", mode: "ro", reason: "proposal directory /P-alias"},
		{name: "absolute link out", host: "/P/abs-out", mode: "ro", reason: "out of the datasets directory"},
		{name: "relative link out", host: "/P/rel-out", mode: "ro", reason: "out of the datasets directory"},
		{name: "through a link out", host: "/P/abs-out/secret", mode: "ro", reason: "out of the datasets directory"},
		{name: "rw link into the datasets root", host: "/P/datasets-rw", mode: "rw", reason: "out of the output directory"},
		{name: "rw link to a dataset", host: "/P/dataset-rw", mode: "rw", reason: "out of the output directory"},
		{name: "the race's link", host: "/P/alt", mode: "rw", reason: "out of the output directory"},
		{name: "link loop", host: "/P/loop", mode: "ro", reason: "cannot be resolved"},
		{name: "missing path", host: "/P3", mode: "ro", reason: "does not exist"},
		{name: "below a file", host: "/P/file/x", mode: "ro", reason: "does not exist"},
		{name: "a fifo", host: "/P/fifo", mode: "ro", reason: "neither a directory nor a regular file"},
		{name: "below a directory anyone may write", host: "/P/open/x", mode: "ro", reason: "directory /P/open (owner 0, mode 0777)"},
		{name: "below a group-writable directory", host: "/P/group/x", mode: "ro", reason: "directory /P/group"},
		{name: "below a directory of another user", host: "/P/theirs/x", mode: "ro", reason: "directory /P/theirs (owner 2001", root: true},
		{name: "the race: below a proposal directory anyone may write", host: "/shared/sub", mode: "rw", reason: "directory /shared"},
		{name: "the race: below the workload's proposal directory", host: "/mine/sub", mode: "rw", reason: "directory /mine (owner 2001", root: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.root && !tr.asRoot {
				t.Skip("needs root to give a directory to another user")
			}
			def, _ := json.Marshal(map[string]map[string]string{tt.host: {"bind": "/data", "mode": tt.mode}})
			vols, err := ParseVolumes(string(def), tr.roots)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			got, err := ResolveHostPaths(vols, tr.roots)
			root := tr.roots.Output
			if tt.mode == "ro" {
				root = tr.roots.Datasets
			}
			if tt.want == "" {
				if !errors.Is(err, ErrInvalidVolume) || calipso.ErrorCode(err) != calipso.EUNLAUNCHABLE {
					t.Fatalf("got %+v, %v; want a refusal matching ErrInvalidVolume (422)", got, err)
				}
				if !strings.Contains(err.Error(), tt.reason) {
					t.Errorf("refusal %q does not say %q", err, tt.reason)
				}
				if strings.Contains(err.Error(), tr.base) {
					t.Errorf("the refusal %q shows the host's paths", err)
				}
				return
			}
			if err != nil || len(got) != 1 || got[0].HostPath != root+tt.want {
				t.Fatalf("got %+v, %v; want host path %s", got, err, root+tt.want)
			}
		})
	}

	t.Run("root not on this host", func(t *testing.T) {
		remote := Roots{Datasets: "/nonexistent/calipso/datasets"}
		vols, err := ParseVolumes(`{"/p1": {"bind": "/data", "mode": "ro"}}`, remote)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ResolveHostPaths(vols, remote)
		if err != nil || len(got) != 1 || got[0] != vols[0] {
			t.Fatalf("got %+v, %v; want the volume unchanged", got, err)
		}
	})

	t.Run("root anyone may write", func(t *testing.T) {
		roots := Roots{Datasets: filepath.Join(t.TempDir(), "open")}
		if err := os.MkdirAll(filepath.Join(roots.Datasets, "P"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(roots.Datasets, 0o777); err != nil {
			t.Fatal(err)
		}
		vols, err := ParseVolumes(`{"/P": {"bind": "/data", "mode": "ro"}}`, roots)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ResolveHostPaths(vols, roots); !errors.Is(err, ErrInvalidVolume) || !strings.Contains(err.Error(), "the datasets directory itself") {
			t.Fatalf("err = %v, want the root refused", err)
		}
	})

	t.Run("root through a link", func(t *testing.T) {
		// The operator's own link to the root is followed; what is mounted is the real path.
		linked := Roots{Datasets: filepath.Join(t.TempDir(), "datasets-link"), Output: tr.roots.Output}
		if err := os.Symlink(tr.roots.Datasets, linked.Datasets); err != nil {
			t.Fatal(err)
		}
		vols, err := ParseVolumes(`{"/P/in": {"bind": "/data", "mode": "ro"}}`, linked)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ResolveHostPaths(vols, linked)
		if err != nil || got[0].HostPath != filepath.Join(tr.roots.Datasets, "P", "raw") {
			t.Fatalf("got %+v, %v; want the real path", got, err)
		}
	})
}

// FuzzResolveHostPaths resolves arbitrary host paths over a tree with links in and
// out of proposals, and checks what it accepts with a walk of its own: the path it
// returns has no link, stays in the proposal directory the text names, is a directory
// or a regular file, and every directory above it, from the root down, belongs to a
// trusted user and is not writable by group or others.
func FuzzResolveHostPaths(f *testing.F) {
	for _, seed := range []string{
		"/P/raw", "/P/in", "/P/in-deep/b", "/P/chain", "/P/up", "/P/up-secret", "/P/abs-q/secret", "/P/abs-out/secret",
		"/P/rel-out", "/P/loop", "/P-alias/raw", "/P/open/x", "/P/theirs/x", "/P/fifo", "/P/file", "/P/root/Q",
		"/P/results", "/P/alt", "/P/datasets-rw/Q", "/shared/sub", "/mine/sub", "/P/./in/../raw", "P//in/",
	} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	tr := makeResolveTree(f)
	realOutside, err := filepath.EvalSymlinks(tr.outside)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, host string, rw bool) {
		mode := "ro"
		if rw {
			mode = "rw"
		}
		def, err := json.Marshal(map[string]map[string]string{host: {"bind": "/data", "mode": mode}})
		if err != nil {
			return
		}
		vols, err := ParseVolumes(string(def), tr.roots)
		if err != nil || len(vols) != 1 {
			return
		}
		got, err := ResolveHostPaths(vols, tr.roots)
		if err != nil {
			if !errors.Is(err, ErrInvalidVolume) {
				t.Fatalf("%q (%s): error %v does not match ErrInvalidVolume", host, mode, err)
			}
			if strings.Contains(err.Error(), tr.base) {
				t.Fatalf("%q (%s): the refusal %q shows the host's paths", host, mode, err)
			}
			return
		}
		if len(got) != 1 || got[0].ReadOnly != vols[0].ReadOnly || got[0].ContainerPath != vols[0].ContainerPath {
			t.Fatalf("%q (%s): got %+v from %+v", host, mode, got, vols)
		}
		root := tr.roots.Output
		if !rw {
			root = tr.roots.Datasets
		}
		proposal, _, _ := strings.Cut(strings.TrimPrefix(vols[0].HostPath, root+"/"), "/")
		real := got[0].HostPath
		if strings.HasPrefix(real, realOutside) {
			t.Fatalf("%q (%s): mounts %s, outside the roots", host, mode, real)
		}
		if real != root+"/"+proposal && !strings.HasPrefix(real, root+"/"+proposal+"/") {
			t.Fatalf("%q (%s): mounts %s, outside the proposal directory %s", host, mode, real, proposal)
		}
		for p := real; ; p = filepath.Dir(p) {
			fi, err := os.Lstat(p)
			if err != nil {
				t.Fatalf("%q (%s): %s: %v", host, mode, p, err)
			}
			switch {
			case fi.Mode()&os.ModeSymlink != 0:
				t.Fatalf("%q (%s): %s on the mounted path is a link", host, mode, p)
			case p == real && !fi.IsDir() && !fi.Mode().IsRegular():
				t.Fatalf("%q (%s): mounts %s, of mode %v", host, mode, p, fi.Mode())
			case p != real:
				uid, _ := fileOwner(fi)
				if !trustedOwner(uid) || fi.Mode().Perm()&0o022 != 0 {
					t.Fatalf("%q (%s): %s above the mount is owned by %d, mode %v", host, mode, p, uid, fi.Mode())
				}
			}
			if p == root {
				break
			}
		}
	})
}
