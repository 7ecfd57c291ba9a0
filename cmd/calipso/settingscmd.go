package main

import (
	"context"
	"fmt"

	"github.com/calipsoplus/calipso/settings"
)

// settingsShow is `settings show [PROFILE]`: it needs no settings of its own.
func settingsShow(_ context.Context, c *cli, args []string) error {
	profile := "local"
	if len(args) > 0 {
		profile = args[0]
	}
	text, err := settings.Embedded(profile)
	if err != nil {
		return err
	}
	_, err = c.stdout.Write(text)
	return err
}

// settingsCheck is `settings check`: loading the settings has checked them.
func settingsCheck(_ context.Context, c *cli, _ []string) error {
	office := c.cfg.UserOffice.LoginURL
	if c.cfg.UserOffice.Embedded {
		office = "embedded reference office (demo data)"
	}
	_, err := fmt.Fprintf(c.stdout, "settings %s: ok (environment %s, database %s, user office %s)\n",
		c.cfg.Source, c.cfg.Environment, c.cfg.Database.Driver, office)
	return err
}
