package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/calipsoplus/calipso/internal/demo"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/settings"
)

// need says what run gets ready before a command runs.
type need int

const (
	needNothing  need = iota
	needSettings      // the settings and the logger
	needStore         // and the application database, migrated
)

// command is a command line's handler and what it needs.
type command struct {
	needs need
	run   func(ctx context.Context, c *cli, args []string) error
}

// cli is what a command runs with: run's environment and output, and what its need
// got ready.
type cli struct {
	getenv func(string) string
	stdout io.Writer
	cfg    *settings.Settings
	log    *slog.Logger
	db     *store.Store
}

// commands are keyed by their words: "user add" is the group user's add.
var commands = map[string]command{
	"help": {needNothing, help},
	"-h":   {needNothing, help},
	// Hidden: the demo images' entrypoint (a FROM scratch image has no settings).
	demo.Subcommand: {needNothing, func(ctx context.Context, c *cli, args []string) error {
		return demo.Run(ctx, args, c.getenv, c.stdout)
	}},
	"serve":          {needSettings, serve},
	"settings show":  {needNothing, settingsShow},
	"settings check": {needSettings, settingsCheck},
	"useroffice":     {needSettings, serveUserOffice},
	"icat":           {needNothing, serveICAT},
	"healthcheck": {needSettings, func(ctx context.Context, c *cli, _ []string) error {
		return healthcheck(ctx, c.cfg.Listen, c.stdout)
	}},
	"migrate":            {needSettings, migrate},
	"bootstrap":          {needStore, bootstrap},
	"accounting":         {needStore, accounting},
	"user role":          {needStore, userRole},
	"token create":       {needStore, tokenCreate},
	"token list":         {needStore, tokenList},
	"token revoke":       {needStore, tokenRevoke},
	"reconcile":          {needSettings, reconcile},
	"import-calipsoplus": {needStore, importCalipsoPlus},
	"user add":           {needStore, userAdd},
	"user remove":        {needStore, userRemove},
	"user admin":         {needStore, userAdmin},
	"user import":        {needStore, userImport},
	"experiment add":     {needStore, experimentAdd},
	"experiment remove":  {needStore, experimentRemove},
	"experiment import":  {needStore, experimentImport},
	"link":               {needStore, linking("link")},
	"unlink":             {needStore, linking("unlink")},
	"session add":        {needStore, sessionAdd},
	"session import":     {needStore, sessionImport},
	"quota set":          {needStore, quotaSet},
}

// lookup finds the command args start with and returns the arguments after its words.
func lookup(args []string) (command, []string, error) {
	name := args[0]
	if cmd, ok := commands[name]; ok {
		return cmd, args[1:], nil
	}
	if len(args) > 1 {
		if cmd, ok := commands[name+" "+args[1]]; ok {
			return cmd, args[2:], nil
		}
	}
	isGroup := false
	for words := range commands {
		isGroup = isGroup || strings.HasPrefix(words, name+" ")
	}
	switch {
	case name == "settings":
		return command{}, nil, errors.New("settings: want `settings check` or `settings show [PROFILE]`")
	case isGroup && len(args) == 1:
		return command{}, nil, fmt.Errorf("%s: which one? (see `calipso help`)", name)
	case isGroup:
		name += " " + args[1]
	}
	return command{}, nil, fmt.Errorf("unknown command %q (see `calipso help`)", name)
}

func help(_ context.Context, c *cli, _ []string) error {
	_, err := fmt.Fprint(c.stdout, usage)
	return err
}

// actor names the CLI in the audit log.
const actor = "cli"

func (c *cli) printf(format string, args ...any) error {
	_, err := fmt.Fprintf(c.stdout, format, args...)
	return err
}
