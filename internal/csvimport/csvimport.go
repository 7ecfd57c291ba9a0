// Package csvimport reads the CSV files of `calipso user|experiment|session import`.
// Every line is checked before anything is applied, and every problem is reported at
// once, naming its line: a bad file changes nothing. A header line is recognised and
// skipped. What a file says is applied with the store's idempotent writes, so a file
// can be imported again.
package csvimport

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/experiments"
	"github.com/calipsoplus/calipso/internal/store"
)

// Row is one checked record and the line it came from.
type Row[T any] struct {
	Line  int
	Value T
}

// Apply calls fn on each row in order. A failure names its line; the lines before it
// were applied, and importing the file again is safe.
func Apply[T any](path string, rows []Row[T], fn func(T) error) error {
	for _, r := range rows {
		if err := fn(r.Value); err != nil {
			return fmt.Errorf("%s line %d: %w (lines before it were imported; importing again is safe)", path, r.Line, err)
		}
	}
	return nil
}

// User is a line of a users file: username[,is_admin,uid,gid,home].
type User struct {
	Name     string
	Admin    bool
	UID, GID *int // nil when empty or "."
	Home     string
}

// Users reads a users file.
func Users(path string) ([]Row[User], error) {
	var rows []Row[User]
	err := read(path, 1, 5, func(line int, rec []string) error {
		u := User{Name: rec[0]}
		if !store.ValidUsername(u.Name) {
			return fmt.Errorf("username %q is not valid", u.Name)
		}
		var err error
		if len(rec) > 1 && rec[1] != "" {
			if u.Admin, err = strconv.ParseBool(rec[1]); err != nil {
				return fmt.Errorf("is_admin %q: want true or false", rec[1])
			}
		}
		if len(rec) > 3 {
			if u.UID, err = optionalID("uid", rec[2]); err != nil {
				return err
			}
			if u.GID, err = optionalID("gid", rec[3]); err != nil {
				return err
			}
		}
		if len(rec) > 4 {
			u.Home = rec[4]
		}
		rows = append(rows, Row[User]{line, u})
		return nil
	})
	return rows, err
}

// Experiments reads an experiments file: proposal_id,subject,body,beam_line,uid,gid.
func Experiments(path string) ([]Row[calipso.Experiment], error) {
	var rows []Row[calipso.Experiment]
	err := read(path, 1, 6, func(line int, rec []string) error {
		e := calipso.Experiment{ProposalID: rec[0]}
		for i, f := range []*string{&e.Subject, &e.Body, &e.BeamLine} {
			if len(rec) > i+1 {
				*f = rec[i+1]
			}
		}
		var err error
		if len(rec) > 5 {
			if e.UID, err = optionalID("uid", rec[4]); err != nil {
				return err
			}
			if e.GID, err = optionalID("gid", rec[5]); err != nil {
				return err
			}
		}
		if strings.TrimSpace(e.ProposalID) == "" {
			return errors.New("proposal_id is empty")
		}
		rows = append(rows, Row[calipso.Experiment]{line, e})
		return nil
	})
	return rows, err
}

// Session is a line of a sessions file:
// proposal_id,session_number,subject,body,start_date,end_date,data_set_path.
type Session struct {
	Proposal string
	calipso.Session
}

// Sessions reads a sessions file; each data_set_path must parse under roots.
func Sessions(path string, roots experiments.Roots) ([]Row[Session], error) {
	var rows []Row[Session]
	err := read(path, 2, 7, func(line int, rec []string) error {
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
		ss, err := ParseSession(rec[1], get(2), get(3), get(4), get(5), dsp, roots)
		if err != nil {
			return err
		}
		rows = append(rows, Row[Session]{line, Session{Proposal: rec[0], Session: ss}})
		return nil
	})
	return rows, err
}

// ParseSession checks a session's fields as text, as a sessions file's columns and
// `session add`'s flags give them; its data_set_path must parse under roots.
func ParseSession(number, subject, body, start, end, dataSetPath string, roots experiments.Roots) (calipso.Session, error) {
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
	if _, err := experiments.ParseVolumes(dataSetPath, roots); err != nil {
		return ss, fmt.Errorf("data_set_path: %w", err)
	}
	return ss, nil
}

// read calls check on every record of path with its line, after checking the number
// of fields, and returns every problem at once.
func read(path string, minFields, maxFields int, check func(line int, rec []string) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	var (
		good int
		errs []error
	)
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil { // a *csv.ParseError names its line (FieldPos would panic here)
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			break
		}
		line, _ := r.FieldPos(0)
		if good == 0 && len(errs) == 0 && isHeader(rec) {
			continue
		}
		if len(rec) < minFields || len(rec) > maxFields {
			errs = append(errs, fmt.Errorf("%s line %d: %d fields, want %d to %d", path, line, len(rec), minFields, maxFields))
			continue
		}
		if err := check(line, rec); err != nil {
			errs = append(errs, fmt.Errorf("%s line %d: %w", path, line, err))
			continue
		}
		good++
	}
	if len(errs) > 0 {
		return fmt.Errorf("nothing imported:\n%w", errors.Join(errs...))
	}
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

// optionalID reads a uid or gid column: empty and "." (CalipsoPlus's "unknown") are nil.
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
