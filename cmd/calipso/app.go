package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/experiments"
	"github.com/calipsoplus/calipso/experiments/icat"
	"github.com/calipsoplus/calipso/experiments/useroffice"
	"github.com/calipsoplus/calipso/federation"
	"github.com/calipsoplus/calipso/federation/oidc"
	"github.com/calipsoplus/calipso/guacamole"
	"github.com/calipsoplus/calipso/internal/launch"
	"github.com/calipsoplus/calipso/internal/lifecycle"
	"github.com/calipsoplus/calipso/internal/mail"
	"github.com/calipsoplus/calipso/internal/server"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/provisioner/docker"
	"github.com/calipsoplus/calipso/provisioner/kubernetes"
	"github.com/calipsoplus/calipso/provisioner/static"
	"github.com/calipsoplus/calipso/settings"
	"k8s.io/klog/v2"
)

// app is everything wired from the settings; cmd is the only place that does this.
type app struct {
	cfg      *settings.Settings
	log      *slog.Logger
	db       *store.Store
	office   *experiments.Client
	engines  map[calipso.ResourceType]provisioner.Provisioner
	missing  map[calipso.ResourceType]string // why an engine kind is absent, for the users' error
	desktops *guacamole.Store
	launch   *launch.Service
	policies *lifecycle.Controller // nil unless lifecycle.enabled
	elector  launch.Elector        // nil: the database's
	saml     *federation.ServiceProvider
	openID   *oidc.Provider // nil unless oidc.enabled
	icat     *icat.Client   // nil unless icat.enabled
	checks   []server.Check
	closers  []func()
}

func (a *app) Close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
}

// openStore opens and migrates the application database.
func openStore(ctx context.Context, cfg *settings.Settings, log *slog.Logger) (*store.Store, error) {
	db, err := store.OpenWith(ctx, cfg.Database.Driver, cfg.Database.DSN, store.Options{Timeout: cfg.Database.Timeout.Duration})
	if err != nil {
		return nil, fmt.Errorf("application database: %w", err)
	}
	if err := db.Migrate(ctx, log); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// build wires the application. Parts that are optional and down (the Docker engine on
// a laptop) are logged clearly and left out; parts that are required fail the start.
func build(ctx context.Context, cfg *settings.Settings, log *slog.Logger) (*app, error) {
	if err := cfg.EnsureSecretKey(); err != nil {
		return nil, err
	}
	a := &app{cfg: cfg, log: log, engines: map[calipso.ResourceType]provisioner.Provisioner{}, missing: map[calipso.ResourceType]string{}}
	ok := false
	defer func() {
		if !ok {
			a.Close()
		}
	}()

	db, err := openStore(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	a.db = db
	a.closers = append(a.closers, func() { db.Close() })
	if err := db.SeedImages(ctx); err != nil {
		return nil, fmt.Errorf("seed images: %w", err)
	}
	if err := db.EnsureAdmins(ctx, "settings", cfg.Auth.Admins); err != nil {
		return nil, fmt.Errorf("auth.admins: %w", err)
	}
	a.checks = append(a.checks, server.Check{Name: "database", Fn: db.Ping})

	if err := a.buildOffice(ctx); err != nil {
		return nil, err
	}
	a.buildEngines(ctx)
	var desktops launch.Desktops // stays nil without Guacamole (a nil *guacamole.Store would not be)
	if g := cfg.Guacamole; g.Enabled {
		store, gdb, err := guacamole.OpenStore(ctx, g.Driver, g.DSN, guacamole.Options{NamePrefix: "calipso-" + cfg.Instance + "-", Logger: log})
		if err != nil {
			return nil, fmt.Errorf("guacamole database: %w", err)
		}
		a.closers = append(a.closers, func() { gdb.Close() })
		a.desktops, desktops = store, store
		a.checks = append(a.checks, server.Check{Name: "guacamole", Fn: store.Ping})
	}
	a.launch = launch.New(db, a.engines, desktops, launch.ConfigFrom(cfg), log)
	for kind, why := range a.missing {
		a.launch.ExplainMissing(kind, why)
	}
	if err := a.buildPolicies(); err != nil {
		return nil, err
	}
	if name := cfg.Kubernetes.LeaderLease; name != "" {
		k, ok := a.engines[calipso.Kubernetes].(*kubernetes.Provisioner)
		if !ok {
			return nil, errors.New("kubernetes.leader_lease: the Kubernetes engine could not be set up (the log above says why)")
		}
		e, err := k.Elector(name, a.launch.ProcessID(), cfg.Workloads.LeaseTTL.Duration)
		if err != nil {
			return nil, fmt.Errorf("kubernetes.leader_lease: %w", err)
		}
		a.elector = e
	}
	if o := cfg.OIDC; o.Enabled {
		// Not a readiness check: local and Umbrella logins work while the provider is away.
		p, err := oidc.New(oidc.Config{
			IssuerURL: o.IssuerURL, ClientID: o.ClientID, ClientSecret: o.ClientSecret,
			RedirectURL: strings.TrimSuffix(cfg.BackendURL, "/") + "/oidc/callback/", Scopes: o.Scopes,
			UsernameClaim: o.UsernameClaim, GroupsClaim: o.GroupsClaim, Audience: o.Audience, Timeout: o.Timeout.Duration,
			Logger: log.With("component", "oidc"),
		})
		if err != nil {
			return nil, fmt.Errorf("oidc: %w", err)
		}
		a.openID = p
	}
	if cfg.Umbrella.Enabled && cfg.Umbrella.Mode == "saml" {
		sp, err := newServiceProvider(ctx, cfg, log)
		if err != nil {
			return nil, err
		}
		a.saml = sp
	}
	ok = true
	return a, nil
}

func (a *app) buildOffice(ctx context.Context) error {
	cfg := a.cfg
	uo := cfg.UserOffice
	clientCfg := experiments.ClientConfig{
		LoginURL: uo.LoginURL, UmbrellaHashURL: uo.UmbrellaHashURL, IsAuthorizedURL: uo.IsAuthorizedURL,
		ExperimentsURL: uo.ExperimentsURL, Username: uo.Username, Password: uo.Password,
	}
	if uo.Embedded {
		data, err := useroffice.Open(uo.EmbeddedData)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("embedded user office: %w", err)
		}
		creds := useroffice.BasicCredentials{Username: uo.Username, Password: uo.Password}
		octx, stop := context.WithCancel(context.WithoutCancel(ctx))
		go useroffice.Serve(octx, ln, data, creds, a.log.With("component", "useroffice"))
		a.closers = append(a.closers, stop)
		clientCfg = useroffice.ClientConfig("http://"+ln.Addr().String(), creds)
		a.log.Info("embedded reference user office started with demo users", "url", "http://"+ln.Addr().String())
		for _, err := range data.MakeDatasetDirs(experiments.Roots{Datasets: cfg.Workloads.DatasetsRoot, Output: cfg.Workloads.OutputRoot}) {
			a.log.Warn("embedded user office: dataset directory", "err", err)
		}
	}
	clientCfg.Timeout = uo.Timeout.Duration
	clientCfg.Retries = 2
	clientCfg.Logger = a.log
	client, err := experiments.NewClient(clientCfg)
	if err != nil {
		return fmt.Errorf("user office: %w", err)
	}
	a.office = client
	a.checks = append(a.checks, server.Check{Name: "user_office", Fn: client.Ping})
	return a.buildCatalogue(ctx)
}

// buildCatalogue makes the ICAT client (icat.enabled), and the embedded reference
// ICAT+ server it talks to with icat.embedded.
func (a *app) buildCatalogue(ctx context.Context) error {
	c := a.cfg.ICAT
	if !c.Enabled {
		return nil
	}
	cfg := icat.Config{URL: c.URL, Plugin: c.Plugin, Username: c.Username, Password: c.Password, OpenID: c.OpenIDConnect,
		IncludeReleased: c.IncludeReleased, Timeout: c.Timeout.Duration, Retries: c.Retries, Logger: a.log.With("component", "icat")}
	if c.Embedded {
		data, err := icat.Demo()
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("embedded ICAT+: %w", err)
		}
		srv := &http.Server{Handler: icat.NewServer(data), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		a.closers = append(a.closers, func() { srv.Close() })
		cfg.URL, cfg.Plugin, cfg.Username, cfg.Password = "http://"+ln.Addr().String(), data.Reader.Plugin, data.Reader.Username, data.Reader.Password
		a.log.Info("embedded reference ICAT+ started with demo investigations", "url", cfg.URL)
	}
	client, err := icat.New(cfg)
	if err != nil {
		return err
	}
	a.icat = client
	return nil
}

// buildEngines sets up the configured engines. An engine that doesn't answer is kept
// (it may come up later) and reported clearly: the server runs, launches need it.
func (a *app) buildEngines(ctx context.Context) {
	cfg := a.cfg
	a.engines[calipso.StaticLink] = static.New()
	if !cfg.Docker.Enabled {
		a.missing[calipso.Docker] = "docker is disabled in the settings (docker.enabled)"
	} else {
		d, err := docker.New(ctx, docker.Config{
			Host: cfg.Docker.URL, Instance: cfg.Instance, HostAddress: cfg.Docker.HostAddress,
			PublishAddress: cfg.Docker.PublishAddress, Network: cfg.Docker.Network,
			ReadyTimeout: cfg.Workloads.ReadyTimeout.Duration, Logger: a.log,
		})
		if err != nil {
			a.log.Error("Docker engine not usable: launches of docker resources will fail", "err", err)
			a.missing[calipso.Docker] = "the Docker engine could not be set up (the server log says why)"
		} else {
			a.engines[calipso.Docker] = d
			a.closers = append(a.closers, func() { d.Close() })
			a.checks = append(a.checks, server.Check{Name: "docker", Fn: d.Ping})
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := d.Ping(pctx); err != nil {
				a.log.Warn("no Docker engine answers: the server runs, but launching docker resources needs an engine (start Docker, or set docker.url)", "err", err)
			} else {
				a.log.Info("Docker engine answers", "url", cfg.Docker.URL)
			}
			cancel()
		}
	}
	if !cfg.Kubernetes.Enabled {
		a.missing[calipso.Kubernetes] = "kubernetes is disabled in the settings (kubernetes.enabled)"
	} else {
		klog.SetSlogLogger(a.log.With("component", "client-go")) // client-go logs through klog
		k, err := kubernetes.New(ctx, kubernetes.Config{
			Kubeconfig: cfg.Kubernetes.Kubeconfig, Namespace: cfg.Kubernetes.Namespace, Instance: cfg.Instance,
			HostAddress: cfg.Kubernetes.HostAddress, ServiceType: cfg.Kubernetes.ServiceType,
			ReadyTimeout: cfg.Workloads.ReadyTimeout.Duration,
		})
		if err != nil {
			a.log.Error("Kubernetes not usable: launches of kubernetes resources will fail", "err", err)
			a.missing[calipso.Kubernetes] = "the Kubernetes engine could not be set up (the server log says why)"
		} else {
			a.engines[calipso.Kubernetes] = k
			a.checks = append(a.checks, server.Check{Name: "kubernetes", Fn: k.Ping})
		}
	}
}

func newServiceProvider(ctx context.Context, cfg *settings.Settings, log *slog.Logger) (*federation.ServiceProvider, error) {
	u := cfg.Umbrella
	base, err := url.Parse(cfg.BackendURL)
	if err != nil {
		return nil, fmt.Errorf("backend_url: %w", err)
	}
	fc := federation.Config{
		EntityID: u.EntityID, BaseURL: base, IdPMetadataURL: u.IdPMetadataURL, ClockSkew: u.ClockSkew.Duration,
		AllowIdPInitiated: u.AllowIdPInitiated,
		Attributes:        federation.DefaultAttributeNames().Only(u.HashAttribute, u.UIDAttribute, u.EmailAttribute, u.NameAttribute),
		Logger:            log.With("component", "federation"),
	}
	if cfg.Access.SAMLAttribute != "" {
		fc.Attributes.Values = []string{cfg.Access.SAMLAttribute}
	}
	if err := fc.ReadFiles(u.SPKeyFile, u.SPCertFile, u.IdPMetadata); err != nil {
		return nil, fmt.Errorf("umbrella: %w", err)
	}
	sp, err := federation.New(ctx, fc)
	if err != nil {
		return nil, fmt.Errorf("umbrella: %w", err)
	}
	return sp, nil
}

// buildPolicies makes the lifecycle controller (lifecycle.enabled), its mailer
// (mail.enabled) and its activity signals, and has the leader run it.
func (a *app) buildPolicies() error {
	cfg := a.cfg
	if !cfg.Lifecycle.Enabled {
		return nil
	}
	var notifier lifecycle.Notifier
	if cfg.Mail.Enabled {
		m, err := mail.New(mail.ConfigFrom(cfg))
		if err != nil {
			return err
		}
		notifier = m
	} else {
		a.log.Warn("lifecycle policies without mail: users are warned in the v2 API only (mail.enabled)")
	}
	lc := cfg.Lifecycle
	signals := []lifecycle.Signal{lifecycle.NotebookSignal{Client: &http.Client{Timeout: lc.CallTimeout.Duration}}}
	if a.desktops != nil {
		signals = append(signals, lifecycle.GuacamoleSignal{History: a.desktops})
	}
	cpu := &lifecycle.CPUSignal{Engines: map[calipso.ResourceType]lifecycle.CPUTimes{}, Threshold: lc.IdleCPU}
	for kind, e := range a.engines {
		if t, ok := e.(lifecycle.CPUTimes); ok {
			cpu.Engines[kind] = t
		}
	}
	signals = append(signals, cpu)
	a.policies = lifecycle.New(lifecycle.Config{Reclaim: lc.Reclaim, Interval: lc.CheckInterval.Duration, CallTimeout: lc.CallTimeout.Duration,
		Admins: cfg.Mail.Admins, Log: a.log.With("component", "lifecycle")}, a.db, a.launch, notifier, signals...)
	a.launch.WhileLeading(a.policies.Run)
	return nil
}

// handler builds the HTTP handler of the app.
func (a *app) handler() (http.Handler, error) {
	reg := prometheus.NewRegistry()
	collectors := append(a.launch.Collectors(), lifecycle.UsageCollector{DB: a.db, Timeout: a.cfg.Database.Timeout.Duration})
	if a.policies != nil {
		collectors = append(collectors, a.policies.Collectors()...)
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	deps := server.Deps{
		Config: server.ConfigFrom(a.cfg), Store: a.db, Office: a.office, Resources: a.launch,
		Checks: a.checks, Log: a.log, Metrics: reg,
	}
	if a.saml != nil {
		deps.SAML = a.saml
	}
	if a.openID != nil {
		deps.OpenID = a.openID
	}
	if a.icat != nil {
		deps.Experiments, deps.Catalogue = a.icat, a.icat
	}
	if a.cfg.Umbrella.Enabled && a.cfg.Umbrella.Mode == "header" {
		deps.Header = &federation.HeaderMode{
			TrustedProxies: a.cfg.TrustedPrefixes, HashHeader: a.cfg.Umbrella.HashHeader,
			UIDHeader: a.cfg.Umbrella.UIDHeader, EmailHeader: a.cfg.Umbrella.EmailHeader,
			ValuesHeader: a.cfg.Access.SAMLAttribute, Logger: a.log.With("component", "federation"),
		}
	}
	return server.New(deps)
}
