package experiments

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/calipsoplus/calipso"
)

// ErrInvalidVolume: a session's volume definition is malformed or unsafe to mount.
var ErrInvalidVolume = calipso.NewError(calipso.EUNLAUNCHABLE, "invalid volume definition")

// ErrRootNotConfigured: a volume needs a root (datasets or output) that is not set.
var ErrRootNotConfigured = calipso.NewError(calipso.EUNAVAILABLE, "volume root not configured")

// Limits on untrusted definitions (CalipsoPlus stored them in a varchar(255)).
const (
	maxVolumeDefinition = 64 << 10
	maxVolumes          = 64
)

// Roots are the host directories under which session volumes are mounted: read-only
// binds under Datasets, read-write binds under Output. Both are absolute host paths.
type Roots struct {
	Datasets string
	Output   string
}

// Volume is one bind mount for a workload.
type Volume struct {
	HostPath      string // absolute, cleaned, strictly under its root
	ContainerPath string // absolute, cleaned
	ReadOnly      bool
}

// VolumeError says which path of a definition was refused and why.
type VolumeError struct {
	Path   string // the offending path as written, or "" for a syntax error
	Reason string
}

func (e *VolumeError) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("%v: %s", ErrInvalidVolume, e.Reason)
	}
	return fmt.Sprintf("%v: %q: %s", ErrInvalidVolume, e.Path, e.Reason)
}

// Unwrap makes it an ErrInvalidVolume, for errors.Is and its error code.
func (e *VolumeError) Unwrap() error { return ErrInvalidVolume }

func volErr(p, format string, args ...any) error {
	return &VolumeError{Path: p, Reason: fmt.Sprintf(format, args...)}
}

// Container directories a session volume must never cover or shadow.
var systemDirs = []string{
	"/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
	"/root", "/run", "/sbin", "/sys", "/usr", "/var/lib", "/var/run",
}

// ParseVolumes reads a session's data_set_path: a volume definition in the style of
// Docker's Python client, `{"/host": {"bind": "/in/container", "mode": "ro"}}`, possibly
// written as a Python literal with single quotes. "", "[]", "{}" and null mean no volume.
// A list of "host:container[:mode]" strings is accepted too. A missing mode means "ro".
//
// Host paths are joined under roots.Datasets (ro) or roots.Output (rw), the way
// CalipsoPlus prefixed them, and must stay strictly under that root. Anything doubtful
// (traversal, "~", NUL, relative or system container paths, unknown modes or keys,
// duplicate container paths) is refused with an error matching ErrInvalidVolume.
func ParseVolumes(raw string, roots Roots) ([]Volume, error) {
	raw = strings.TrimSpace(raw)
	if len(raw) > maxVolumeDefinition {
		return nil, volErr("", "definition longer than %d bytes", maxVolumeDefinition)
	}
	if !utf8.ValidString(raw) {
		return nil, volErr("", "definition is not valid UTF-8")
	}
	switch raw {
	case "", "[]", "{}", "null", "None":
		return nil, nil
	}
	jsonText, err := pythonLiteralToJSON(raw)
	if err != nil {
		return nil, err
	}
	specs, err := decodeVolumeSpecs(jsonText)
	if err != nil {
		return nil, err
	}
	if len(specs) > maxVolumes {
		return nil, volErr("", "%d volumes, at most %d allowed", len(specs), maxVolumes)
	}
	volumes := make([]Volume, 0, len(specs))
	seen := make(map[string]bool, len(specs))
	for _, s := range specs {
		v, err := s.resolve(roots)
		if err != nil {
			return nil, err
		}
		if seen[v.ContainerPath] {
			return nil, volErr(s.container, "container path used twice")
		}
		seen[v.ContainerPath] = true
		volumes = append(volumes, v)
	}
	return volumes, nil
}

// volumeSpec is one entry of a definition before it is checked.
type volumeSpec struct {
	host, container, mode string
}

func (s volumeSpec) resolve(roots Roots) (Volume, error) {
	var root string
	switch s.mode {
	case "ro":
		root = roots.Datasets
	case "rw":
		root = roots.Output
	default:
		return Volume{}, volErr(s.container, "mode %q is neither ro nor rw", s.mode)
	}
	if root == "" {
		return Volume{}, fmt.Errorf("mount %q (%s): %w", s.host, s.mode, ErrRootNotConfigured)
	}
	if !path.IsAbs(root) || path.Clean(root) == "/" || strings.Contains(root, "\x00") || hasDotDot(root) {
		return Volume{}, fmt.Errorf("root %q: %w: must be an absolute path below /", root, ErrRootNotConfigured)
	}
	if err := checkPathText(s.host); err != nil {
		return Volume{}, err
	}
	if err := checkPathText(s.container); err != nil {
		return Volume{}, err
	}
	if !path.IsAbs(s.container) {
		return Volume{}, volErr(s.container, "container path must be absolute")
	}
	container := path.Clean(s.container)
	for _, dir := range systemDirs {
		if container == "/" || container == dir || strings.HasPrefix(container, dir+"/") {
			return Volume{}, volErr(s.container, "container path would shadow a system directory")
		}
	}
	cleanRoot := path.Clean(root)
	host := path.Join(cleanRoot, s.host) // Join cleans, "/x" under root becomes root+"/x"
	if hasDotDot(host) || !strings.HasPrefix(host, cleanRoot+"/") {
		return Volume{}, volErr(s.host, "host path falls outside %s", cleanRoot)
	}
	return Volume{HostPath: host, ContainerPath: container, ReadOnly: s.mode == "ro"}, nil
}

// ResolveHostPaths checks the volumes' host paths on this host, where it can see their
// roots, and returns the volumes with their real paths (symbolic links resolved), so
// that the engine mounts what was checked. A volume is refused (ErrInvalidVolume) when:
//
//   - it does not exist, or is neither a directory nor a regular file;
//   - its real path leaves the proposal directory its text names: the first component
//     under the root (`/P/raw` must stay inside root/P; a link from P's data into Q's
//     is refused, and so is a proposal directory that is itself a link);
//   - a directory on its real path, from the root down to the source's parent, can be
//     changed by anyone but root or the user Calipso runs as (owned by another user,
//     or writable by group or others): a workload that can write there could rename a
//     link into the source's place between this check and the engine's mount.
//
// The last rule is what makes the check hold when the engine makes the mount: the
// path handed to the engine has no symbolic link, and every name on it sits in a
// directory no workload can change, so the engine's own lookup finds what was checked.
// When a root does not exist here (a remote Docker engine or a Kubernetes node holds
// the data), its volumes are returned as they are: the engine's host is then trusted
// to keep its layout as safe (see the package documentation).
func ResolveHostPaths(vols []Volume, roots Roots) ([]Volume, error) {
	realRoots := map[string]string{} // root as configured → real path; "" when not here
	realRoot := func(root string) (string, error) {
		if r, ok := realRoots[root]; ok {
			return r, nil
		}
		r, err := filepath.EvalSymlinks(root)
		if errors.Is(err, fs.ErrNotExist) {
			r, err = "", nil
		}
		if err != nil {
			return "", fmt.Errorf("volume root %s: %w", root, err)
		}
		realRoots[root] = r
		return r, nil
	}
	out := make([]Volume, 0, len(vols))
	for _, v := range vols {
		root, which := path.Clean(roots.Output), "output"
		if v.ReadOnly {
			root, which = path.Clean(roots.Datasets), "datasets"
		}
		rel, ok := strings.CutPrefix(v.HostPath, root+"/")
		if !ok || rel == "" || hasDotDot(rel) {
			return nil, volErr(v.HostPath, "host path falls outside the %s directory", which)
		}
		shown := "/" + rel // what the definition said, without the host's root
		rr, err := realRoot(root)
		if err != nil {
			return nil, err
		}
		if rr == "" {
			out = append(out, v)
			continue
		}
		real, err := filepath.EvalSymlinks(rr + "/" + rel)
		switch {
		case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
			return nil, volErr(shown, "does not exist in the %s directory", which)
		case errors.Is(err, syscall.EINVAL): // a link read as it was replaced by a directory
			return nil, volErr(shown, "changed while it was checked")
		case errors.Is(err, fs.ErrPermission):
			return nil, fmt.Errorf("volume %s: %w", v.HostPath, err) // this host's set-up, not the user's
		case err != nil:
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err // without the host's path
			}
			return nil, volErr(shown, "cannot be resolved: %v", err)
		}
		proposal, _, _ := strings.Cut(rel, "/")
		proposalDir := rr + "/" + proposal
		if real != proposalDir && !strings.HasPrefix(real, proposalDir+"/") {
			if real != rr && !strings.HasPrefix(real, rr+"/") {
				return nil, volErr(shown, "a symbolic link leads out of the %s directory", which)
			}
			return nil, volErr(shown, "a symbolic link leads out of the proposal directory /%s", proposal)
		}
		if err := checkSealed(rr, real, shown, which); err != nil {
			return nil, err
		}
		v.HostPath = real
		out = append(out, v)
	}
	return out, nil
}

// checkSealed walks real (a path below the real root rr) from rr down, without
// following links, and refuses it unless every directory on the way, rr included,
// can be changed only by a trusted user (see trustedOwner), and real itself is a
// directory or a regular file. A directory nobody else can write keeps its entries:
// the walk's lookups, and the engine's later, find the same files. A link or a
// non-directory on the way means the path changed since it was resolved.
func checkSealed(rr, real, shown, which string) error {
	rest := strings.TrimPrefix(real, rr)
	dir := rr
	for {
		fi, err := os.Lstat(dir)
		if err != nil {
			return volErr(shown, "changed while it was checked")
		}
		if dir == real {
			if !fi.IsDir() && !fi.Mode().IsRegular() {
				return volErr(shown, "is neither a directory nor a regular file")
			}
			return nil
		}
		if !fi.IsDir() {
			return volErr(shown, "changed while it was checked")
		}
		if uid, ok := fileOwner(fi); !ok || !trustedOwner(uid) || fi.Mode().Perm()&0o022 != 0 {
			where := "the " + which + " directory itself"
			if dir != rr {
				where = "directory " + strings.TrimPrefix(dir, rr)
			}
			owner := "unknown"
			if ok {
				owner = strconv.FormatUint(uint64(uid), 10)
			}
			return volErr(shown, "%s (owner %s, mode %04o) can be changed by users other than root: "+
				"a workload writing there could swap what is mounted while the engine mounts it; the directories "+
				"from the root down to a mount must belong to root and not be writable by group or others",
				where, owner, fi.Mode().Perm())
		}
		next, after, _ := strings.Cut(strings.TrimPrefix(rest, "/"), "/")
		dir += "/" + next
		rest = after
		if rest != "" {
			rest = "/" + rest
		}
	}
}

// trustedOwner says whether uid may own the directories above a mount: root, and the
// user Calipso runs as (who made the demo's directories, and can change the settings
// anyway). Workloads must not run as either (workloads.allow_root, or a workload uid
// equal to Calipso's, void the guarantee).
func trustedOwner(uid uint32) bool {
	return uid == 0 || int64(uid) == int64(os.Geteuid())
}

// checkPathText refuses path text that is unsafe whatever root it is joined to.
func checkPathText(p string) error {
	switch {
	case p == "":
		return volErr(p, "empty path")
	case strings.ContainsRune(p, 0):
		return volErr(p, "NUL byte in path")
	case strings.ContainsRune(p, '~'):
		return volErr(p, "\"~\" is not allowed in paths")
	case hasDotDot(p):
		return volErr(p, "\"..\" is not allowed in paths")
	case strings.ContainsRune(p, ':'):
		// Docker's bind syntax is host:container:mode; a colon could smuggle options.
		return volErr(p, "\":\" is not allowed in paths")
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return volErr(p, "control character in path")
		}
	}
	return nil
}

// hasDotDot reports a ".." segment, also with backslash separators.
func hasDotDot(p string) bool {
	for _, seg := range strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '\\' }) {
		if seg == ".." {
			return true
		}
	}
	return false
}

// decodeVolumeSpecs reads the JSON form: an object host -> {bind, mode} (keys kept in
// order, duplicates refused) or a list of "host:container[:mode]" strings.
func decodeVolumeSpecs(text string) ([]volumeSpec, error) {
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, volErr("", "not JSON: %v", err)
	}
	var specs []volumeSpec
	switch tok {
	case json.Delim('{'):
		seenHost := map[string]bool{}
		for dec.More() {
			keyTok, err := dec.Token()
			if err != nil {
				return nil, volErr("", "not JSON: %v", err)
			}
			host := keyTok.(string) // object keys are always strings
			if seenHost[host] {
				return nil, volErr(host, "host path listed twice")
			}
			seenHost[host] = true
			var bind map[string]json.RawMessage
			if err := dec.Decode(&bind); err != nil || bind == nil {
				var typeErr *json.UnmarshalTypeError
				if err != nil && !errors.As(err, &typeErr) {
					return nil, volErr("", "not JSON: %v", err)
				}
				return nil, volErr(host, "want {\"bind\": ..., \"mode\": ...}")
			}
			spec := volumeSpec{host: host, mode: "ro"}
			for k, v := range bind {
				var s string
				if err := json.Unmarshal(v, &s); err != nil {
					return nil, volErr(host, "%q must be a string", k)
				}
				switch k {
				case "bind":
					spec.container = s
				case "mode":
					spec.mode = s
				default:
					return nil, volErr(host, "unknown key %q", k)
				}
			}
			if spec.container == "" {
				return nil, volErr(host, "no \"bind\" (container path)")
			}
			specs = append(specs, spec)
		}
	case json.Delim('['):
		for dec.More() {
			var entry string
			if err := dec.Decode(&entry); err != nil {
				return nil, volErr("", "list entries must be \"host:container[:mode]\" strings")
			}
			parts := strings.Split(entry, ":")
			if len(parts) < 2 || len(parts) > 3 {
				return nil, volErr(entry, "want \"host:container[:mode]\"")
			}
			spec := volumeSpec{host: parts[0], container: parts[1], mode: "ro"}
			if len(parts) == 3 {
				spec.mode = parts[2]
			}
			specs = append(specs, spec)
		}
	default:
		return nil, volErr("", "want an object or a list, got %v", tok)
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return nil, volErr("", "not JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, volErr("", "trailing data after the definition")
	}
	return specs, nil
}

// pythonLiteralToJSON rewrites a Python literal (single- or double-quoted strings,
// True/False/None, trailing commas) as JSON. Strings are decoded and re-encoded, so an
// apostrophe inside a double-quoted string, or a quote inside a single-quoted one, keeps
// its meaning. Anything it does not understand is an error, not a guess.
func pythonLiteralToJSON(src string) (string, error) {
	var out bytes.Buffer
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '{' || c == '[' || c == ':':
			out.WriteByte(c)
			i++
		case c == '}' || c == ']':
			// Python allows a trailing comma; JSON does not.
			if b := out.Bytes(); len(b) > 0 && b[len(b)-1] == ',' {
				out.Truncate(len(b) - 1)
			}
			out.WriteByte(c)
			i++
		case c == ',':
			out.WriteByte(c)
			i++
		case c == '"' || c == '\'':
			s, n, err := readQuoted(src[i:])
			if err != nil {
				return "", volErr("", "at offset %d: %v", i, err)
			}
			enc, _ := json.Marshal(s) // a valid UTF-8 string always encodes
			out.Write(enc)
			i += n
		default:
			j := i
			for j < len(src) && (isWordByte(src[j])) {
				j++
			}
			word := src[i:j]
			switch word {
			case "True", "true":
				out.WriteString("true")
			case "False", "false":
				out.WriteString("false")
			case "None", "null":
				out.WriteString("null")
			default:
				if word != "" && json.Valid([]byte(word)) {
					out.WriteString(word) // a number
				} else {
					r, _ := utf8.DecodeRuneInString(src[i:])
					return "", volErr("", "unexpected %q at offset %d", r, i)
				}
			}
			i = j
		}
	}
	return out.String(), nil
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '.' || c == '-' || c == '+'
}

// readQuoted decodes the quoted string at the start of s (either quote kind, Python and
// JSON escapes) and returns it with the number of bytes consumed.
func readQuoted(s string) (string, int, error) {
	quote := s[0]
	var b strings.Builder
	for i := 1; i < len(s); {
		c := s[i]
		switch {
		case c == quote:
			return b.String(), i + 1, nil
		case c == '\n':
			return "", 0, errors.New("newline inside a string")
		case c != '\\':
			b.WriteByte(c)
			i++
		case i+1 >= len(s):
			return "", 0, errors.New("unterminated escape")
		default:
			esc := s[i+1]
			i += 2
			switch esc {
			case '\\', '\'', '"', '/':
				b.WriteByte(esc)
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case '0':
				b.WriteByte(0) // refused later as a NUL in a path, with a clear message
			case 'x', 'u':
				width := 2
				if esc == 'u' {
					width = 4
				}
				if i+width > len(s) {
					return "", 0, fmt.Errorf("short \\%c escape", esc)
				}
				var r rune
				for _, h := range []byte(s[i : i+width]) {
					v, ok := hexValue(h)
					if !ok {
						return "", 0, fmt.Errorf("bad \\%c escape", esc)
					}
					r = r<<4 | rune(v)
				}
				if !utf8.ValidRune(r) {
					return "", 0, fmt.Errorf("\\%c escape is not a character", esc)
				}
				b.WriteRune(r)
				i += width
			default:
				return "", 0, fmt.Errorf("unknown escape \\%c", esc)
			}
		}
	}
	return "", 0, errors.New("unterminated string")
}

func hexValue(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
