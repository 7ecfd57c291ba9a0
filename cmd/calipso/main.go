// Command calipso is the Calipso server and its management commands, in the habits of
// Django's manage.py. With no command it serves.
//
//	calipso [--settings local|test|prod|FILE] [command] [flags]
//
// Run `calipso help` for the commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/calipsoplus/calipso/internal/demo"
	"github.com/calipsoplus/calipso/settings"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "calipso:", err)
		}
		os.Exit(1)
	}
}

const usage = `Usage: calipso [--settings local|test|prod|FILE] [command] [flags]

The settings come from --settings, else $CALIPSO_SETTINGS, else the embedded local profile.

Commands:
  serve                          serve the API (the default)
  migrate [--status]             bring the database schema up to date
  settings check                 validate the settings, listing every problem
  settings show [PROFILE]        print an embedded settings profile
  reconcile                      compare records with the engines and Guacamole, and fix them
  user add NAME [--admin] [--uid N --gid N] [--home DIR]
  user remove NAME
  user admin NAME [--revoke]     grant (or revoke) admin rights
  user import FILE.csv           username[,is_admin,uid,gid,home]
  experiment add PROPOSAL [--subject S] [--body B] [--beamline L] [--uid N --gid N]
  experiment remove PROPOSAL
  experiment import FILE.csv     proposal_id,subject,body,beam_line,uid,gid
  session add PROPOSAL SESSION [--subject S] [--body B] [--start DATE] [--end DATE] [--data-set-path JSON]
  session import FILE.csv        proposal_id,session_number,subject,body,start_date,end_date,data_set_path
  link USER PROPOSAL             make USER a participant of PROPOSAL
  unlink USER PROPOSAL
  quota set USER --cpu N --memory SIZE --hdd SIZE --max N
  useroffice [--listen ADDR] [--data FILE]   serve the reference user office (API.md)
  import-calipsoplus --dsn DSN   copy a CalipsoPlus database into this one
  healthcheck                    exit 0 when the server at the settings' listen address answers /healthz
                                 (for container HEALTHCHECKs: the image has no shell or curl)
`

// run is main without the process: it parses args, loads settings, and runs one
// command. Tests call it directly.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	global := flag.NewFlagSet("calipso", flag.ContinueOnError)
	global.SetOutput(stderr)
	global.Usage = func() { fmt.Fprint(stderr, usage) }
	choice := global.String("settings", "", "settings profile (local, test, prod) or file")
	if err := global.Parse(args); err != nil {
		return err
	}
	args = global.Args()
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	if cmd == "help" || cmd == "-h" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	// Commands that need no settings.
	switch cmd {
	case demo.Subcommand: // hidden: the demo images' entrypoint (a FROM scratch image has no settings)
		return demo.Run(ctx, args, getenv, stdout)
	case "settings":
		if len(args) > 0 && args[0] == "show" {
			profile := "local"
			if len(args) > 1 {
				profile = args[1]
			}
			text, err := settings.Embedded(profile)
			if err != nil {
				return err
			}
			_, err = stdout.Write(text)
			return err
		}
	}

	cfg, err := settings.Load(*choice, getenv)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	switch cmd {
	case "serve":
		return serve(ctx, cfg, log, getenv, stdout)
	case "settings":
		if len(args) == 0 || args[0] != "check" {
			return fmt.Errorf("settings: want `settings check` or `settings show [PROFILE]`")
		}
		fmt.Fprintf(stdout, "settings %s: ok (environment %s, database %s, user office %s)\n",
			cfg.Source, cfg.Environment, cfg.Database.Driver, officeDescription(cfg))
		return nil
	case "useroffice":
		return serveUserOffice(ctx, cfg, log, args, stdout)
	case "healthcheck":
		return healthcheck(ctx, cfg.Listen, stdout)
	case "migrate", "reconcile", "user", "experiment", "session", "link", "unlink", "quota", "import-calipsoplus":
		return manage(ctx, cfg, log, cmd, args, stdout)
	}
	return fmt.Errorf("unknown command %q (see `calipso help`)", cmd)
}

func officeDescription(cfg *settings.Settings) string {
	if cfg.UserOffice.Embedded {
		return "embedded reference office (demo data)"
	}
	return cfg.UserOffice.LoginURL
}

func newLogger(cfg *settings.Settings, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// splitFlags lets flags follow positional arguments (`user add bob --admin`).
func splitFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	for _, p := range pos {
		if strings.HasPrefix(p, "-") {
			return nil, fmt.Errorf("flag %s after --", p)
		}
	}
	return pos, nil
}

// healthcheck asks the local server's /healthz.
func healthcheck(ctx context.Context, listen string, stdout io.Writer) error {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("listen %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s", resp.Status)
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}
