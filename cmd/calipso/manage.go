package main

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/experiments"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/quotas"
	"github.com/calipsoplus/calipso/settings"
)

// actor names the CLI in the audit log.
const actor = "cli"

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// optInt is an int flag that may be left unset.
type optInt struct{ v *int }

func (o *optInt) String() string {
	if o.v == nil {
		return ""
	}
	return strconv.Itoa(*o.v)
}

func (o *optInt) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return fmt.Errorf("want a non-negative whole number")
	}
	o.v = &n
	return nil
}

func want(args []string, n int, usage string) error {
	if len(args) != n {
		return fmt.Errorf("usage: calipso %s", usage)
	}
	return nil
}

// manage runs the management commands on the application database.
func manage(ctx context.Context, cfg *settings.Settings, log *slog.Logger, cmd string, args []string, stdout io.Writer) error {
	if cmd == "migrate" {
		db, err := store.Open(ctx, cfg.Database.Driver, cfg.Database.DSN)
		if err != nil {
			return err
		}
		defer db.Close()
		if len(args) > 0 && args[0] == "--status" {
			st, err := db.MigrationStatus(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, strings.Join(st, "\n"))
			return nil
		}
		if err := db.Migrate(ctx, log); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "database schema is up to date")
		return nil
	}
	if cmd == "reconcile" {
		a, err := build(ctx, cfg, log)
		if err != nil {
			return err
		}
		defer a.Close()
		rep := a.launch.Reconcile(ctx, time.Now().Add(-cfg.Workloads.StuckAfter.Duration))
		fmt.Fprintln(stdout, rep.String())
		if len(rep.Errors) > 0 {
			return errors.Join(rep.Errors...)
		}
		return nil
	}
	db, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer db.Close()
	if cmd == "import-calipsoplus" {
		return importCalipsoPlus(ctx, db, args, stdout)
	}
	sub := ""
	if cmd != "link" && cmd != "unlink" {
		if len(args) == 0 {
			return fmt.Errorf("%s: which one? (see `calipso help`)", cmd)
		}
		sub, args = args[0], args[1:]
	}
	switch cmd + " " + sub {
	case "user add":
		fs := newFlagSet("user add")
		admin := fs.Bool("admin", false, "")
		var uid, gid optInt
		fs.Var(&uid, "uid", "")
		fs.Var(&gid, "gid", "")
		home := fs.String("home", "", "")
		pos, err := splitFlags(fs, args)
		if err != nil {
			return err
		}
		if err := want(pos, 1, "user add NAME [--admin] [--uid N --gid N] [--home DIR]"); err != nil {
			return err
		}
		return addUser(ctx, db, pos[0], *admin, uid.v, gid.v, *home, stdout)
	case "user remove":
		if err := want(args, 1, "user remove NAME"); err != nil {
			return err
		}
		if err := db.RemoveUser(ctx, actor, args[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "user %s removed\n", args[0])
		return nil
	case "user admin":
		fs := newFlagSet("user admin")
		revoke := fs.Bool("revoke", false, "")
		pos, err := splitFlags(fs, args)
		if err != nil {
			return err
		}
		if err := want(pos, 1, "user admin NAME [--revoke]"); err != nil {
			return err
		}
		if err := db.SetAdmin(ctx, actor, pos[0], !*revoke); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "user %s admin: %v\n", pos[0], !*revoke)
		return nil
	case "user import":
		if err := want(args, 1, "user import FILE.csv"); err != nil {
			return err
		}
		return importCSV(args[0], 1, 5, stdout, func(line int, rec []string) (func() error, error) {
			name := rec[0]
			if !store.ValidUsername(name) {
				return nil, fmt.Errorf("username %q is not valid", name)
			}
			admin, uid, gid, home := false, (*int)(nil), (*int)(nil), ""
			var err error
			if len(rec) > 1 && rec[1] != "" {
				if admin, err = strconv.ParseBool(rec[1]); err != nil {
					return nil, fmt.Errorf("is_admin %q: want true or false", rec[1])
				}
			}
			if len(rec) > 3 {
				if uid, err = optionalID("uid", rec[2]); err != nil {
					return nil, err
				}
				if gid, err = optionalID("gid", rec[3]); err != nil {
					return nil, err
				}
			}
			if len(rec) > 4 {
				home = rec[4]
			}
			return func() error { return addUser(ctx, db, name, admin, uid, gid, home, io.Discard) }, nil
		})
	case "experiment add":
		fs := newFlagSet("experiment add")
		subject := fs.String("subject", "", "")
		body := fs.String("body", "", "")
		beamline := fs.String("beamline", "", "")
		var uid, gid optInt
		fs.Var(&uid, "uid", "")
		fs.Var(&gid, "gid", "")
		pos, err := splitFlags(fs, args)
		if err != nil {
			return err
		}
		if err := want(pos, 1, "experiment add PROPOSAL [--subject S] [--body B] [--beamline L] [--uid N --gid N]"); err != nil {
			return err
		}
		e := calipso.Experiment{ProposalID: pos[0], Subject: *subject, Body: *body, BeamLine: *beamline, UID: uid.v, GID: gid.v}
		if _, err := db.PutExperiment(ctx, actor, e); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "experiment %s saved\n", pos[0])
		return nil
	case "experiment remove":
		if err := want(args, 1, "experiment remove PROPOSAL"); err != nil {
			return err
		}
		if err := db.RemoveExperiment(ctx, actor, args[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "experiment %s removed\n", args[0])
		return nil
	case "experiment import":
		if err := want(args, 1, "experiment import FILE.csv"); err != nil {
			return err
		}
		return importCSV(args[0], 1, 6, stdout, func(line int, rec []string) (func() error, error) {
			e := calipso.Experiment{ProposalID: rec[0]}
			fields := []*string{&e.Subject, &e.Body, &e.BeamLine}
			for i, f := range fields {
				if len(rec) > i+1 {
					*f = rec[i+1]
				}
			}
			var err error
			if len(rec) > 5 {
				if e.UID, err = optionalID("uid", rec[4]); err != nil {
					return nil, err
				}
				if e.GID, err = optionalID("gid", rec[5]); err != nil {
					return nil, err
				}
			}
			if strings.TrimSpace(e.ProposalID) == "" {
				return nil, errors.New("proposal_id is empty")
			}
			return func() error { _, err := db.PutExperiment(ctx, actor, e); return err }, nil
		})
	case "session add":
		fs := newFlagSet("session add")
		subject := fs.String("subject", "", "")
		body := fs.String("body", "", "")
		start := fs.String("start", "", "")
		end := fs.String("end", "", "")
		dsp := fs.String("data-set-path", "[]", "")
		pos, err := splitFlags(fs, args)
		if err != nil {
			return err
		}
		if err := want(pos, 2, "session add PROPOSAL SESSION [--subject S] [--body B] [--start DATE] [--end DATE] [--data-set-path JSON]"); err != nil {
			return err
		}
		ss, err := newSession(pos[1], *subject, *body, *start, *end, *dsp, cfg)
		if err != nil {
			return err
		}
		if err := addSession(ctx, db, pos[0], ss); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "session %s of %s saved\n", pos[1], pos[0])
		return nil
	case "session import":
		if err := want(args, 1, "session import FILE.csv"); err != nil {
			return err
		}
		return importCSV(args[0], 2, 7, stdout, func(line int, rec []string) (func() error, error) {
			get := func(i int) string {
				if i < len(rec) {
					return rec[i]
				}
				return ""
			}
			dsp := get(6)
			if dsp == "" {
				dsp = "[]"
			}
			ss, err := newSession(rec[1], get(2), get(3), get(4), get(5), dsp, cfg)
			if err != nil {
				return nil, err
			}
			return func() error { return addSession(ctx, db, rec[0], ss) }, nil
		})
	case "link ", "unlink ":
		if err := want(args, 2, cmd+" USER PROPOSAL"); err != nil {
			return err
		}
		f := db.Link
		if cmd == "unlink" {
			f = db.Unlink
		}
		if err := f(ctx, actor, args[0], args[1]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s %s %s: done\n", cmd, args[0], args[1])
		return nil
	case "quota set":
		fs := newFlagSet("quota set")
		cpu := fs.String("cpu", "", "")
		mem := fs.String("memory", "", "")
		hdd := fs.String("hdd", "", "")
		var max optInt
		fs.Var(&max, "max", "")
		pos, err := splitFlags(fs, args)
		if err != nil {
			return err
		}
		if err := want(pos, 1, "quota set USER --cpu N --memory SIZE --hdd SIZE --max N"); err != nil {
			return err
		}
		if *cpu == "" || *mem == "" || *hdd == "" || max.v == nil {
			return errors.New("quota set: --cpu, --memory, --hdd and --max are all required")
		}
		var q calipso.Quota
		var errs []error
		if q.CPUs, err = quotas.ParseCPUs(*cpu); err != nil {
			errs = append(errs, err)
		}
		if q.MemoryBytes, err = quotas.ParseSize(*mem); err != nil {
			errs = append(errs, err)
		}
		if q.DiskBytes, err = quotas.ParseSize(*hdd); err != nil {
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		q.MaxSimultaneous = *max.v
		u, err := db.User(ctx, pos[0])
		if err != nil {
			return err
		}
		if err := db.SetQuota(ctx, actor, u.ID, q); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "quota of %s set\n", pos[0])
		return nil
	}
	return fmt.Errorf("unknown command %q (see `calipso help`)", strings.TrimSpace(cmd+" "+sub))
}

func optionalID(name, v string) (*int, error) {
	v = strings.TrimSpace(v)
	if v == "" || v == "." {
		return nil, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("%s %q: want a non-negative number, or empty", name, v)
	}
	return &n, nil
}

func addUser(ctx context.Context, db *store.Store, name string, admin bool, uid, gid *int, home string, stdout io.Writer) error {
	if (uid == nil) != (gid == nil) {
		return errors.New("give both --uid and --gid, or neither")
	}
	if _, err := db.EnsureUser(ctx, name); err != nil {
		return err
	}
	if err := db.SetAdmin(ctx, actor, name, admin); err != nil {
		return err
	}
	if uid != nil || home != "" {
		if err := db.SetIdentity(ctx, actor, name, uid, gid, home); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "user %s saved\n", name)
	return nil
}

// newSession checks a session's fields; its data_set_path must parse under the roots.
func newSession(number, subject, body, start, end, dataSetPath string, cfg *settings.Settings) (calipso.Session, error) {
	ss := calipso.Session{SessionNumber: number, Subject: subject, Body: body, DataSetPath: dataSetPath}
	var err error
	if strings.TrimSpace(number) == "" {
		return ss, errors.New("session_number is empty")
	}
	if ss.StartDate, err = experiments.ParseDate(start); err != nil {
		return ss, fmt.Errorf("start_date: %w", err)
	}
	if ss.EndDate, err = experiments.ParseDate(end); err != nil {
		return ss, fmt.Errorf("end_date: %w", err)
	}
	if _, err := experiments.ParseVolumes(dataSetPath, experiments.Roots{Datasets: cfg.Workloads.DatasetsRoot, Output: cfg.Workloads.OutputRoot}); err != nil {
		return ss, fmt.Errorf("data_set_path: %w", err)
	}
	return ss, nil
}

func addSession(ctx context.Context, db *store.Store, proposal string, ss calipso.Session) error {
	return db.PutSession(ctx, actor, proposal, ss)
}

// importCSV reads every record first, checking each (errors name the line), and
// applies them only when all are good: a bad file changes nothing. A header line is
// recognised and skipped. Applying is idempotent, so a file can be imported again.
func importCSV(path string, minFields, maxFields int, stdout io.Writer, check func(line int, rec []string) (func() error, error)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	var (
		apply []func() error
		lines []int
		errs  []error
	)
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		line, _ := r.FieldPos(0)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			break
		}
		if len(apply) == 0 && len(errs) == 0 && isHeader(rec) {
			continue
		}
		if len(rec) < minFields || len(rec) > maxFields {
			errs = append(errs, fmt.Errorf("%s line %d: %d fields, want %d to %d", path, line, len(rec), minFields, maxFields))
			continue
		}
		fn, err := check(line, rec)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s line %d: %w", path, line, err))
			continue
		}
		apply = append(apply, fn)
		lines = append(lines, line)
	}
	if len(errs) > 0 {
		return fmt.Errorf("nothing imported:\n%w", errors.Join(errs...))
	}
	for i, fn := range apply {
		if err := fn(); err != nil {
			return fmt.Errorf("%s line %d: %w (lines before it were imported; importing again is safe)", path, lines[i], err)
		}
	}
	fmt.Fprintf(stdout, "%s: %d records imported\n", path, len(apply))
	return nil
}

func isHeader(rec []string) bool {
	if len(rec) == 0 {
		return false
	}
	switch strings.ToLower(strings.TrimSpace(rec[0])) {
	case "username", "proposal_id", "proposal":
		return true
	}
	return false
}
