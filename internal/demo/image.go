package demo

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
)

// LabelDemo is the label every demo image carries; its value is the Kind.
const LabelDemo = "calipso.demo"

// Repository is the repository of kind's image; the tag is a hash of what the image
// is made of (the executable, its libraries, the Dockerfile).
func Repository(kind Kind) string { return "calipso-demo-" + string(kind) }

// Timeouts of the engine calls.
const (
	inspectTimeout = 30 * time.Second
	buildTimeout   = 5 * time.Minute // sends the executable (tens of MB) and commits it
)

// imageExecutable is where the executable lives in the image.
const imageExecutable = "/calipso"

// Executable is a calipso executable with what it needs to run in a FROM scratch
// image: its ELF interpreter and shared libraries when it is dynamically linked (as
// `go run` makes it when cgo is on).
type Executable struct {
	Path   string
	files  []imageFile
	digest []byte // of every file's image path and content
}

// imageFile is one file of the image, read from Source on this machine.
type imageFile struct {
	Path   string // absolute path in the image
	Source string
}

// Inspect reads the executable at path (os.Executable() when empty) and finds
// what it loads.
func Inspect(path string) (*Executable, error) {
	if path == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("demo image: locate the running executable: %w", err)
		}
		path = exe
	}
	deps, err := Dependencies(path, nil)
	if err != nil {
		return nil, fmt.Errorf("demo image: %w", err)
	}
	e := &Executable{Path: path, files: []imageFile{{Path: imageExecutable, Source: path}}}
	for _, d := range deps {
		e.files = append(e.files, imageFile{Path: d, Source: d})
	}
	h := sha256.New()
	for _, f := range e.files {
		if err := hashFile(h, f); err != nil {
			return nil, fmt.Errorf("demo image: %w", err)
		}
	}
	e.digest = h.Sum(nil)
	return e, nil
}

func hashFile(h io.Writer, f imageFile) error {
	src, err := os.Open(f.Source)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	fmt.Fprintf(h, "%s\x00%d\x00", f.Path, st.Size())
	if _, err := io.Copy(h, src); err != nil {
		return fmt.Errorf("read %s: %w", f.Source, err)
	}
	return nil
}

// Files lists the image's files: the executable at /calipso, then the interpreter
// and libraries at their own paths.
func (e *Executable) Files() []string {
	out := make([]string, len(e.files))
	for i, f := range e.files {
		out[i] = f.Path
	}
	return out
}

// Reference is the image reference of kind for this executable.
func (e *Executable) Reference(kind Kind) string {
	h := sha256.New()
	h.Write(e.digest)
	io.WriteString(h, dockerfile(kind))
	return Repository(kind) + ":" + hex.EncodeToString(h.Sum(nil))[:16]
}

// dockerfile of kind's image. USER is a default only: Calipso runs workloads as the
// experiment's uid, and nothing in the image needs a particular one.
func dockerfile(kind Kind) string {
	port := "8888"
	if kind == KindDesktop {
		port = "5901"
	}
	return fmt.Sprintf(`FROM scratch
COPY rootfs/ /
USER 65534:65534
EXPOSE %s
ENTRYPOINT [%q, %q, %q]
`, port, imageExecutable, Subcommand, kind)
}

// EnsureImage returns the reference of kind's image, building it on the engine
// unless it is there already; built says which.
func (e *Executable) EnsureImage(ctx context.Context, cli client.ImageAPIClient, kind Kind) (ref string, built bool, err error) {
	ref = e.Reference(kind)
	ictx, cancel := context.WithTimeout(ctx, inspectTimeout)
	_, err = cli.ImageInspect(ictx, ref)
	cancel()
	switch {
	case err == nil:
		return ref, false, nil
	case !cerrdefs.IsNotFound(err):
		return "", false, fmt.Errorf("demo image: inspect %s: %w", ref, err)
	}

	bctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(e.writeContext(pw, dockerfile(kind))) }()
	defer pr.Close() // stops the writer if the engine gave up reading
	resp, err := cli.ImageBuild(bctx, pr, build.ImageBuildOptions{
		Tags:        []string{ref},
		Dockerfile:  "Dockerfile",
		Remove:      true,
		ForceRemove: true,
		Labels:      map[string]string{LabelDemo: string(kind)},
	})
	if err != nil {
		return "", false, fmt.Errorf("demo image: build %s: %w", ref, err)
	}
	defer resp.Body.Close()
	// The status is 200 even when the build fails: the error is in the stream.
	if err := jsonmessage.DisplayJSONMessagesStream(resp.Body, io.Discard, 0, false, nil); err != nil {
		return "", false, fmt.Errorf("demo image: build %s: %w", ref, err)
	}
	return ref, true, nil
}

// fixedTime is the modification time of every file in the build context, so that
// the same files make the same layer.
var fixedTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// writeContext writes the build context: the Dockerfile, and rootfs/ holding the
// image's files with every directory above them (readable by any uid).
func (e *Executable) writeContext(w io.Writer, dockerfile string) error {
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(dockerfile)), ModTime: fixedTime}); err != nil {
		return fmt.Errorf("build context: %w", err)
	}
	if _, err := io.WriteString(tw, dockerfile); err != nil {
		return fmt.Errorf("build context: %w", err)
	}
	dirs := map[string]bool{}
	for _, f := range e.files {
		for d := path.Dir(f.Path); d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "rootfs" + d + "/", Mode: 0o755, ModTime: fixedTime}); err != nil {
			return fmt.Errorf("build context: %w", err)
		}
	}
	for _, f := range e.files {
		if err := addFile(tw, f); err != nil {
			return fmt.Errorf("build context: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("build context: %w", err)
	}
	return nil
}

func addFile(tw *tar.Writer, f imageFile) error {
	src, err := os.Open(f.Source) // follows links: the image gets the content at f.Path
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "rootfs" + f.Path, Mode: 0o755, Size: st.Size(), ModTime: fixedTime}); err != nil {
		return err
	}
	if _, err := io.CopyN(tw, src, st.Size()); err != nil {
		return fmt.Errorf("%s: %w", f.Source, err)
	}
	return nil
}

// Dependencies lists what the ELF executable at exe needs to start besides itself:
// its interpreter (PT_INTERP) and the shared libraries it needs (DT_NEEDED,
// recursively), as absolute paths on this machine, in the order found. A static
// executable needs nothing. Libraries are searched in dirs, or, when nil, where the
// loader of a Debian-like system looks (multiarch directories first).
func Dependencies(exe string, dirs []string) ([]string, error) {
	f, err := elf.Open(exe)
	if err != nil {
		return nil, fmt.Errorf("read ELF executable %s: %w", exe, err)
	}
	defer f.Close()
	interp, err := interpreter(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", exe, err)
	}
	if interp == "" {
		return nil, nil
	}
	if dirs == nil {
		dirs = libraryDirs(f.Machine)
	}
	out := []string{interp}
	queue, err := f.ImportedLibraries()
	if err != nil {
		return nil, fmt.Errorf("%s: needed libraries: %w", exe, err)
	}
	seen := map[string]bool{}
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		if seen[name] {
			continue
		}
		seen[name] = true
		lib, needs, err := findLibrary(name, dirs, f.Class, f.Machine)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", exe, err)
		}
		if !slices.Contains(out, lib) {
			out = append(out, lib)
		}
		queue = append(queue, needs...)
	}
	return out, nil
}

// interpreter is the path in PT_INTERP, "" for a static executable.
func interpreter(f *elf.File) (string, error) {
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b, err := io.ReadAll(p.Open())
		if err != nil {
			return "", fmt.Errorf("read PT_INTERP: %w", err)
		}
		interp := strings.TrimRight(string(b), "\x00")
		if !filepath.IsAbs(interp) {
			return "", fmt.Errorf("interpreter %q is not an absolute path", interp)
		}
		return interp, nil
	}
	return "", nil
}

// findLibrary finds the library name as the loader would: a name with a slash is a
// path; otherwise the first file of that name in dirs that is an ELF object of the
// executable's class and machine (a 32-bit one in /lib is skipped, as ld.so does).
// It returns the path and the libraries that one needs.
func findLibrary(name string, dirs []string, class elf.Class, machine elf.Machine) (string, []string, error) {
	candidates := []string{name}
	if !strings.Contains(name, "/") {
		candidates = candidates[:0]
		for _, d := range dirs {
			candidates = append(candidates, filepath.Join(d, name))
		}
	}
	for _, c := range candidates {
		lib, err := elf.Open(c)
		if err != nil {
			continue // missing, or not an ELF object: the loader skips it too
		}
		needs, err := lib.ImportedLibraries()
		ok := lib.Class == class && lib.Machine == machine
		lib.Close()
		if !ok {
			continue
		}
		if err != nil {
			return "", nil, fmt.Errorf("library %s: %w", c, err)
		}
		return c, needs, nil
	}
	return "", nil, fmt.Errorf("library %s not found in %s", name, strings.Join(dirs, ":"))
}

// multiarch are Debian's multiarch tuples of the machines Go builds for.
var multiarch = map[elf.Machine]string{
	elf.EM_X86_64:  "x86_64-linux-gnu",
	elf.EM_AARCH64: "aarch64-linux-gnu",
	elf.EM_386:     "i386-linux-gnu",
	elf.EM_ARM:     "arm-linux-gnueabihf",
	elf.EM_PPC64:   "powerpc64le-linux-gnu",
	elf.EM_S390:    "s390x-linux-gnu",
	elf.EM_RISCV:   "riscv64-linux-gnu",
}

// libraryDirs is the loader's default search path on Debian-like systems.
func libraryDirs(m elf.Machine) []string {
	var dirs []string
	if t, ok := multiarch[m]; ok {
		dirs = append(dirs, "/lib/"+t, "/usr/lib/"+t)
	}
	return append(dirs, "/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib")
}
