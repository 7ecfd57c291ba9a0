package calipso_test

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/calipsoplus/calipso"
)

func TestErrorCode(t *testing.T) {
	notFound := calipso.NewError(calipso.ENOTFOUND, "not found")
	cases := []struct {
		err           error
		code, message string
	}{
		{nil, "", ""},
		{notFound, calipso.ENOTFOUND, "not found"},
		{fmt.Errorf("image %q: %w", "x", notFound), calipso.ENOTFOUND, "not found"},
		{calipso.Errorf(calipso.EINVALID, "page %d", 0), calipso.EINVALID, "page 0"},
		{fmt.Errorf("start: %w", context.DeadlineExceeded), calipso.ETIMEOUT, "timed out"},
		{context.Canceled, calipso.EUNAVAILABLE, "internal error"},
		{fmt.Errorf("plain"), calipso.EINTERNAL, "internal error"},
	}
	for _, c := range cases {
		if got := calipso.ErrorCode(c.err); got != c.code {
			t.Errorf("ErrorCode(%v) = %q, want %q", c.err, got, c.code)
		}
		if got := calipso.ErrorMessage(c.err); got != c.message {
			t.Errorf("ErrorMessage(%v) = %q, want %q", c.err, got, c.message)
		}
	}
}

// TestSentinelErrorsHaveACode: every package-level error variable of the module is
// made with calipso.NewError, so that a new kind of error cannot reach a user as a
// 500 because nobody gave it a status.
func TestSentinelErrorsHaveACode(t *testing.T) {
	fset := token.NewFileSet()
	var bad []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != "." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			g, ok := decl.(*ast.GenDecl)
			if !ok || g.Tok != token.VAR {
				continue
			}
			for _, spec := range g.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if !strings.HasPrefix(strings.ToLower(name.Name), "err") || i >= len(vs.Values) {
						continue
					}
					call, ok := vs.Values[i].(*ast.CallExpr)
					if !ok {
						continue
					}
					if sel, ok := call.Fun.(*ast.SelectorExpr); ok {
						if pkg, ok := sel.X.(*ast.Ident); ok && (pkg.Name == "errors" || pkg.Name == "fmt") {
							bad = append(bad, fmt.Sprintf("%s: %s", fset.Position(name.Pos()), name.Name))
						}
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bad {
		t.Errorf("%s is made with errors.New or fmt.Errorf: use calipso.NewError with a code", b)
	}
}
