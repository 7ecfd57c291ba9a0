package main

import (
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/calipsoplus/calipso/internal/demo"
)

// TestHelpListsEveryCommand: the usage text and the command table name the same
// commands (the hidden ones aside).
func TestHelpListsEveryCommand(t *testing.T) {
	var listed []string
	_, list, _ := strings.Cut(usage, "Commands:\n")
	for _, line := range strings.Split(list, "\n") {
		if !strings.HasPrefix(line, "  ") || strings.HasPrefix(line, "   ") {
			continue // a description's second line, or the end
		}
		synopsis, _, _ := strings.Cut(strings.TrimSpace(line), "  ") // before the description
		var words []string
		for _, w := range strings.Fields(synopsis) {
			if strings.ContainsAny(w[:1], "[-") || unicode.IsUpper(rune(w[0])) {
				break // the arguments
			}
			words = append(words, w)
		}
		listed = append(listed, strings.Join(words, " "))
	}
	for _, w := range listed {
		if _, ok := commands[w]; !ok {
			t.Errorf("help lists %q, which is no command", w)
		}
	}
	for w := range commands {
		if hidden := w == "help" || w == "-h" || w == demo.Subcommand; !hidden && !slices.Contains(listed, w) {
			t.Errorf("command %q is not in the help", w)
		}
	}
}

func TestLookup(t *testing.T) {
	tests := []struct {
		args     []string
		wantArgs []string
		wantErr  string
	}{
		{[]string{"user", "add", "bob", "--admin"}, []string{"bob", "--admin"}, ""},
		{[]string{"link", "bob", "p1"}, []string{"bob", "p1"}, ""},
		{[]string{"settings", "show", "prod"}, []string{"prod"}, ""},
		{[]string{"user"}, nil, "user: which one? (see `calipso help`)"},
		{[]string{"user", "frob"}, nil, `unknown command "user frob" (see ` + "`calipso help`)"},
		{[]string{"frob", "x"}, nil, `unknown command "frob" (see ` + "`calipso help`)"},
		{[]string{"settings"}, nil, "settings: want `settings check` or `settings show [PROFILE]`"},
		{[]string{"settings", "frob"}, nil, "settings: want `settings check` or `settings show [PROFILE]`"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, args, err := lookup(tt.args)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Errorf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(args, tt.wantArgs) {
				t.Errorf("lookup = %q, %v; want %q", args, err, tt.wantArgs)
			}
		})
	}
}
