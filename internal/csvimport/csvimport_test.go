package csvimport

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/calipsoplus/calipso/experiments"
)

func file(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "in.csv")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestUsers(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    int      // rows, when no error
		errWant []string // parts of the error, all lines named at once
	}{
		{"header and identity", "username,is_admin,uid,gid,home\ndave,false,3000,3000,/home/dave\nerin,true,,,\n", 2, nil},
		{"name only", "frank\n", 1, nil},
		{"bad lines", "frank\n../root\ngina,maybe\nh,false,x,1\n", 0, []string{"nothing imported", "line 2: username", "line 3: is_admin", "line 4: uid"}},
		{"too many fields", "a,true,1,1,/h,extra\n", 0, []string{"line 1: 6 fields, want 1 to 5"}},
		{"broken quoting", "a\n\"b\n", 0, []string{"in.csv: "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := Users(file(t, tt.text))
			if tt.errWant == nil {
				if err != nil || len(rows) != tt.want {
					t.Fatalf("Users = %d rows, %v; want %d", len(rows), err, tt.want)
				}
				return
			}
			for _, w := range tt.errWant {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v, want it to contain %q", err, w)
				}
			}
		})
	}
	rows, err := Users(file(t, "username\ndave,false,3000,3000,/home/dave\nerin,true,.,.\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d := rows[0]; d.Line != 2 || d.Value.Name != "dave" || *d.Value.UID != 3000 || *d.Value.GID != 3000 || d.Value.Home != "/home/dave" {
		t.Errorf("dave = %+v", d)
	}
	if e := rows[1]; e.Line != 3 || !e.Value.Admin || e.Value.UID != nil || e.Value.GID != nil {
		t.Errorf("erin = %+v, want an admin with no identity ('.' is unknown)", e)
	}
}

func TestExperiments(t *testing.T) {
	rows, err := Experiments(file(t, "proposal_id,subject,body,beam_line,uid,gid\n2024001,Crystals,,BL01,.,.\n2024002,Powder,x,BL02,4000,4000\n"))
	if err != nil || len(rows) != 2 {
		t.Fatalf("Experiments = %+v, %v", rows, err)
	}
	if e := rows[1].Value; e.ProposalID != "2024002" || e.Subject != "Powder" || e.BeamLine != "BL02" || *e.UID != 4000 {
		t.Errorf("second = %+v", e)
	}
	if _, err := Experiments(file(t, " ,x\n")); err == nil || !strings.Contains(err.Error(), "line 1: proposal_id is empty") {
		t.Errorf("empty proposal: %v", err)
	}
}

func TestSessions(t *testing.T) {
	roots := experiments.Roots{Datasets: "/data", Output: "/results"}
	rows, err := Sessions(file(t, "2024001,S1,first,,2024-01-01,2024-01-02,\"{'/2024001': {'bind': '/data', 'mode': 'ro'}}\"\n2024001,S2\n"), roots)
	if err != nil || len(rows) != 2 {
		t.Fatalf("Sessions = %+v, %v", rows, err)
	}
	if s := rows[1].Value; s.Proposal != "2024001" || s.SessionNumber != "S2" || s.DataSetPath != "[]" {
		t.Errorf("second = %+v, want no volumes", s)
	}
	_, err = Sessions(file(t, "2024001,S3,,,,,\"{'/../etc': {'bind': '/data'}}\"\n2024001,S4,,,yesterday\n2024001, \n"), roots)
	for _, w := range []string{"line 1: data_set_path", "line 2: start_date", "line 3: session_number is empty"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("err = %v, want it to contain %q", err, w)
		}
	}
}

func TestApplyNamesTheFailingLine(t *testing.T) {
	rows := []Row[string]{{1, "a"}, {4, "b"}, {5, "c"}}
	var applied []string
	err := Apply("x.csv", rows, func(v string) error {
		if v == "b" {
			return errors.New("no")
		}
		applied = append(applied, v)
		return nil
	})
	if err == nil || err.Error() != "x.csv line 4: no (lines before it were imported; importing again is safe)" || len(applied) != 1 {
		t.Errorf("Apply = %v after %q", err, applied)
	}
}
