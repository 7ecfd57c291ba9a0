// Command workload is the stand-in desktop/notebook the provisioner tests run: a static
// binary for a FROM scratch image (see internal/testenv.WorkloadImage). It listens
// where real workloads do (VNC 5901, RDP 3389, HTTP 8888), prints its identity and a
// Jupyter-style token line, probes the paths it is asked to write, and exits promptly
// on SIGTERM (as PID 1 it gets no default signal handling, so it must ask for it).
//
// Environment:
//
//	WRITE_TEST=/a/probe,/b/probe  try to write each file; print "write <path>: ok|error"
//	EXIT_CODE=n                   exit with n right after the probes (a crashing workload)
//	ALLOC_MB=n                    allocate and touch n MiB (to be OOM-killed under a limit)
//	NO_TOKEN=1                    do not print the token line (a workload that never gets ready)
//	FORK_TEST=n                   start up to n child processes (a fork bomb held to n); print
//	                              "fork test: started k of n" and the cgroup's pids.max and
//	                              pids.current, then end the children
//	READ_TEST=/a/file,/b/file     print each file's mode, owner and content ("read <path>: ...")
//	BUSY=1                        keep one core busy until terminated (a job the idle
//	                              policies must spare)
//	SWAP_LOOP=/a,/b               exchange /a and /b (renameat2 RENAME_EXCHANGE) in a tight loop
//	                              until terminated: a workload racing another's mount of /a
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// forkChild is the environment variable that makes the program one of FORK_TEST's
// children: it only waits to be killed.
const forkChild = "CALIPSO_TEST_FORK_CHILD"

func main() {
	if os.Getenv(forkChild) != "" {
		select {} // a child of FORK_TEST: hold a process slot until killed
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	groups, _ := os.Getgroups()
	fmt.Printf("uid=%d gid=%d groups=%v\n", os.Getuid(), os.Getgid(), groups)

	for _, path := range strings.Split(os.Getenv("WRITE_TEST"), ",") {
		if path == "" {
			continue
		}
		if err := os.WriteFile(path, []byte("written by the workload\n"), 0o644); err != nil {
			fmt.Printf("write %s: error: %v\n", path, err)
		} else {
			fmt.Printf("write %s: ok\n", path)
		}
	}

	if mb, err := strconv.Atoi(os.Getenv("ALLOC_MB")); err == nil && mb > 0 {
		hog := make([][]byte, 0, mb)
		for range mb {
			b := make([]byte, 1<<20)
			for i := range b {
				b[i] = 1 // touch every page so it is really resident
			}
			hog = append(hog, b)
		}
		fmt.Printf("allocated %d MiB\n", len(hog))
	}

	for _, path := range strings.Split(os.Getenv("READ_TEST"), ",") {
		if path == "" {
			continue
		}
		readTest(path)
	}

	if os.Getenv("BUSY") != "" {
		go func() {
			for x := uint64(1); ctx.Err() == nil; x = x*6364136223846793005 + 1 {
				_ = x
			}
		}()
	}

	if a, b, ok := strings.Cut(os.Getenv("SWAP_LOOP"), ","); ok {
		go swapLoop(ctx, a, b)
	}

	if n, err := strconv.Atoi(os.Getenv("FORK_TEST")); err == nil && n > 0 {
		forkTest(n)
	}

	if code, err := strconv.Atoi(os.Getenv("EXIT_CODE")); err == nil {
		fmt.Printf("exiting with code %d\n", code)
		os.Exit(code)
	}

	// VNC servers speak first with their protocol version: a banner lets a test tell
	// the workload from a port proxy that accepts connections on its own.
	if err := serveTCP(ctx, ":5901", []byte("RFB 003.008\n")); err != nil {
		fail(err)
	}
	if err := serveTCP(ctx, ":3389", nil); err != nil {
		fail(err)
	}
	ln, err := net.Listen("tcp", ":8888")
	if err != nil {
		fail(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, "calipso test workload")
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()

	if os.Getenv("NO_TOKEN") == "" {
		token := make([]byte, 24)
		_, _ = rand.Read(token)
		fmt.Fprintf(os.Stderr, "    To access the server, open this URL in a browser:\n")
		fmt.Fprintf(os.Stderr, "    http://127.0.0.1:8888/?token=%s\n", hex.EncodeToString(token))
	}

	<-ctx.Done()
	fmt.Println("terminating")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
}

// readTest prints what a process of the workload finds at path: the file's mode,
// owner and content, or the error.
func readTest(path string) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		fmt.Printf("read %s: error: %v\n", path, err)
		return
	}
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Printf("read %s: mode=%v uid=%d gid=%d error: %v\n", path, os.FileMode(st.Mode&0o777), st.Uid, st.Gid, err)
		return
	}
	fmt.Printf("read %s: mode=%v uid=%d gid=%d content=%q\n", path, os.FileMode(st.Mode&0o777), st.Uid, st.Gid, data)
}

// forkTest starts up to n children (copies of this program that wait to be killed),
// stopping at the first the kernel refuses, and prints how many it got and what the
// container's pids cgroup says; then it ends them. Each child is a Go program with a
// few threads, and the pids controller counts threads: under a limit of L it gets
// fewer than L children.
func forkTest(n int) {
	self, err := os.Executable()
	if err != nil {
		fmt.Printf("fork test: error: %v\n", err)
		return
	}
	var children []*exec.Cmd
	var refused error
	for range n {
		cmd := exec.Command(self)
		cmd.Env = []string{forkChild + "=1", "GOMAXPROCS=1"}
		if err := cmd.Start(); err != nil {
			refused = err
			break
		}
		children = append(children, cmd)
	}
	time.Sleep(200 * time.Millisecond) // let the children's runtimes start their threads
	max, current := pidsCgroup()
	fmt.Printf("fork test: started %d of %d (refused: %v) pids.max=%s pids.current=%s\n", len(children), n, refused, max, current)
	for _, c := range children {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
}

// pidsCgroup reads the container's pids.max and pids.current (cgroup v2, else v1).
func pidsCgroup() (max, current string) {
	for _, dir := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/pids"} {
		m, err := os.ReadFile(dir + "/pids.max")
		if err != nil {
			continue
		}
		c, _ := os.ReadFile(dir + "/pids.current")
		return strings.TrimSpace(string(m)), strings.TrimSpace(string(c))
	}
	return "unknown", "unknown"
}

// swapLoop exchanges the names a and b atomically, again and again, until ctx ends
// or an exchange fails (printed: "swap loop: ..."). Against a directory and a link
// out of the roots, it is the race a mount check must withstand.
func swapLoop(ctx context.Context, a, b string) {
	fmt.Printf("swap loop: exchanging %s and %s\n", a, b)
	for n := 0; ; n++ {
		if n%1024 == 0 && ctx.Err() != nil {
			return
		}
		if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
			fmt.Printf("swap loop: error after %d exchanges: %v\n", n, err)
			return
		}
	}
}

// serveTCP accepts connections on addr, writes banner to each and closes it.
func serveTCP(ctx context.Context, addr string, banner []byte) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			if banner != nil {
				_, _ = conn.Write(banner)
			}
			conn.Close()
		}
	}()
	return nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "workload:", err)
	os.Exit(1)
}
