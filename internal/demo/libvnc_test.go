package demo

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calipsoplus/calipso/internal/testenv"
)

// vncViewer compiles testdata/vncviewer.c against libvncclient, the VNC library of
// Guacamole's guacd (deploy/test.d/libvncclient.sh installs it).
func vncViewer(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"gcc", "pkg-config"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, "libvncclient (guacd's VNC library)", tool+" is not installed")
		}
	}
	flags, err := exec.Command("pkg-config", "--cflags", "--libs", "libvncclient").Output()
	if err != nil {
		testenv.Missing(t, "libvncclient (guacd's VNC library)", "pkg-config finds no libvncclient (Debian: libvncserver-dev)")
	}
	bin := filepath.Join(t.TempDir(), "vncviewer")
	args := append([]string{"-o", bin, filepath.Join("testdata", "vncviewer.c")}, strings.Fields(string(flags))...)
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return bin
}

// The desktop as guacd sees it: libvncclient connects, authenticates, gets the
// picture in the pixel format it asks for, and sends input.
func TestDesktopWithLibVNCClient(t *testing.T) {
	viewer := vncViewer(t)
	r, g, b := DesktopColour(400, 300)
	picture := fmt.Sprintf("pixel(400,300)=%d,%d,%d", r, g, b)
	cases := []struct {
		name, server, client string
		ok                   bool
	}{
		{"VNC authentication", "guac-pw", "guac-pw", true},
		{"wrong password", "guac-pw", "nope", false},
		{"no authentication", "", "ignored", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr, log := startDesktop(t, c.server)
			host, port, _ := net.SplitHostPort(addr)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, viewer, host, port, c.client).CombinedOutput()
			if !c.ok {
				if err == nil || !strings.Contains(string(out), "init failed") {
					t.Fatalf("a wrong password was accepted: %v\n%s", err, out)
				}
				waitFor(t, log, "authentication failed")
				return
			}
			if err != nil {
				t.Fatalf("viewer: %v\n%s\nserver log:\n%s", err, out, log)
			}
			for _, want := range []string{fmt.Sprintf("connected: %s %dx%d", DesktopName, DesktopWidth, DesktopHeight), "update 0,0 800x600", "update 0,0 50x50", picture} {
				if !strings.Contains(string(out), want) {
					t.Errorf("viewer output lacks %q:\n%s", want, out)
				}
			}
			waitFor(t, log, "left") // the viewer hung up; no error on the server's side
			if strings.Contains(log.String(), "unsupported") {
				t.Errorf("server log:\n%s", log)
			}
		})
	}
}
