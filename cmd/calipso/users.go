package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/cliflags"
	"github.com/calipsoplus/calipso/internal/csvimport"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/quotas"
)

func userAdd(ctx context.Context, c *cli, args []string) error {
	fs := cliflags.New("user add")
	admin, uid, gid, home := fs.Bool("admin", false, ""), cliflags.ID(fs, "uid"), cliflags.ID(fs, "gid"), fs.String("home", "", "")
	pos, err := cliflags.Parse(fs, args, 1, "user add NAME [--admin] [--uid N --gid N] [--home DIR]")
	if err != nil {
		return err
	}
	return addUser(ctx, c.db, csvimport.User{Name: pos[0], Admin: *admin, UID: *uid, GID: *gid, Home: *home}, c.stdout)
}

func userRemove(ctx context.Context, c *cli, args []string) error {
	if err := cliflags.Want(args, 1, "user remove NAME"); err != nil {
		return err
	}
	if err := c.db.RemoveUser(ctx, actor, args[0]); err != nil {
		return err
	}
	return c.printf("user %s removed\n", args[0])
}

func userAdmin(ctx context.Context, c *cli, args []string) error {
	fs := cliflags.New("user admin")
	revoke := fs.Bool("revoke", false, "")
	pos, err := cliflags.Parse(fs, args, 1, "user admin NAME [--revoke]")
	if err != nil {
		return err
	}
	if err := c.db.SetAdmin(ctx, actor, pos[0], !*revoke); err != nil {
		return err
	}
	return c.printf("user %s admin: %v\n", pos[0], !*revoke)
}

func userImport(ctx context.Context, c *cli, args []string) error {
	if err := cliflags.Want(args, 1, "user import FILE.csv"); err != nil {
		return err
	}
	rows, err := csvimport.Users(args[0])
	if err != nil {
		return err
	}
	return imported(c, args[0], len(rows), csvimport.Apply(args[0], rows, func(u csvimport.User) error {
		return addUser(ctx, c.db, u, io.Discard)
	}))
}

// addUser saves u (admin rights as given; the identity when one is given).
func addUser(ctx context.Context, db *store.Store, u csvimport.User, stdout io.Writer) error {
	if (u.UID == nil) != (u.GID == nil) {
		return errors.New("give both --uid and --gid, or neither")
	}
	if _, err := db.EnsureUser(ctx, u.Name); err != nil {
		return err
	}
	if err := db.SetAdmin(ctx, actor, u.Name, u.Admin); err != nil {
		return err
	}
	if u.UID != nil || u.Home != "" {
		if err := db.SetIdentity(ctx, actor, u.Name, u.UID, u.GID, u.Home); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(stdout, "user %s saved\n", u.Name)
	return err
}

// imported reports a CSV import that applied n records, or its error.
func imported(c *cli, path string, n int, err error) error {
	if err != nil {
		return err
	}
	return c.printf("%s: %d records imported\n", path, n)
}

func quotaSet(ctx context.Context, c *cli, args []string) error {
	fs := cliflags.New("quota set")
	cpu, mem, hdd, max := fs.String("cpu", "", ""), fs.String("memory", "", ""), fs.String("hdd", "", ""), cliflags.ID(fs, "max")
	pos, err := cliflags.Parse(fs, args, 1, "quota set USER --cpu N --memory SIZE --hdd SIZE --max N")
	if err != nil {
		return err
	}
	if *cpu == "" || *mem == "" || *hdd == "" || *max == nil {
		return errors.New("quota set: --cpu, --memory, --hdd and --max are all required")
	}
	q := calipso.Quota{MaxSimultaneous: **max}
	var errs [3]error
	q.CPUs, errs[0] = quotas.ParseCPUs(*cpu)
	q.MemoryBytes, errs[1] = quotas.ParseSize(*mem)
	q.DiskBytes, errs[2] = quotas.ParseSize(*hdd)
	if err := errors.Join(errs[:]...); err != nil {
		return err
	}
	u, err := c.db.User(ctx, pos[0])
	if err != nil {
		return err
	}
	if err := c.db.SetQuota(ctx, actor, u.ID, q); err != nil {
		return err
	}
	return c.printf("quota of %s set\n", pos[0])
}
