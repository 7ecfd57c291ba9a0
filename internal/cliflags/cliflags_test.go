package cliflags_test

import (
	"slices"
	"testing"

	"github.com/calipsoplus/calipso/internal/cliflags"
)

func TestParse(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		n       int
		pos     []string
		admin   bool
		uid     *int
		wantErr bool
	}{
		{"flags after positional", []string{"bob", "--admin", "--uid", "7"}, 1, []string{"bob"}, true, ptr(7), false},
		{"flags first", []string{"--admin", "bob"}, 1, []string{"bob"}, true, nil, false},
		{"too many", []string{"bob", "eve"}, 1, nil, false, nil, true},
		{"negative id", []string{"bob", "--uid", "-1"}, 1, nil, false, nil, true},
		{"flag after --", []string{"bob", "--", "--admin"}, 1, nil, false, nil, true},
		{"unknown flag", []string{"bob", "--nope"}, 1, nil, false, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := cliflags.New("user add")
			admin := fs.Bool("admin", false, "")
			uid := cliflags.ID(fs, "uid")
			pos, err := cliflags.Parse(fs, c.args, c.n, "user add NAME")
			if (err != nil) != c.wantErr {
				t.Fatalf("Parse(%q) error %v, want error %v", c.args, err, c.wantErr)
			}
			if err != nil {
				return
			}
			if !slices.Equal(pos, c.pos) || *admin != c.admin || (*uid == nil) != (c.uid == nil) || (c.uid != nil && **uid != *c.uid) {
				t.Errorf("Parse(%q) = %q admin=%v uid=%v", c.args, pos, *admin, *uid)
			}
		})
	}
}

func ptr(n int) *int { return &n }
