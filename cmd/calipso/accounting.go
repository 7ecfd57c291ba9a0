package main

import (
	"context"
	"fmt"
	"time"

	"github.com/calipsoplus/calipso/internal/cliflags"
	"github.com/calipsoplus/calipso/internal/lifecycle"
)

// accounting is `accounting [--from DATE] [--to DATE] [--by proposal|user]`: the
// core-hours, memory GiB-hours and session-hours of the resources that ran in the
// period, as CSV for the user office's reports. The period defaults to the last
// 30 days; dates are YYYY-MM-DD (UTC, from midnight) or RFC 3339.
func accounting(ctx context.Context, c *cli, args []string) error {
	fs := cliflags.New("accounting")
	fromText, toText, by := fs.String("from", "", ""), fs.String("to", "", ""), fs.String("by", lifecycle.ByProposal, "")
	if _, err := cliflags.Parse(fs, args, 0, "accounting [--from DATE] [--to DATE] [--by proposal|user]"); err != nil {
		return err
	}
	if *by != lifecycle.ByProposal && *by != lifecycle.ByUser {
		return fmt.Errorf("--by must be %s or %s", lifecycle.ByProposal, lifecycle.ByUser)
	}
	to := time.Now().UTC()
	from := to.Add(-30 * 24 * time.Hour)
	for _, f := range []struct {
		text string
		dst  *time.Time
		flag string
	}{{*fromText, &from, "--from"}, {*toText, &to, "--to"}} {
		if f.text == "" {
			continue
		}
		t, err := parseWhen(f.text)
		if err != nil {
			return fmt.Errorf("%s: %w", f.flag, err)
		}
		*f.dst = t
	}
	if !to.After(from) {
		return fmt.Errorf("--to must come after --from")
	}
	rs, err := c.db.RanBetween(ctx, from, to)
	if err != nil {
		return err
	}
	return lifecycle.WriteCSV(c.stdout, *by, lifecycle.Account(rs, from, to, *by))
}

func parseWhen(s string) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t.UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want YYYY-MM-DD or RFC 3339", s)
	}
	return t.UTC(), nil
}
