// Package demo is what lets the embedded default (`go run ./cmd/calipso`) launch a
// real workload with no registry to pull from: two small workload programs, a
// notebook-like HTTP server and a VNC desktop, that are part of Calipso's own
// executable (the hidden `calipso demo-workload notebook|desktop` command), and the
// FROM scratch images that pack that executable on the local Docker engine, with the
// image records that point at them.
//
// The workloads speak just enough of the real protocols for Calipso and its users:
// the notebook prints a Jupyter-style token line (the image's log_regex finds it),
// checks the token as Jupyter does and answers /api/status; the desktop does the RFB
// 3.8 handshake with VNC authentication and serves a still picture, enough for guacd.
// Both run as any uid on a read-only root filesystem and end promptly on SIGTERM.
package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
)

// Subcommand is the hidden command of the calipso executable that runs a workload:
// `calipso demo-workload notebook|desktop`. The images' entrypoints call it.
const Subcommand = "demo-workload"

// Kind is a demo workload.
type Kind string

const (
	KindNotebook Kind = "notebook"
	KindDesktop  Kind = "desktop"
)

// Kinds are every demo workload, in the order images are built.
var Kinds = []Kind{KindNotebook, KindDesktop}

// Ports the workloads listen on: where Calipso's provisioners expect notebooks and
// VNC desktops (provisioner.PortHTTP, provisioner.PortVNC).
const (
	NotebookAddr = ":8888"
	DesktopAddr  = ":5901"
)

// Run is the hidden command: args are "notebook" or "desktop". It serves until ctx
// ends (the caller cancels it on SIGTERM and SIGINT: as PID 1 in a container the
// process gets no default signal handling).
func Run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) != 1 || (Kind(args[0]) != KindNotebook && Kind(args[0]) != KindDesktop) {
		return fmt.Errorf("usage: calipso %s notebook|desktop", Subcommand)
	}
	kind := Kind(args[0])
	if err := printIdentity(stdout); err != nil {
		return err
	}
	addr := NotebookAddr
	if kind == KindDesktop {
		addr = DesktopAddr
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("demo %s: %w", kind, err)
	}
	if kind == KindDesktop {
		password, err := vncPassword(getenv)
		if err != nil {
			return fmt.Errorf("demo %s: %w", kind, err)
		}
		return Desktop(ctx, ln, password, stdout)
	}
	token := getenv("JUPYTER_TOKEN")
	if token == "" {
		token = randomToken()
	}
	return Notebook(ctx, ln, token, stdout)
}

// vncPassword is the desktop's password: the content of the file VNC_PASSWORD_FILE
// names (as Calipso hands it over: the environment is shown to whoever may inspect
// the workload), else VNC_PASSWORD. A file that cannot be read is an error, not a
// desktop without password.
func vncPassword(getenv func(string) string) (string, error) {
	file := getenv("VNC_PASSWORD_FILE")
	if file == "" {
		return getenv("VNC_PASSWORD"), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("VNC password: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// printIdentity prints who the process runs as, the first line of every demo
// workload's log (the tests check the uid and groups Calipso gave it).
func printIdentity(w io.Writer) error {
	groups, err := os.Getgroups()
	if err != nil {
		return fmt.Errorf("groups: %w", err)
	}
	gs := make([]string, len(groups))
	for i, g := range groups {
		gs[i] = fmt.Sprint(g)
	}
	_, err = fmt.Fprintf(w, "uid=%d gid=%d groups=%s\n", os.Getuid(), os.Getgid(), strings.Join(gs, ","))
	return err
}

// randomToken is a token as Jupyter makes one: 24 random bytes, 48 hex digits.
func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b) // never fails (crypto/rand aborts the program instead)
	return hex.EncodeToString(b)
}
