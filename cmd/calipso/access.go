package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/cliflags"
	"github.com/calipsoplus/calipso/internal/store"
)

// bootstrap is `bootstrap [--admin NAME]`, a site's first run, safe to repeat: the
// schema (run migrated it), the images, the settings' admins and NAME, and a check
// that every role granted in the database is one the settings define.
func bootstrap(ctx context.Context, c *cli, args []string) error {
	fs := cliflags.New("bootstrap")
	admin := fs.String("admin", "", "")
	if _, err := cliflags.Parse(fs, args, 0, "bootstrap [--admin NAME]"); err != nil {
		return err
	}
	if err := c.db.SeedImages(ctx); err != nil {
		return fmt.Errorf("seed images: %w", err)
	}
	admins := slices.Clone(c.cfg.Auth.Admins)
	if *admin != "" {
		admins = append(admins, *admin)
	}
	if err := c.db.EnsureAdmins(ctx, actor, admins); err != nil {
		return err
	}
	policy := c.cfg.Access.Policy
	names := make([]string, 0, len(policy.Roles))
	for n := range policy.Roles {
		names = append(names, n)
	}
	slices.Sort(names)
	unknown, err := c.db.RolesHeld(ctx)
	if err != nil {
		return err
	}
	unknown = slices.DeleteFunc(unknown, func(r string) bool { _, ok := policy.Roles[r]; return ok })
	if err := c.printf("database schema is up to date\nroles: %s (every account: %s)\nadmins: %s\n",
		strings.Join(names, ", "), policy.DefaultRole, strings.Join(admins, ", ")); err != nil {
		return err
	}
	if len(unknown) > 0 {
		// Not fatal: a role the settings dropped gives nothing, and the accounts keep working.
		return c.printf("warning: accounts hold roles the settings do not define (they give nothing): %s\n", strings.Join(unknown, ", "))
	}
	return nil
}

// userRole is `user role NAME ROLE [--revoke]`: grant (or revoke) a role.
func userRole(ctx context.Context, c *cli, args []string) error {
	fs := cliflags.New("user role")
	revoke := fs.Bool("revoke", false, "")
	pos, err := cliflags.Parse(fs, args, 2, "user role NAME ROLE [--revoke]")
	if err != nil {
		return err
	}
	name, role := pos[0], pos[1]
	if _, ok := c.cfg.Access.Policy.Roles[role]; !ok && !*revoke {
		return fmt.Errorf("no role %q in the settings (built-in: user, staff, admin; others are [access.roles.*])", role)
	}
	granted, err := c.db.GrantedRoles(ctx, name)
	if err != nil {
		return err
	}
	if *revoke {
		granted = slices.DeleteFunc(granted, func(r string) bool { return r == role })
	} else {
		granted = append(granted, role)
	}
	if _, err := c.db.SetRoles(ctx, actor, name, store.RoleGranted, granted); err != nil {
		return err
	}
	u, err := c.db.User(ctx, name)
	if err != nil {
		return err
	}
	return c.printf("user %s roles: %s\n", name, strings.Join(c.cfg.Access.Policy.RoleNames(u), ", "))
}

// tokenCreate is `token create USER --name N [--scope P,Q] [--expires DURATION]`: a
// token for USER (a person, or a service account, made if new), its secret printed
// this once.
func tokenCreate(ctx context.Context, c *cli, args []string) error {
	fs := cliflags.New("token create")
	name, scope := fs.String("name", "", ""), fs.String("scope", "", "")
	expires := fs.Duration("expires", c.cfg.Access.TokenLifetime.Duration, "")
	pos, err := cliflags.Parse(fs, args, 1, "token create USER --name NAME [--scope PERM,PERM] [--expires DURATION]")
	if err != nil {
		return err
	}
	if *expires <= 0 || *expires > c.cfg.Access.TokenMaxLifetime.Duration {
		return fmt.Errorf("--expires must be positive and at most access.token_max_lifetime (%v)", c.cfg.Access.TokenMaxLifetime.Duration)
	}
	u, err := c.db.EnsureUser(ctx, pos[0])
	if err != nil {
		return err
	}
	have := c.cfg.Access.Policy.Access(u).Permissions
	perms := slices.Clone(have)
	if *scope != "" {
		perms = nil
		for _, s := range strings.Split(*scope, ",") {
			p, err := calipso.ParsePermission(strings.TrimSpace(s))
			if err != nil {
				return err
			}
			if !slices.Contains(have, p) {
				return fmt.Errorf("%s does not hold %s, so a token of it cannot", u.Username, p)
			}
			perms = append(perms, p)
		}
	}
	t, secret, err := c.db.CreateToken(ctx, actor, u.ID, *name, perms, time.Now().Add(*expires))
	if err != nil {
		return err
	}
	return c.printf("token %d for %s (scope %s, expires %s):\n%s\n", t.ID, u.Username, joinPerms(t.Scope), t.Expires.Format(time.RFC3339), secret)
}

func joinPerms(ps []calipso.Permission) string {
	if len(ps) == 0 {
		return "none"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, ",")
}

// tokenList is `token list [USER]`: every token (or USER's), never a secret.
func tokenList(ctx context.Context, c *cli, args []string) error {
	if len(args) > 1 {
		return fmt.Errorf("usage: token list [USER]")
	}
	var owner int64
	if len(args) == 1 {
		u, err := c.db.User(ctx, args[0])
		if err != nil {
			return err
		}
		owner = u.ID
	}
	ts, err := c.db.Tokens(ctx, owner)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tUSER\tNAME\tSCOPE\tEXPIRES\tLAST USED\tSTATE")
	now := time.Now()
	for _, t := range ts {
		used, state := "never", "valid"
		if t.LastUsed != nil {
			used = t.LastUsed.Format(time.RFC3339)
		}
		switch {
		case t.Revoked != nil:
			state = "revoked"
		case !t.Valid(now):
			state = "expired"
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Username, t.Name, joinPerms(t.Scope), t.Expires.Format(time.RFC3339), used, state)
	}
	return w.Flush()
}

// tokenRevoke is `token revoke ID`.
func tokenRevoke(ctx context.Context, c *cli, args []string) error {
	if err := cliflags.Want(args, 1, "token revoke ID"); err != nil {
		return err
	}
	id, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil || id <= 0 {
		return fmt.Errorf("token id %q is not a positive integer", args[0])
	}
	if err := c.db.RevokeToken(ctx, actor, id); err != nil {
		return err
	}
	return c.printf("token %d revoked\n", id)
}
