// Package settings loads Calipso's configuration: one TOML file per environment, as
// CalipsoPlus had settings_local, settings_test and settings_prod. The local and test
// files are embedded (local is the default, so a fresh checkout runs with no file at
// all); prod.example.toml documents a production file. Secrets come from environment
// variables or files, never from the settings file of a production site.
package settings

import (
	"bytes"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/quotas"
)

//go:embed *.toml
var files embed.FS

// EnvSettings names the variable that chooses the settings file when --settings is not
// given: a profile name (local, test, prod) or a path to a TOML file.
const EnvSettings = "CALIPSO_SETTINGS"

// Settings is the whole configuration. Field comments name the TOML keys' meaning;
// settings/local.toml shows every key.
type Settings struct {
	// Environment is the profile: "local", "test" or "prod". prod is strict.
	Environment string `toml:"environment"`
	// Instance labels every engine object and Guacamole record this installation makes,
	// so two installations sharing an engine never touch each other's workloads.
	Instance string `toml:"instance"`
	// Listen is the HTTP listen address.
	Listen string `toml:"listen"`
	// BasePath is the path the API is mounted at, e.g. "/calipsoplus-services/".
	BasePath string `toml:"base_path"`
	// DataDir holds the local state of the embedded default (SQLite files, secret key).
	DataDir string `toml:"data_dir"`
	// FrontendURL is where the web frontend lives (Umbrella relays back to it).
	FrontendURL string `toml:"frontend_url"`
	// BackendURL is this API's public URL, base path included (links, SAML metadata).
	BackendURL string `toml:"backend_url"`
	// AllowedHosts are the Host header values served ("*" allows any, not in prod).
	AllowedHosts []string `toml:"allowed_hosts"`
	// CORSOrigins may call the API with credentials from a browser.
	CORSOrigins []string `toml:"cors_origins"`
	// TrustedProxies (addresses or CIDR prefixes) may set X-Forwarded-* and the
	// Umbrella headers of mod_shib.
	TrustedProxies []string `toml:"trusted_proxies"`
	// SecretKeyFile holds the session-signing key; CALIPSO_SECRET_KEY overrides it.
	// The local profile creates the file on first start.
	SecretKeyFile string `toml:"secret_key_file"`
	// LogLevel: debug, info, warn, error. LogFormat: text or json.
	LogLevel  string `toml:"log_level"`
	LogFormat string `toml:"log_format"`

	Server     Server     `toml:"server"`
	Auth       Auth       `toml:"auth"`
	Database   Database   `toml:"database"`
	Guacamole  Guacamole  `toml:"guacamole"`
	UserOffice UserOffice `toml:"user_office"`
	Quotas     Quotas     `toml:"quotas"`
	Pagination Pagination `toml:"pagination"`
	Workloads  Workloads  `toml:"workloads"`
	Docker     Docker     `toml:"docker"`
	Kubernetes Kubernetes `toml:"kubernetes"`
	Umbrella   Umbrella   `toml:"umbrella"`
	OIDC       OIDC       `toml:"oidc"`
	Access     Access     `toml:"access"`
	Lifecycle  Lifecycle  `toml:"lifecycle"`
	Mail       Mail       `toml:"mail"`
	ICAT       ICAT       `toml:"icat"`

	// Filled by Load, not read from the file.
	SecretKey       []byte         `toml:"-"`
	TrustedPrefixes []netip.Prefix `toml:"-"`
	Source          string         `toml:"-"` // where the settings came from
}

// Server holds HTTP server limits.
type Server struct {
	ReadTimeout     Duration `toml:"read_timeout"`
	WriteTimeout    Duration `toml:"write_timeout"`
	IdleTimeout     Duration `toml:"idle_timeout"`
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
	MaxBodyBytes    int64    `toml:"max_body_bytes"`
	Metrics         bool     `toml:"metrics"` // serve /metrics
	// MetricsToken, when set, is the bearer token /metrics asks for (Authorization:
	// Bearer <token>, Prometheus' authorization.credentials); CALIPSO_METRICS_TOKEN or
	// MetricsTokenFile may hold it instead. Empty: /metrics is open (not in prod).
	MetricsToken     string `toml:"metrics_token"`
	MetricsTokenFile string `toml:"metrics_token_file"`
	// CacheTTL is how long a server keeps a login session and the image list in
	// memory. Changes made through the API show at once; changes another process makes
	// (the CLI, a second server) show within CacheTTL. 0 reads the database every time.
	CacheTTL Duration `toml:"cache_ttl"`
}

// Auth holds login and session settings.
type Auth struct {
	// LocalLogin shows the local login form (settings/ answers local_auth).
	LocalLogin bool `toml:"local_login"`
	// DefaultAuthorised makes login/type/ answer true for everyone without asking the
	// user office (CalipsoPlus' ALLOW_ALL_LOGIN_TYPE).
	DefaultAuthorised bool `toml:"default_authorised"`
	// SessionMaxAge is how long a login lasts.
	SessionMaxAge Duration `toml:"session_max_age"`
	// SecureCookies marks cookies Secure (required in prod; the site is served over https).
	SecureCookies bool `toml:"secure_cookies"`
	// Admins are usernames made admins at start (CalipsoPlus' setup of admins).
	Admins []string `toml:"admins"`
}

// Database is the application database. DSN may also come from CALIPSO_DATABASE_DSN
// or DSNFile (it holds the password).
type Database struct {
	Driver  string `toml:"driver"` // sqlite or mysql
	DSN     string `toml:"dsn"`
	DSNFile string `toml:"dsn_file"`
	// Timeout bounds every read and write on the connection (MySQL's readTimeout and
	// writeTimeout, unless the DSN sets them), so that a frozen server fails queries
	// instead of hanging them.
	Timeout Duration `toml:"timeout"`
}

// Guacamole is Guacamole's own database, which Calipso writes connection records to.
type Guacamole struct {
	Enabled bool   `toml:"enabled"`
	Driver  string `toml:"driver"` // mysql or postgres
	DSN     string `toml:"dsn"`    // or CALIPSO_GUACAMOLE_DSN / DSNFile
	DSNFile string `toml:"dsn_file"`
	// Hostname is what guacd connects to for a desktop (the Docker host as guacd sees
	// it); empty means the engine's host address.
	Hostname string `toml:"hostname"`
	// RDPParams and VNCParams are extra connection parameters (e.g. security, ignore-cert).
	RDPParams map[string]string `toml:"rdp_params"`
	VNCParams map[string]string `toml:"vnc_params"`
}

// UserOffice is the facility's user-office REST interface (API.md).
type UserOffice struct {
	// Embedded starts the reference user office in-process with its demo data and
	// points the URLs below at it: the local profile's demo default. Not in prod.
	Embedded bool `toml:"embedded"`
	// EmbeddedData is a data file for the embedded office (empty: the demo data).
	EmbeddedData    string `toml:"embedded_data"`
	LoginURL        string `toml:"login_url"`
	UmbrellaHashURL string `toml:"umbrella_hash_url"`
	IsAuthorizedURL string `toml:"is_authorized_url"`
	// ExperimentsURL contains $USERNAME, replaced by the account name.
	ExperimentsURL string `toml:"experiments_url"`
	// Username and Password are the Basic-auth credentials; the password may also come
	// from CALIPSO_USER_OFFICE_PASSWORD or PasswordFile.
	Username     string   `toml:"username"`
	Password     string   `toml:"password"`
	PasswordFile string   `toml:"password_file"`
	Timeout      Duration `toml:"timeout"`
	// DynamicExperiments fetches experiments from the user office (and stores them
	// locally); off, experiments come only from the local database (CLI, CSV).
	DynamicExperiments bool `toml:"dynamic_experiments"`
	// RefreshInterval: a user's experiments are fetched again at most this often.
	RefreshInterval Duration `toml:"refresh_interval"`
}

// Quotas are the defaults for users without a quota of their own.
type Quotas struct {
	MaxSimultaneous int    `toml:"max_simultaneous"`
	CPU             string `toml:"cpu"`
	Memory          string `toml:"memory"`
	HDD             string `toml:"hdd"`

	Default calipso.Quota `toml:"-"`
}

// Pagination sets page sizes.
type Pagination struct {
	Experiments int `toml:"experiments"`
	Users       int `toml:"users"`
}

// Workloads shape every launched workload.
type Workloads struct {
	DatasetsRoot string `toml:"datasets_root"`
	OutputRoot   string `toml:"output_root"`
	// UID and GID are used when neither the experiment nor the user has one.
	UID       int  `toml:"uid"`
	GID       int  `toml:"gid"`
	AllowRoot bool `toml:"allow_root"`
	// MountHome mounts HomeRoot/<username> (or the user's own home) at /home/<username>.
	MountHome bool   `toml:"mount_home"`
	HomeRoot  string `toml:"home_root"`
	// ExtraMounts are "src:dst:ro|rw" binds added to every workload.
	ExtraMounts []string `toml:"extra_mounts"`
	// Mounts are ExtraMounts parsed, when the settings are loaded.
	Mounts []provisioner.Mount `toml:"-"`
	// ExtraGroups are added to every workload's groups (group 100 always is).
	ExtraGroups []int `toml:"extra_groups"`
	// PidsLimit bounds the processes and threads of every workload, so that a fork
	// bomb in a desktop fails inside it instead of taking the host; an image's own
	// pids_limit overrides it. Engines that cannot enforce it (Kubernetes: a node-wide
	// kubelet setting, podPidsLimit) ignore it.
	PidsLimit int64 `toml:"pids_limit"`
	// AllowUnenforced names the shares ("cpu", "memory", "disk") an image may ask of
	// an engine that cannot enforce them (Docker: the disk share); launches asking
	// for any other unenforced share are refused.
	AllowUnenforced []string `toml:"allow_unenforced"`
	// LaunchTimeout bounds a launch from its reservation to its answer, the engine's
	// Start included.
	LaunchTimeout Duration `toml:"launch_timeout"`
	// ReadyTimeout bounds the wait for a log line (Jupyter's token).
	ReadyTimeout Duration `toml:"ready_timeout"`
	// CallTimeout bounds every other call to an engine (stop, remove, inspect, list)
	// and every Guacamole write, rollbacks included; one that times out is retried
	// by the reconciler, not dropped.
	CallTimeout Duration `toml:"call_timeout"`
	// ReconcileInterval: how often the leader compares the records with the engines
	// when nothing tells it sooner (engine events, a failed pass, which is retried
	// within seconds).
	ReconcileInterval Duration `toml:"reconcile_interval"`
	// ReconcileTimeout bounds one reconcile pass.
	ReconcileTimeout Duration `toml:"reconcile_timeout"`
	// LeaseTTL is how long a process's hold on the records it works on (a launch, a
	// stop), and the leader's on the background work, last without a heartbeat: a
	// process that dies or loses the database is taken over this long after.
	LeaseTTL Duration `toml:"lease_ttl"`
}

// Docker is the Docker engine (or Podman's Docker-compatible API).
type Docker struct {
	Enabled bool `toml:"enabled"`
	// URL of the daemon: unix:///var/run/docker.sock or tcp://host:2375; empty uses
	// DOCKER_HOST or the default socket.
	URL string `toml:"url"`
	// HostAddress is how browsers and guacd reach published ports.
	HostAddress string `toml:"host_address"`
	// PublishAddress is the host IP published ports bind to.
	PublishAddress string `toml:"publish_address"`
	Network        string `toml:"network"`
	// DemoImages makes `serve` build the demo notebook and desktop images from
	// calipso's own executable when the engine lacks them, and add the demo_notebook
	// and demo_desktop image records: a launch to try with no registry. Not in prod.
	DemoImages bool `toml:"demo_images"`
}

// Kubernetes is the Kubernetes engine.
type Kubernetes struct {
	Enabled     bool   `toml:"enabled"`
	Kubeconfig  string `toml:"kubeconfig"` // empty: in-cluster
	Namespace   string `toml:"namespace"`
	HostAddress string `toml:"host_address"`
	ServiceType string `toml:"service_type"` // NodePort or ClusterIP
	// LeaderLease names a coordination.k8s.io Lease in Namespace through which the
	// replicas elect the one that runs the background work; empty: they elect through
	// the application database. Every replica must say the same.
	LeaderLease string `toml:"leader_lease"`
}

// Umbrella is the federated login (Shibboleth SAML).
type Umbrella struct {
	Enabled bool `toml:"enabled"`
	// Mode: "saml" (Calipso is the service provider) or "header" (Apache mod_shib
	// puts the identity in request headers, trusted only from TrustedProxies).
	Mode           string   `toml:"mode"`
	LoginURL       string   `toml:"login_url"`  // header mode: the Shibboleth SP's login handler
	LogoutURL      string   `toml:"logout_url"` // where umbrella/logout/ sends the IdP logout
	IdPMetadataURL string   `toml:"idp_metadata_url"`
	IdPMetadata    string   `toml:"idp_metadata_file"`
	SPKeyFile      string   `toml:"sp_key_file"`
	SPCertFile     string   `toml:"sp_cert_file"`
	EntityID       string   `toml:"entity_id"`
	ClockSkew      Duration `toml:"clock_skew"`
	// AllowIdPInitiated accepts logins the IdP starts (unsolicited responses, from
	// an IdP's portal); they land on umbrella/frontend/, never on a URL the IdP names.
	AllowIdPInitiated bool `toml:"allow_idp_initiated"`
	// Attribute names override the federation package's defaults (empty: keep them).
	HashAttribute  string `toml:"hash_attribute"`
	UIDAttribute   string `toml:"uid_attribute"`
	EmailAttribute string `toml:"email_attribute"`
	NameAttribute  string `toml:"name_attribute"`
	HashHeader     string `toml:"hash_header"`
	UIDHeader      string `toml:"uid_header"`
	EmailHeader    string `toml:"email_header"`
}

// OIDC is the OpenID Connect login (Keycloak and the like): oidc/authenticate/,
// oidc/callback/ and oidc/logout/ under the base path, and bearer JWTs on the v2 API.
type OIDC struct {
	Enabled   bool   `toml:"enabled"`
	IssuerURL string `toml:"issuer_url"`
	ClientID  string `toml:"client_id"`
	// ClientSecret may come from CALIPSO_OIDC_CLIENT_SECRET or ClientSecretFile.
	ClientSecret     string   `toml:"client_secret"`
	ClientSecretFile string   `toml:"client_secret_file"`
	Scopes           []string `toml:"scopes"`
	// UsernameClaim names the account (preferred_username); GroupsClaim the groups
	// or roles (groups; Keycloak's realm roles: realm_access.roles).
	UsernameClaim string `toml:"username_claim"`
	GroupsClaim   string `toml:"groups_claim"`
	// Audience is what a bearer token's aud must hold (empty: client_id).
	Audience string `toml:"audience"`
	// LoginRedirect is where the browser goes after a login (empty: frontend_url).
	LoginRedirect string   `toml:"login_redirect"`
	Timeout       Duration `toml:"timeout"`
}

// Duration is a time.Duration written as "5s", "2m" in TOML.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("want a duration such as 5s, 2m or 1h: %w", err)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration back.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// DefaultPidsLimit is workloads.pids_limit when not set: room for a desktop session
// (a few hundred processes and threads), not for a fork bomb.
const DefaultPidsLimit = 1024

// MaxPidsLimit is the largest workloads.pids_limit: Linux's largest pid_max.
const MaxPidsLimit = 1 << 22

// Profiles lists the embedded settings files by profile name.
func Profiles() []string { return []string{"local", "test", "prod"} }

// Embedded returns the text of an embedded profile ("prod" is the documented example).
func Embedded(profile string) ([]byte, error) {
	name := profile + ".toml"
	if profile == "prod" {
		name = "prod.example.toml"
	}
	b, err := fs.ReadFile(files, name)
	if err != nil {
		return nil, fmt.Errorf("no embedded settings profile %q (have %s)", profile, strings.Join(Profiles(), ", "))
	}
	return b, nil
}

// Load reads the settings named by choice (a profile name or a file path; empty means
// $CALIPSO_SETTINGS, else "local"), applies secrets from getenv and files, and validates
// everything, reporting every problem at once.
func Load(choice string, getenv func(string) string) (*Settings, error) {
	if choice == "" {
		choice = getenv(EnvSettings)
	}
	if choice == "" {
		choice = "local"
	}
	var (
		text []byte
		err  error
	)
	if slices.Contains(Profiles(), choice) {
		text, err = Embedded(choice)
	} else {
		text, err = os.ReadFile(choice)
	}
	if err != nil {
		return nil, fmt.Errorf("settings: %w", err)
	}
	s, err := Parse(text, choice, getenv)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// retired are keys that earlier versions read, with what replaced them.
var retired = map[string]string{
	"workloads.stuck_after": "an interrupted launch is found by its lease (workloads.lease_ttl), not by its age",
}

// Parse decodes and validates a settings text. source names it in errors.
func Parse(text []byte, source string, getenv func(string) string) (*Settings, error) {
	s := Defaults()
	md, err := toml.NewDecoder(bytes.NewReader(text)).Decode(s)
	if err != nil {
		return nil, fmt.Errorf("settings %s: %w", source, err)
	}
	s.Source = source
	var problems []error
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		for _, k := range keys {
			if why, ok := retired[k]; ok {
				problems = append(problems, fmt.Errorf("%s: no longer used: %s; remove it", k, why))
				continue
			}
			problems = append(problems, fmt.Errorf("%s: unknown setting", k))
		}
	}
	problems = append(problems, s.resolveSecrets(getenv)...)
	problems = append(problems, s.validate()...)
	if len(problems) > 0 {
		return nil, &Error{Source: source, Problems: problems}
	}
	return s, nil
}

// Error lists every problem found in a settings file.
type Error struct {
	Source   string
	Problems []error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "settings %s: %d problem(s):", e.Source, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p.Error())
	}
	return b.String()
}

// Unwrap lets errors.Is see the individual problems.
func (e *Error) Unwrap() []error { return e.Problems }

// Defaults are the values of keys a file leaves out. They are the original's defaults
// where it had one (quotas, page sizes).
func Defaults() *Settings {
	return &Settings{
		Environment: "local",
		Instance:    "local",
		Listen:      "127.0.0.1:8000",
		BasePath:    "/calipsoplus-services/",
		DataDir:     ".calipso",
		LogLevel:    "info",
		LogFormat:   "text",
		Server: Server{
			ReadTimeout:     Duration{30 * time.Second},
			WriteTimeout:    Duration{5 * time.Minute}, // a launch waits for the engine
			IdleTimeout:     Duration{2 * time.Minute},
			ShutdownTimeout: Duration{2 * time.Minute},
			MaxBodyBytes:    1 << 20,
			Metrics:         true,
			CacheTTL:        Duration{500 * time.Millisecond}, // replicas honour one another's logouts within it
		},
		Auth:     Auth{LocalLogin: true, SessionMaxAge: Duration{12 * time.Hour}},
		Database: Database{Driver: "sqlite", Timeout: Duration{10 * time.Second}},
		Guacamole: Guacamole{
			Driver:    "mysql",
			RDPParams: map[string]string{"security": "any", "ignore-cert": "true"},
		},
		UserOffice: UserOffice{
			Timeout:         Duration{10 * time.Second},
			RefreshInterval: Duration{time.Minute},
		},
		Quotas:     Quotas{MaxSimultaneous: 5, CPU: "10", Memory: "30G", HDD: "80G"},
		Pagination: Pagination{Experiments: 7, Users: 20},
		Workloads: Workloads{
			UID: 1000, GID: 1000,
			PidsLimit:         DefaultPidsLimit,
			HomeRoot:          "/home",
			LaunchTimeout:     Duration{2 * time.Minute},
			ReadyTimeout:      Duration{60 * time.Second},
			CallTimeout:       Duration{30 * time.Second},
			ReconcileInterval: Duration{time.Minute},
			ReconcileTimeout:  Duration{2 * time.Minute},
			LeaseTTL:          Duration{5 * time.Second},
		},
		Docker:     Docker{Enabled: true, HostAddress: "localhost", PublishAddress: "0.0.0.0"},
		Kubernetes: Kubernetes{Namespace: "calipso", ServiceType: "NodePort"},
		OIDC: OIDC{
			Scopes:        []string{"openid", "profile", "email"},
			UsernameClaim: "preferred_username",
			GroupsClaim:   "groups",
			Timeout:       Duration{10 * time.Second},
		},
		Access:    defaultAccess(),
		Lifecycle: defaultLifecycle(),
		Mail:      defaultMail(),
		ICAT:      defaultICAT(),
		Umbrella: Umbrella{
			Mode:        "saml",
			ClockSkew:   Duration{2 * time.Minute},
			HashHeader:  "EAAHash",
			UIDHeader:   "uid",
			EmailHeader: "mail",
		},
	}
}

// secret returns the value of env, else the content of file, else literal.
func secret(getenv func(string) string, env, file, literal string) (string, error) {
	if v := getenv(env); v != "" {
		return v, nil
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	}
	return literal, nil
}

func (s *Settings) resolveSecrets(getenv func(string) string) []error {
	var problems []error
	var err error
	if s.Database.DSN, err = secret(getenv, "CALIPSO_DATABASE_DSN", s.Database.DSNFile, s.Database.DSN); err != nil {
		problems = append(problems, fmt.Errorf("database.dsn_file: %w", err))
	}
	if s.Guacamole.DSN, err = secret(getenv, "CALIPSO_GUACAMOLE_DSN", s.Guacamole.DSNFile, s.Guacamole.DSN); err != nil {
		problems = append(problems, fmt.Errorf("guacamole.dsn_file: %w", err))
	}
	if s.UserOffice.Password, err = secret(getenv, "CALIPSO_USER_OFFICE_PASSWORD", s.UserOffice.PasswordFile, s.UserOffice.Password); err != nil {
		problems = append(problems, fmt.Errorf("user_office.password_file: %w", err))
	}
	if s.Server.MetricsToken, err = secret(getenv, "CALIPSO_METRICS_TOKEN", s.Server.MetricsTokenFile, s.Server.MetricsToken); err != nil {
		problems = append(problems, fmt.Errorf("server.metrics_token_file: %w", err))
	}
	if s.ICAT.Password, err = secret(getenv, "CALIPSO_ICAT_PASSWORD", s.ICAT.PasswordFile, s.ICAT.Password); err != nil {
		problems = append(problems, fmt.Errorf("icat.password_file: %w", err))
	}
	if s.Mail.Password, err = secret(getenv, "CALIPSO_MAIL_PASSWORD", s.Mail.PasswordFile, s.Mail.Password); err != nil {
		problems = append(problems, fmt.Errorf("mail.password_file: %w", err))
	}
	if s.OIDC.ClientSecret, err = secret(getenv, "CALIPSO_OIDC_CLIENT_SECRET", s.OIDC.ClientSecretFile, s.OIDC.ClientSecret); err != nil {
		problems = append(problems, fmt.Errorf("oidc.client_secret_file: %w", err))
	}
	if key := getenv("CALIPSO_SECRET_KEY"); key != "" {
		s.SecretKey = []byte(key)
	} else if s.SecretKeyFile != "" {
		b, err := os.ReadFile(s.SecretKeyFile)
		switch {
		case err == nil:
			s.SecretKey = bytes.TrimSpace(b)
		case errors.Is(err, fs.ErrNotExist) && s.Environment != "prod":
			// Created on first start (EnsureSecretKey), not at parse time: `settings
			// check` must not write files.
		default:
			problems = append(problems, fmt.Errorf("secret_key_file: %w", err))
		}
	}
	return problems
}

// EnsureSecretKey creates the secret key file when it is missing (local and test
// profiles: a fresh checkout starts with no setup) and loads it.
func (s *Settings) EnsureSecretKey() error {
	if len(s.SecretKey) > 0 {
		return nil
	}
	if s.SecretKeyFile == "" || s.Environment == "prod" {
		return errors.New("no secret key: set CALIPSO_SECRET_KEY or secret_key_file")
	}
	if err := os.MkdirAll(filepath.Dir(s.SecretKeyFile), 0o700); err != nil {
		return fmt.Errorf("secret key: %w", err)
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	key := hex.EncodeToString(b)
	f, err := os.OpenFile(s.SecretKeyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) { // another process was first: use its key
		got, rerr := os.ReadFile(s.SecretKeyFile)
		if rerr != nil {
			return fmt.Errorf("secret key: %w", rerr)
		}
		s.SecretKey = bytes.TrimSpace(got)
		return nil
	}
	if err != nil {
		return fmt.Errorf("secret key: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(key + "\n"); err != nil {
		return fmt.Errorf("secret key: %w", err)
	}
	s.SecretKey = []byte(key)
	return nil
}

var instanceRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)

func (s *Settings) validate() []error {
	var p []error
	bad := func(key, format string, args ...any) {
		p = append(p, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	checkURL := func(key, v string, required bool) {
		if v == "" {
			if required {
				bad(key, "is required")
			}
			return
		}
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(key, "%q is not an http(s) URL", v)
		}
	}
	oneOf := func(key, v string, allowed ...string) {
		if !slices.Contains(allowed, v) {
			bad(key, "%q is not one of %s", v, strings.Join(allowed, ", "))
		}
	}

	oneOf("environment", s.Environment, "local", "test", "prod")
	if !instanceRe.MatchString(s.Instance) {
		bad("instance", "%q must be 1-32 lowercase letters, digits or dashes (it names engine objects)", s.Instance)
	}
	if s.Listen == "" {
		bad("listen", "is required")
	}
	if !strings.HasPrefix(s.BasePath, "/") || !strings.HasSuffix(s.BasePath, "/") || strings.Contains(s.BasePath, "//") && s.BasePath != "/" {
		bad("base_path", "%q must start and end with /", s.BasePath)
	}
	checkURL("frontend_url", s.FrontendURL, false)
	checkURL("backend_url", s.BackendURL, false)
	for _, o := range s.CORSOrigins {
		checkURL("cors_origins", o, true)
		if o == "*" {
			bad("cors_origins", "\"*\" cannot be used with credentials: list the frontend origins")
		}
	}
	s.TrustedPrefixes = nil
	for _, t := range s.TrustedProxies {
		if pfx, err := netip.ParsePrefix(t); err == nil {
			s.TrustedPrefixes = append(s.TrustedPrefixes, pfx.Masked())
		} else if a, err := netip.ParseAddr(t); err == nil {
			s.TrustedPrefixes = append(s.TrustedPrefixes, netip.PrefixFrom(a, a.BitLen()))
		} else {
			bad("trusted_proxies", "%q is not an address or CIDR prefix", t)
		}
	}
	oneOf("log_level", s.LogLevel, "debug", "info", "warn", "error")
	oneOf("log_format", s.LogFormat, "text", "json")
	if s.Server.MaxBodyBytes <= 0 {
		bad("server.max_body_bytes", "must be positive")
	}
	if d := s.Server.CacheTTL.Duration; d < 0 || d > time.Minute {
		bad("server.cache_ttl", "must be between 0 and 1m")
	}
	if t := s.Server.MetricsToken; t != "" && (len(t) < 16 || strings.ContainsAny(t, " \t\r\n")) {
		bad("server.metrics_token", "must be at least 16 characters, without spaces")
	}
	if s.Auth.SessionMaxAge.Duration <= 0 {
		bad("auth.session_max_age", "must be positive")
	}

	oneOf("database.driver", s.Database.Driver, "sqlite", "mysql")
	if s.Database.DSN == "" {
		bad("database.dsn", "is required (or CALIPSO_DATABASE_DSN / database.dsn_file)")
	}
	if s.Guacamole.Enabled {
		oneOf("guacamole.driver", s.Guacamole.Driver, "mysql", "postgres")
		if s.Guacamole.DSN == "" {
			bad("guacamole.dsn", "is required when guacamole.enabled (or CALIPSO_GUACAMOLE_DSN / guacamole.dsn_file)")
		}
	}

	uo := s.UserOffice
	if !uo.Embedded {
		checkURL("user_office.login_url", uo.LoginURL, true)
		checkURL("user_office.umbrella_hash_url", uo.UmbrellaHashURL, s.Umbrella.Enabled)
		checkURL("user_office.is_authorized_url", uo.IsAuthorizedURL, !s.Auth.DefaultAuthorised)
		checkURL("user_office.experiments_url", uo.ExperimentsURL, uo.DynamicExperiments && !s.ICAT.Enabled) // ICAT lists them instead
		if uo.ExperimentsURL != "" && !strings.Contains(uo.ExperimentsURL, "$USERNAME") {
			bad("user_office.experiments_url", "must contain $USERNAME")
		}
	}
	if uo.Timeout.Duration <= 0 {
		bad("user_office.timeout", "must be positive")
	}

	q := s.Quotas
	s.Quotas.Default.MaxSimultaneous = q.MaxSimultaneous
	if q.MaxSimultaneous < 0 {
		bad("quotas.max_simultaneous", "must not be negative")
	}
	var err error
	if s.Quotas.Default.CPUs, err = quotas.ParseCPUs(q.CPU); err != nil {
		bad("quotas.cpu", "%v", err)
	}
	if s.Quotas.Default.MemoryBytes, err = quotas.ParseGiB(q.Memory); err != nil {
		bad("quotas.memory", "%v", err)
	}
	if s.Quotas.Default.DiskBytes, err = quotas.ParseGiB(q.HDD); err != nil {
		bad("quotas.hdd", "%v", err)
	}
	s.Access.policy(s.Quotas.Default, bad)
	s.lifecycle(bad)
	s.icat(bad, checkURL)
	if s.Pagination.Experiments < 1 || s.Pagination.Experiments > 1000 {
		bad("pagination.experiments", "must be between 1 and 1000")
	}
	if s.Pagination.Users < 1 || s.Pagination.Users > 1000 {
		bad("pagination.users", "must be between 1 and 1000")
	}

	w := &s.Workloads
	// Relative roots (the local profile's) are taken from the working directory:
	// engines need absolute host paths.
	for key, dir := range map[string]*string{"workloads.datasets_root": &s.Workloads.DatasetsRoot, "workloads.output_root": &s.Workloads.OutputRoot} {
		if *dir == "" {
			bad(key, "is required")
		} else if abs, err := filepath.Abs(*dir); err != nil {
			bad(key, "%q: %v", *dir, err)
		} else {
			*dir = abs
		}
	}
	if (w.UID == 0 || w.GID == 0) && !w.AllowRoot {
		bad("workloads.uid", "uid/gid 0 (root) needs workloads.allow_root = true")
	}
	if w.UID < 0 || w.GID < 0 {
		bad("workloads.uid", "uid and gid must not be negative")
	}
	if w.PidsLimit < 1 || w.PidsLimit > MaxPidsLimit {
		bad("workloads.pids_limit", "%d must be between 1 and %d (a desktop needs a few hundred)", w.PidsLimit, MaxPidsLimit)
	}
	w.Mounts = nil
	for _, m := range w.ExtraMounts {
		pm, err := ParseMount(m)
		if err != nil {
			bad("workloads.extra_mounts", "%v", err)
			continue
		}
		w.Mounts = append(w.Mounts, pm)
	}
	for _, g := range w.ExtraGroups {
		if g < 0 {
			bad("workloads.extra_groups", "%d is not a group id", g)
		}
	}
	for _, q := range w.AllowUnenforced {
		if !slices.Contains([]string{"cpu", "memory", "disk"}, q) {
			bad("workloads.allow_unenforced", "%q: want cpu, memory or disk", q)
		}
	}
	for key, d := range map[string]Duration{"workloads.launch_timeout": w.LaunchTimeout, "workloads.ready_timeout": w.ReadyTimeout,
		"workloads.call_timeout": w.CallTimeout, "workloads.reconcile_interval": w.ReconcileInterval,
		"workloads.reconcile_timeout": w.ReconcileTimeout, "database.timeout": s.Database.Timeout} {
		if d.Duration <= 0 {
			bad(key, "must be positive")
		}
	}
	if d := w.LeaseTTL.Duration; d < time.Second || d > 5*time.Minute {
		// Heartbeats come every fifth of it: under a second they load the database for
		// nothing, over minutes a lost process holds its users' quota that long.
		bad("workloads.lease_ttl", "must be between 1s and 5m")
	}
	if s.Docker.Enabled && s.Docker.URL != "" {
		if u, err := url.Parse(s.Docker.URL); err != nil || !slices.Contains([]string{"unix", "tcp", "http", "https", "npipe", "ssh"}, u.Scheme) {
			bad("docker.url", "%q: want unix:///path/docker.sock or tcp://host:port", s.Docker.URL)
		}
	}
	if s.Kubernetes.Enabled {
		oneOf("kubernetes.service_type", s.Kubernetes.ServiceType, "NodePort", "ClusterIP")
		if s.Kubernetes.Namespace == "" {
			bad("kubernetes.namespace", "is required")
		}
		if s.Kubernetes.HostAddress == "" && s.Kubernetes.ServiceType == "NodePort" {
			bad("kubernetes.host_address", "is required with NodePort services")
		}
		if n := s.Kubernetes.LeaderLease; n != "" && len(validation.IsDNS1123Subdomain(n)) > 0 {
			bad("kubernetes.leader_lease", "%q: want a Kubernetes object name (lower-case letters, digits, '-' and '.')", n)
		}
	} else if s.Kubernetes.LeaderLease != "" {
		bad("kubernetes.leader_lease", "needs kubernetes.enabled")
	}
	if s.Umbrella.Enabled {
		oneOf("umbrella.mode", s.Umbrella.Mode, "saml", "header")
		checkURL("frontend_url", s.FrontendURL, true)
		if s.Umbrella.Mode == "saml" {
			checkURL("backend_url", s.BackendURL, true)
			if s.Umbrella.IdPMetadataURL == "" && s.Umbrella.IdPMetadata == "" {
				bad("umbrella.idp_metadata_url", "or umbrella.idp_metadata_file is required in saml mode")
			}
			if s.Umbrella.SPKeyFile == "" || s.Umbrella.SPCertFile == "" {
				bad("umbrella.sp_key_file", "and umbrella.sp_cert_file are required in saml mode")
			}
		}
		if s.Umbrella.Mode == "header" && len(s.TrustedProxies) == 0 {
			bad("trusted_proxies", "header mode needs the Apache/mod_shib proxy addresses here")
		}
	}
	if s.OIDC.Enabled {
		checkURL("oidc.issuer_url", s.OIDC.IssuerURL, true)
		checkURL("backend_url", s.BackendURL, true) // the callback's URL, registered at the provider
		checkURL("oidc.login_redirect", s.OIDC.LoginRedirect, false)
		if s.OIDC.LoginRedirect == "" {
			checkURL("frontend_url", s.FrontendURL, true)
		}
		if s.OIDC.ClientID == "" {
			bad("oidc.client_id", "is required")
		}
		if s.OIDC.ClientSecret == "" {
			bad("oidc.client_secret", "is required (or CALIPSO_OIDC_CLIENT_SECRET / oidc.client_secret_file)")
		}
		if s.OIDC.Timeout.Duration <= 0 || s.OIDC.Timeout.Duration > time.Minute {
			bad("oidc.timeout", "must be between 0s and 1m")
		}
		if s.Environment == "prod" && strings.HasPrefix(s.OIDC.IssuerURL, "http://") {
			bad("oidc.issuer_url", "prod needs an https issuer")
		}
	}

	if s.Environment == "prod" {
		if len(s.SecretKey) == 0 {
			bad("secret_key_file", "prod needs a secret key (CALIPSO_SECRET_KEY or secret_key_file)")
		} else if len(s.SecretKey) < 32 {
			bad("secret_key_file", "the secret key must be at least 32 characters")
		}
		if len(s.AllowedHosts) == 0 || slices.Contains(s.AllowedHosts, "*") {
			bad("allowed_hosts", "prod needs the site's host names, not a wildcard")
		}
		if !s.Auth.SecureCookies {
			bad("auth.secure_cookies", "prod serves over https: cookies must be Secure")
		}
		if s.Server.Metrics && s.Server.MetricsToken == "" {
			bad("server.metrics_token", "prod serves /metrics only with a bearer token (CALIPSO_METRICS_TOKEN or server.metrics_token_file), or set server.metrics = false")
		}
		if s.UserOffice.Embedded {
			bad("user_office.embedded", "the demo user office is not for prod: set the facility's user-office URLs")
		}
		if s.Docker.DemoImages {
			bad("docker.demo_images", "the demo images are not for prod: load the facility's images into the engine")
		}
	}
	return p
}

// ParseMount parses one bind of workloads.extra_mounts, "src:dst:ro|rw" (the mode
// defaults to ro).
func ParseMount(s string) (provisioner.Mount, error) {
	type Mount = provisioner.Mount
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return Mount{}, fmt.Errorf("%q: want src:dst:ro|rw", s)
	}
	m := provisioner.Mount{Source: parts[0], Target: parts[1], ReadOnly: true}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
		case "rw":
			m.ReadOnly = false
		default:
			return Mount{}, fmt.Errorf("%q: mode %q is not ro or rw", s, parts[2])
		}
	}
	for _, p := range []string{m.Source, m.Target} {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p || strings.Contains(p, "..") {
			return Mount{}, fmt.Errorf("%q: %q must be a clean absolute path", s, p)
		}
	}
	return m, nil
}
