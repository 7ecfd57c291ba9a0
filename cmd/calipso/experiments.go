package main

import (
	"context"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/experiments"
	"github.com/calipsoplus/calipso/internal/cliflags"
	"github.com/calipsoplus/calipso/internal/csvimport"
)

func experimentAdd(ctx context.Context, c *cli, args []string) error {
	fs := cliflags.New("experiment add")
	subject, body, beamline := fs.String("subject", "", ""), fs.String("body", "", ""), fs.String("beamline", "", "")
	uid, gid := cliflags.ID(fs, "uid"), cliflags.ID(fs, "gid")
	pos, err := cliflags.Parse(fs, args, 1, "experiment add PROPOSAL [--subject S] [--body B] [--beamline L] [--uid N --gid N]")
	if err != nil {
		return err
	}
	e := calipso.Experiment{ProposalID: pos[0], Subject: *subject, Body: *body, BeamLine: *beamline, UID: *uid, GID: *gid}
	if _, err := c.db.PutExperiment(ctx, actor, e); err != nil {
		return err
	}
	return c.printf("experiment %s saved\n", pos[0])
}

func experimentRemove(ctx context.Context, c *cli, args []string) error {
	if err := cliflags.Want(args, 1, "experiment remove PROPOSAL"); err != nil {
		return err
	}
	if err := c.db.RemoveExperiment(ctx, actor, args[0]); err != nil {
		return err
	}
	return c.printf("experiment %s removed\n", args[0])
}

func experimentImport(ctx context.Context, c *cli, args []string) error {
	if err := cliflags.Want(args, 1, "experiment import FILE.csv"); err != nil {
		return err
	}
	rows, err := csvimport.Experiments(args[0])
	if err != nil {
		return err
	}
	return imported(c, args[0], len(rows), csvimport.Apply(args[0], rows, func(e calipso.Experiment) error {
		_, err := c.db.PutExperiment(ctx, actor, e)
		return err
	}))
}

// linking is `link USER PROPOSAL` or `unlink USER PROPOSAL`: the user's participation.
func linking(name string) func(context.Context, *cli, []string) error {
	return func(ctx context.Context, c *cli, args []string) error {
		if err := cliflags.Want(args, 2, name+" USER PROPOSAL"); err != nil {
			return err
		}
		f := c.db.Link
		if name == "unlink" {
			f = c.db.Unlink
		}
		if err := f(ctx, actor, args[0], args[1]); err != nil {
			return err
		}
		return c.printf("%s %s %s: done\n", name, args[0], args[1])
	}
}

func sessionAdd(ctx context.Context, c *cli, args []string) error {
	fs := cliflags.New("session add")
	subject, body, start, end := fs.String("subject", "", ""), fs.String("body", "", ""), fs.String("start", "", ""), fs.String("end", "", "")
	dsp := fs.String("data-set-path", "[]", "")
	pos, err := cliflags.Parse(fs, args, 2, "session add PROPOSAL SESSION [--subject S] [--body B] [--start DATE] [--end DATE] [--data-set-path JSON]")
	if err != nil {
		return err
	}
	ss, err := csvimport.ParseSession(pos[1], *subject, *body, *start, *end, *dsp, roots(c))
	if err != nil {
		return err
	}
	if err := c.db.PutSession(ctx, actor, pos[0], ss); err != nil {
		return err
	}
	return c.printf("session %s of %s saved\n", pos[1], pos[0])
}

func sessionImport(ctx context.Context, c *cli, args []string) error {
	if err := cliflags.Want(args, 1, "session import FILE.csv"); err != nil {
		return err
	}
	rows, err := csvimport.Sessions(args[0], roots(c))
	if err != nil {
		return err
	}
	return imported(c, args[0], len(rows), csvimport.Apply(args[0], rows, func(s csvimport.Session) error {
		return c.db.PutSession(ctx, actor, s.Proposal, s.Session)
	}))
}

// roots are where a session's data_set_path may point.
func roots(c *cli) experiments.Roots {
	return experiments.Roots{Datasets: c.cfg.Workloads.DatasetsRoot, Output: c.cfg.Workloads.OutputRoot}
}
