package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/calipsoplus/calipso/experiments/icat"
	"github.com/calipsoplus/calipso/experiments/useroffice"
	"github.com/calipsoplus/calipso/internal/apiclient"
	"github.com/calipsoplus/calipso/internal/cliflags"
	"github.com/calipsoplus/calipso/internal/demo"
	"github.com/calipsoplus/calipso/internal/server"
)

// startHook, when set, arms a test hook on the built app before it serves; only the
// crash tests' build sets it (crashhook.go, -tags crashtest).
var startHook func(a *app, getenv func(string) string) error

// serve runs the server until ctx ends, then shuts down gracefully: running requests
// (launches included) get shutdown_timeout to finish.
func serve(ctx context.Context, c *cli, _ []string) error {
	cfg, log := c.cfg, c.log
	a, err := build(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer a.Close()
	if startHook != nil {
		if err := startHook(a, c.getenv); err != nil {
			return err
		}
	}
	h, err := a.handler()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	srv := server.HTTPServer(cfg.Listen, cfg.Server, h, log)

	// Before taking requests: no user should meet a quota held by this host's dead
	// predecessor's launches.
	a.launch.Recover(ctx)
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	a.launch.WhileLeading(func(ctx context.Context) { a.db.PurgeLoop(ctx, time.Hour, log) })
	controllerDone := make(chan struct{})
	go func() { defer close(controllerDone); a.launch.Run(bg, a.elector) }()
	defer func() { stopBG(); <-controllerDone }() // releases the leader lease before the store closes
	if cfg.Docker.Enabled && cfg.Docker.DemoImages {
		wait := demo.Start(bg, demo.Config{DockerHost: cfg.Docker.URL, Logger: log}, a.db)
		defer func() { stopBG(); wait() }() // before the store closes
	}
	if a.saml != nil {
		go a.saml.RefreshLoop(bg)
	}

	fmt.Fprintf(c.stdout, "calipso serving on http://%s%s (settings %s)\n", ln.Addr(), cfg.BasePath, cfg.Source)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: waiting for running requests", "timeout", cfg.Server.ShutdownTimeout.Duration)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout.Duration)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	// v2 launches run after their answer: let them end too.
	if err := a.launch.Drain(sctx); err != nil {
		return fmt.Errorf("shutdown: launches still running: %w", err)
	}
	return nil
}

// serveUserOffice runs the reference user office on its own.
func serveUserOffice(ctx context.Context, c *cli, args []string) error {
	fs := cliflags.New("useroffice")
	listen := fs.String("listen", "127.0.0.1:8081", "listen address")
	dataFile := fs.String("data", "", "data file (default: the demo data)")
	if _, err := cliflags.Split(fs, args); err != nil {
		return err
	}
	data, err := useroffice.Open(*dataFile)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	creds := useroffice.BasicCredentials{Username: c.cfg.UserOffice.Username, Password: c.cfg.UserOffice.Password}
	fmt.Fprintf(c.stdout, "reference user office on http://%s\n", ln.Addr())
	return useroffice.Serve(ctx, ln, data, creds, c.log)
}

// healthcheck asks the local server's /healthz (for container HEALTHCHECKs).
func healthcheck(ctx context.Context, listen string, stdout io.Writer) error {
	if err := apiclient.Healthy(ctx, listen); err != nil {
		return err
	}
	_, err := fmt.Fprintln(stdout, "ok")
	return err
}

// serveICAT is `icat [--listen ADDR]`: the reference ICAT+ server with its demo
// investigations (experiments/icat), for a demo or a site's trial of [icat].
func serveICAT(ctx context.Context, c *cli, args []string) error {
	fs := cliflags.New("icat")
	listen := fs.String("listen", "127.0.0.1:8082", "listen address")
	if _, err := cliflags.Split(fs, args); err != nil {
		return err
	}
	data, err := icat.Demo()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: icat.NewServer(data), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Fprintf(c.stdout, "reference ICAT+ on http://%s (reader %s, plugin %s)\n", ln.Addr(), data.Reader.Username, data.Reader.Plugin)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
