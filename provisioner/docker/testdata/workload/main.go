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
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
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
