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
	"os"
	"os/signal"
	"syscall"

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
  bootstrap [--admin NAME]       first run, safe to repeat: schema, images, admins, a check of the roles
  settings check                 validate the settings, listing every problem
  settings show [PROFILE]        print an embedded settings profile
  reconcile                      compare records with the engines and Guacamole, and fix them
  user add NAME [--admin] [--uid N --gid N] [--home DIR]
  user remove NAME
  user admin NAME [--revoke]     grant (or revoke) admin rights
  user role NAME ROLE [--revoke] grant (or revoke) a role ([access.roles] in the settings)
  user import FILE.csv           username[,is_admin,uid,gid,home]
  experiment add PROPOSAL [--subject S] [--body B] [--beamline L] [--uid N --gid N]
  experiment remove PROPOSAL
  experiment import FILE.csv     proposal_id,subject,body,beam_line,uid,gid
  session add PROPOSAL SESSION [--subject S] [--body B] [--start DATE] [--end DATE] [--data-set-path JSON]
  session import FILE.csv        proposal_id,session_number,subject,body,start_date,end_date,data_set_path
  link USER PROPOSAL             make USER a participant of PROPOSAL
  unlink USER PROPOSAL
  quota set USER --cpu N --memory SIZE --hdd SIZE --max N
  token create USER --name NAME [--scope PERM,PERM] [--expires DURATION]
                                 a personal API token (USER may be a service account); prints its secret once
  token list [USER]              API tokens, never their secrets
  token revoke ID
  accounting [--from DATE] [--to DATE] [--by proposal|user]
                                 core-, memory- and session-hours of what ran, as CSV
  useroffice [--listen ADDR] [--data FILE]   serve the reference user office (API.md)
  icat [--listen ADDR]           serve the reference ICAT+ server with demo investigations
  import-calipsoplus --dsn DSN   copy a CalipsoPlus database into this one
  healthcheck                    exit 0 when the server at the settings' listen address answers /healthz
                                 (for container HEALTHCHECKs: the image has no shell or curl)
`

// run is main without the process: it parses args, finds the command (commands.go),
// gets ready what it needs, and runs it. Tests call it directly.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	global := flag.NewFlagSet("calipso", flag.ContinueOnError)
	global.SetOutput(stderr)
	global.Usage = func() { fmt.Fprint(stderr, usage) }
	choice := global.String("settings", "", "settings profile (local, test, prod) or file")
	if err := global.Parse(args); err != nil {
		return err
	}
	args = global.Args()
	if len(args) == 0 {
		args = []string{"serve"}
	}
	cmd, args, err := lookup(args)
	if err != nil {
		return err
	}
	c := &cli{getenv: getenv, stdout: stdout}
	if cmd.needs >= needSettings {
		if c.cfg, err = settings.Load(*choice, getenv); err != nil {
			return err
		}
		c.log = newLogger(c.cfg, stderr)
	}
	if cmd.needs >= needStore {
		if c.db, err = openStore(ctx, c.cfg, c.log); err != nil {
			return err
		}
		defer c.db.Close()
	}
	return cmd.run(ctx, c, args)
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
