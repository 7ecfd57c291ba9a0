package demo

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// lddFiles is what the system's ldd says exe loads (its real paths), nil for a
// static executable: the oracle of Dependencies.
func lddFiles(t *testing.T, exe string) []string {
	t.Helper()
	ldd, err := exec.LookPath("ldd")
	if err != nil {
		t.Skip("no ldd on this machine to compare with")
	}
	out, err := exec.Command(ldd, exe).CombinedOutput()
	if strings.Contains(string(out), "not a dynamic executable") {
		return nil
	}
	if err != nil {
		t.Fatalf("ldd %s: %v: %s", exe, err, out)
	}
	var files []string
	path := regexp.MustCompile(`(?:=> )?(/\S+) \(0x`)
	for _, line := range strings.Split(string(out), "\n") {
		if m := path.FindStringSubmatch(line); m != nil {
			files = append(files, realPath(t, m[1]))
		}
	}
	slices.Sort(files)
	return slices.Compact(files)
}

func realPath(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDependencies(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	goTool, _ := exec.LookPath("go")
	cases := []struct {
		name, exe string
	}{
		{"this test binary (dynamically linked when cgo is on, as under -race)", self},
		{"a C program with libraries of libraries", "/bin/ls"},
		{"a shell", "/bin/sh"},
		{"the go tool (static)", goTool},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.exe == "" {
				t.Skip("not on this machine")
			}
			if _, err := os.Stat(c.exe); err != nil {
				t.Skipf("%s is not on this machine", c.exe)
			}
			got, err := Dependencies(c.exe, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := lddFiles(t, c.exe)
			var real []string
			for _, g := range got {
				if !filepath.IsAbs(g) {
					t.Errorf("%q is not absolute", g)
				}
				real = append(real, realPath(t, g))
			}
			slices.Sort(real)
			real = slices.Compact(real)
			if !slices.Equal(real, want) {
				t.Fatalf("Dependencies(%s) = %v\n(real paths %v)\nldd says %v", c.exe, got, real, want)
			}
			if len(want) > 0 {
				interp, _ := interpreterOf(t, c.exe)
				if got[0] != interp {
					t.Errorf("first file %q, want the interpreter %q at its own path", got[0], interp)
				}
			}
		})
	}
}

func interpreterOf(t *testing.T, exe string) (string, error) {
	t.Helper()
	out, err := exec.Command("readelf", "-l", exe).Output()
	if err != nil {
		t.Skipf("readelf: %v", err)
	}
	m := regexp.MustCompile(`interpreter: (\S+)\]`).FindSubmatch(out)
	if m == nil {
		return "", nil
	}
	return string(m[1]), nil
}

func TestDependenciesErrors(t *testing.T) {
	dir := t.TempDir()
	notELF := filepath.Join(dir, "script")
	os.WriteFile(notELF, []byte("#!/bin/sh\necho hi\n"), 0o755)
	cases := []struct {
		name, exe string
		dirs      []string
		want      string
	}{
		{"not an ELF file", notELF, nil, "read ELF executable"},
		{"missing file", filepath.Join(dir, "nothing"), nil, "no such file"},
		// A library directory without libc: the needed library is named.
		{"library not found", "/bin/sh", []string{dir}, "library libc.so.6 not found in " + dir},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := os.Stat("/bin/sh"); err != nil && c.exe == "/bin/sh" {
				t.Skip("no /bin/sh")
			}
			_, err := Dependencies(c.exe, c.dirs)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one with %q", err, c.want)
			}
		})
	}
}

// The build context holds the Dockerfile and rootfs/ with every file at its image
// path, under directories any uid can traverse; the same files give the same tag.
func TestBuildContext(t *testing.T) {
	e, err := Inspect("")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := e.writeContext(&buf, dockerfile(KindNotebook)); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	selfContent, _ := os.ReadFile(self)
	tr := tar.NewReader(&buf)
	entries := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		entries[h.Name] = h
		switch h.Name {
		case "Dockerfile":
			b, _ := io.ReadAll(tr)
			if !strings.Contains(string(b), `ENTRYPOINT ["/calipso", "demo-workload", "notebook"]`) || !strings.HasPrefix(string(b), "FROM scratch\n") {
				t.Errorf("Dockerfile:\n%s", b)
			}
		case "rootfs/calipso":
			b, _ := io.ReadAll(tr)
			if !bytes.Equal(b, selfContent) {
				t.Error("rootfs/calipso is not the running executable")
			}
		}
	}
	files := e.Files()
	if files[0] != "/calipso" {
		t.Errorf("files %v: the executable first", files)
	}
	for _, f := range files {
		h := entries["rootfs"+f]
		if h == nil || h.Typeflag != tar.TypeReg || h.Mode&0o005 != 0o005 {
			t.Errorf("%s: entry %+v, want a regular file any uid can read and run", f, h)
			continue
		}
		for d := filepath.Dir(f); d != "/"; d = filepath.Dir(d) {
			if dh := entries["rootfs"+d+"/"]; dh == nil || dh.Typeflag != tar.TypeDir || dh.Mode != 0o755 {
				t.Errorf("directory %s of %s: %+v", d, f, dh)
			}
		}
	}
	deps, _ := Dependencies(self, nil)
	if len(files) != 1+len(deps) {
		t.Errorf("files %v, want the executable and %v", files, deps)
	}

	again, err := Inspect(self)
	if err != nil {
		t.Fatal(err)
	}
	refs := map[string]bool{}
	for _, k := range Kinds {
		ref := e.Reference(k)
		if !regexp.MustCompile(`^calipso-demo-` + string(k) + `:[0-9a-f]{16}$`).MatchString(ref) {
			t.Errorf("reference %q", ref)
		}
		if again.Reference(k) != ref {
			t.Errorf("the same executable gave %s and %s", ref, again.Reference(k))
		}
		refs[strings.SplitN(ref, ":", 2)[1]] = true
	}
	if len(refs) != len(Kinds) {
		t.Errorf("kinds share a tag: %v", refs)
	}

	// Another executable, another tag.
	other := filepath.Join(t.TempDir(), "calipso")
	os.WriteFile(other, append(selfContent, 0), 0o755)
	changed, err := Inspect(other)
	if err != nil {
		t.Fatal(err)
	}
	if changed.Reference(KindNotebook) == e.Reference(KindNotebook) {
		t.Error("a changed executable kept its tag")
	}
}
