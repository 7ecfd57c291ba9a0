package experiments

import (
	"errors"
	"path"
	"reflect"
	"strings"
	"testing"
)

var testRoots = Roots{Datasets: "/srv/datasets", Output: "/srv/output"}

func TestParseVolumesAccepted(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want []Volume
	}{
		{"empty", "", nil},
		{"blank", "  \n", nil},
		{"empty list", "[]", nil},
		{"empty object", "{}", nil},
		{"null", "null", nil},
		{"python None", "None", nil},
		{"json ro", `{"/2019001/raw": {"bind": "/data/raw", "mode": "ro"}}`,
			[]Volume{{"/srv/datasets/2019001/raw", "/data/raw", true}}},
		{"json rw goes under output", `{"/2019001/out": {"bind": "/data/out", "mode": "rw"}}`,
			[]Volume{{"/srv/output/2019001/out", "/data/out", false}}},
		{"order kept", `{"/b": {"bind": "/data/b", "mode": "ro"}, "/a": {"bind": "/data/a", "mode": "rw"}}`,
			[]Volume{{"/srv/datasets/b", "/data/b", true}, {"/srv/output/a", "/data/a", false}}},
		{"single quotes", `{'/2019001/raw': {'bind': '/data/raw', 'mode': 'ro'}}`,
			[]Volume{{"/srv/datasets/2019001/raw", "/data/raw", true}}},
		{"apostrophe inside double quotes", `{'/p/x': {'bind': "/data/bob's scans", 'mode': 'ro'}}`,
			[]Volume{{"/srv/datasets/p/x", "/data/bob's scans", true}}},
		{"escaped quote inside single quotes", `{'/p/o\'brien': {'bind': '/data/o\'brien', 'mode': 'ro'}}`,
			[]Volume{{"/srv/datasets/p/o'brien", "/data/o'brien", true}}},
		{"double quote inside single quotes", `{'/p/say "hi"': {'bind': '/data/hi', 'mode': 'ro'}}`,
			[]Volume{{`/srv/datasets/p/say "hi"`, "/data/hi", true}}},
		{"python trailing commas", "{'/a': {'bind': '/data/a', 'mode': 'ro',},}",
			[]Volume{{"/srv/datasets/a", "/data/a", true}}},
		{"unicode and escapes", `{"/p/caf\u00e9": {"bind": "/data/caf\xe9", "mode": "ro"}}`,
			[]Volume{{"/srv/datasets/p/café", "/data/café", true}}},
		{"missing mode is ro", `{"/a": {"bind": "/data/a"}}`, []Volume{{"/srv/datasets/a", "/data/a", true}}},
		{"relative host joined", `{"a/b": {"bind": "/data/a", "mode": "ro"}}`, []Volume{{"/srv/datasets/a/b", "/data/a", true}}},
		{"host cleaned", `{"//a/./b//": {"bind": "/data//a/", "mode": "ro"}}`, []Volume{{"/srv/datasets/a/b", "/data/a", true}}},
		{"list form", `["/a:/data/a:ro", "/b:/data/b:rw", "/c:/data/c"]`, []Volume{
			{"/srv/datasets/a", "/data/a", true}, {"/srv/output/b", "/data/b", false}, {"/srv/datasets/c", "/data/c", true}}},
		{"home dir container path", `{"/a": {"bind": "/home/jovyan/a", "mode": "ro"}}`, []Volume{{"/srv/datasets/a", "/home/jovyan/a", true}}},
		{"dots inside names", `{"/a/..b/c..": {"bind": "/data/...", "mode": "ro"}}`, []Volume{{"/srv/datasets/a/..b/c..", "/data/...", true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseVolumes(tt.raw, testRoots)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseVolumesRejected(t *testing.T) {
	tests := []struct {
		name     string
		raw      string
		mentions string // the message must name this
	}{
		{"dotdot host", `{"/../etc": {"bind": "/data/x", "mode": "ro"}}`, "/../etc"},
		{"dotdot host cleaned away", `{"/a/../../b": {"bind": "/data/x", "mode": "ro"}}`, "/a/../../b"},
		{"dotdot host harmless looking", `{"/a/b/..": {"bind": "/data/x", "mode": "ro"}}`, "/a/b/.."},
		{"dotdot backslash", `{"/a\\..\\b": {"bind": "/data/x", "mode": "ro"}}`, `..`},
		{"dotdot container", `{"/a": {"bind": "/data/../etc", "mode": "ro"}}`, "/data/../etc"},
		{"tilde host", `{"~/x": {"bind": "/data/x", "mode": "ro"}}`, "~/x"},
		{"tilde container", `{"/x": {"bind": "~root/x", "mode": "ro"}}`, "~root/x"},
		{"nul host", `{"/a\u0000b": {"bind": "/data/x", "mode": "ro"}}`, "NUL"},
		{"nul python escape", `{'/a\0': {'bind': '/data/x', 'mode': 'ro'}}`, "NUL"},
		{"control char", `{"/a\nb": {"bind": "/data/x", "mode": "ro"}}`, "control"},
		{"relative container", `{"/a": {"bind": "data/x", "mode": "ro"}}`, "data/x"},
		{"root container", `{"/a": {"bind": "/", "mode": "ro"}}`, "system"},
		{"proc", `{"/a": {"bind": "/proc", "mode": "ro"}}`, "/proc"},
		{"under etc", `{"/a": {"bind": "/etc/ssh", "mode": "ro"}}`, "/etc/ssh"},
		{"usr cleaned", `{"/a": {"bind": "/data/./../usr/bin", "mode": "ro"}}`, "/data/./../usr/bin"},
		{"usr double slash", `{"/a": {"bind": "//usr//lib", "mode": "ro"}}`, "//usr//lib"},
		{"dev", `{"/a": {"bind": "/dev/shm", "mode": "rw"}}`, "/dev/shm"},
		{"sys", `{"/a": {"bind": "/sys", "mode": "ro"}}`, "/sys"},
		{"var run docker socket", `{"/a": {"bind": "/var/run/docker.sock", "mode": "rw"}}`, "/var/run"},
		{"bad mode", `{"/a": {"bind": "/data/a", "mode": "rwx"}}`, "rwx"},
		{"upper mode", `{"/a": {"bind": "/data/a", "mode": "RO"}}`, "RO"},
		{"mode with options", `["/a:/data/a:ro,z"]`, "ro,z"},
		{"duplicate container", `{"/a": {"bind": "/data/a", "mode": "ro"}, "/b": {"bind": "/data/a/", "mode": "rw"}}`, "/data/a/"},
		{"duplicate host key", `{"/a": {"bind": "/data/a"}, "/a": {"bind": "/data/b"}}`, "/a"},
		{"whole root", `{"/": {"bind": "/data/a", "mode": "ro"}}`, "outside"},
		{"dot host is root", `{".": {"bind": "/data/a", "mode": "ro"}}`, "outside"},
		{"empty host", `{"": {"bind": "/data/a", "mode": "ro"}}`, "empty"},
		{"no bind", `{"/a": {"mode": "ro"}}`, "bind"},
		{"unknown key", `{"/a": {"bind": "/data/a", "propagation": "shared"}}`, "propagation"},
		{"bind not string", `{"/a": {"bind": 3}}`, "bind"},
		{"value not object", `{"/a": "/data/a"}`, "/a"},
		{"colon in host", `{"/a:/etc": {"bind": "/data/a"}}`, ":"},
		{"list bad entry", `["/a"]`, "host:container"},
		{"list non string", `[1]`, "strings"},
		{"not json", `{"/a": {"bind": "/data/a"`, "JSON"},
		{"bare word", `{/a: 1}`, "unexpected"},
		{"trailing data", `{} {}`, "trailing"},
		{"scalar", `"x"`, "object or a list"},
		{"unterminated string", `{'/a: 1}`, "unterminated"},
		{"bad escape", `{'/a\q': 1}`, "escape"},
		{"invalid utf8", "{\"/a\xff\": {\"bind\": \"/data/a\"}}", "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseVolumes(tt.raw, testRoots)
			if !errors.Is(err, ErrInvalidVolume) {
				t.Fatalf("got %+v, %v; want ErrInvalidVolume", got, err)
			}
			if !strings.Contains(err.Error(), tt.mentions) {
				t.Errorf("error %q does not mention %q", err, tt.mentions)
			}
		})
	}
}

func TestParseVolumesRoots(t *testing.T) {
	tests := []struct {
		name  string
		roots Roots
		raw   string
	}{
		{"no output root for rw", Roots{Datasets: "/srv/d"}, `{"/a": {"bind": "/data/a", "mode": "rw"}}`},
		{"no datasets root for ro", Roots{Output: "/srv/o"}, `{"/a": {"bind": "/data/a", "mode": "ro"}}`},
		{"relative root", Roots{Datasets: "srv/d"}, `{"/a": {"bind": "/data/a", "mode": "ro"}}`},
		{"slash root", Roots{Datasets: "/"}, `{"/a": {"bind": "/data/a", "mode": "ro"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseVolumes(tt.raw, tt.roots); !errors.Is(err, ErrRootNotConfigured) {
				t.Fatalf("err = %v, want ErrRootNotConfigured", err)
			}
		})
	}
	// A definition that needs no rw volume works without an output root.
	if _, err := ParseVolumes(`{"/a": {"bind": "/data/a", "mode": "ro"}}`, Roots{Datasets: "/srv/d"}); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseVolumes(f *testing.F) {
	for _, seed := range []string{
		"", "[]", "{}", `{"/a": {"bind": "/data/a", "mode": "ro"}}`,
		`{'/a': {'bind': "/data/bob's", 'mode': 'rw'},}`, `["/a:/b:rw"]`,
		`{"/a/../../x": {"bind": "/data/x"}}`, `{"..": {"bind": "/x"}}`, `{'\x2e\x2e': {'bind': '/x'}}`,
		`{"\u002e\u002e/\u002e\u002e": {"bind": "/d"}}`, `{"/a": {"bind": "/data/a", "mode": "ro"}, "/b": {"bind": "/etc"}}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		volumes, err := ParseVolumes(raw, testRoots)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, v := range volumes {
			root := testRoots.Output
			if v.ReadOnly {
				root = testRoots.Datasets
			}
			if !strings.HasPrefix(v.HostPath, root+"/") || path.Clean(v.HostPath) != v.HostPath || hasDotDot(v.HostPath) {
				t.Fatalf("host path %q escapes %s (input %q)", v.HostPath, root, raw)
			}
			if !path.IsAbs(v.ContainerPath) || path.Clean(v.ContainerPath) != v.ContainerPath || v.ContainerPath == "/" {
				t.Fatalf("container path %q not clean and absolute (input %q)", v.ContainerPath, raw)
			}
			if seen[v.ContainerPath] {
				t.Fatalf("container path %q twice (input %q)", v.ContainerPath, raw)
			}
			seen[v.ContainerPath] = true
			for _, p := range []string{v.HostPath, v.ContainerPath} {
				if strings.ContainsAny(p, "\x00~:") {
					t.Fatalf("unsafe character in %q (input %q)", p, raw)
				}
			}
		}
	})
}
