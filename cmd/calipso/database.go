package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/go-sql-driver/mysql"

	"github.com/calipsoplus/calipso/internal/calipsoplus"
	"github.com/calipsoplus/calipso/internal/cliflags"
	"github.com/calipsoplus/calipso/internal/store"
)

// migrate is `migrate [--status]`: it opens the database without migrating it first.
func migrate(ctx context.Context, c *cli, args []string) error {
	db, err := store.OpenWith(ctx, c.cfg.Database.Driver, c.cfg.Database.DSN, store.Options{Timeout: c.cfg.Database.Timeout.Duration})
	if err != nil {
		return err
	}
	defer db.Close()
	if len(args) > 0 && args[0] == "--status" {
		st, err := db.MigrationStatus(ctx)
		if err != nil {
			return err
		}
		return c.printf("%s\n", strings.Join(st, "\n"))
	}
	if err := db.Migrate(ctx, c.log); err != nil {
		return err
	}
	return c.printf("database schema is up to date\n")
}

// reconcile is `reconcile`: one pass of the reconciler the servers' leader runs every
// reconcile_interval. Safe beside running servers: it takes over only the records
// whose lease has expired.
func reconcile(ctx context.Context, c *cli, _ []string) error {
	a, err := build(ctx, c.cfg, c.log)
	if err != nil {
		return err
	}
	defer a.Close()
	rep := a.launch.Reconcile(ctx)
	fmt.Fprintln(c.stdout, rep.String())
	if len(rep.Errors) > 0 {
		return errors.Join(rep.Errors...)
	}
	return nil
}

// importCalipsoPlus is `import-calipsoplus --dsn DSN` (internal/calipsoplus says what
// is copied and what is not).
func importCalipsoPlus(ctx context.Context, c *cli, args []string) error {
	fs := cliflags.New("import-calipsoplus")
	dsn := fs.String("dsn", "", "")
	pos, err := cliflags.Split(fs, args)
	if err != nil {
		return fmt.Errorf("import-calipsoplus: %w", err)
	}
	if *dsn == "" || len(pos) > 0 {
		return errors.New("usage: calipso import-calipsoplus --dsn 'user:pass@tcp(host:3306)/calipsoplus'")
	}
	src, err := mysql.ParseDSN(*dsn)
	if err != nil {
		return fmt.Errorf("import-calipsoplus: --dsn: %w", err)
	}
	rep, err := calipsoplus.Import(ctx, c.db, *src)
	if err != nil {
		return fmt.Errorf("import-calipsoplus: %w", err)
	}
	return c.printf("%s", rep)
}
