package testenv

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

var proxyBinary struct {
	once sync.Once
	path string
	err  error
}

// Proxy is a TCP proxy process in front of a peer (tcpproxy), which a test freezes
// with SIGSTOP: the kernel still accepts connections to it, and nothing answers, as
// with a hung engine.
type Proxy struct {
	Addr string // host:port to dial
	cmd  *exec.Cmd
}

// StartProxy runs a proxy to target ("unix:/path" or "host:port") until the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	proxyBinary.once.Do(func() {
		dir, err := os.MkdirTemp("", "calipso-tcpproxy-")
		if err != nil {
			proxyBinary.err = err
			return
		}
		proxyBinary.path = filepath.Join(dir, "tcpproxy")
		out, err := exec.Command("go", "build", "-o", proxyBinary.path, "github.com/calipsoplus/calipso/internal/testenv/tcpproxy").CombinedOutput()
		if err != nil {
			proxyBinary.err = &buildError{err, string(out)}
		}
	})
	if proxyBinary.err != nil {
		t.Fatal(proxyBinary.err)
	}
	p := &Proxy{cmd: exec.Command(proxyBinary.path, target)}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("tcpproxy: %v", err)
	}
	p.Addr = strings.TrimSpace(line)
	return p
}

// Freeze stops the proxy (SIGSTOP); Thaw lets it go on (SIGCONT).
func (p *Proxy) Freeze(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
}

func (p *Proxy) Thaw(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return "build tcpproxy: " + e.err.Error() + ": " + e.out }
