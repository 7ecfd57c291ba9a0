package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/go-sql-driver/mysql"

	"github.com/calipsoplus/calipso/internal/calipsoplus"
	"github.com/calipsoplus/calipso/internal/store"
)

// importCalipsoPlus is `import-calipsoplus --dsn DSN` (internal/calipsoplus says what
// is copied and what is not).
func importCalipsoPlus(ctx context.Context, db *store.Store, args []string, stdout io.Writer) error {
	fs := newFlagSet("import-calipsoplus")
	dsn := fs.String("dsn", "", "")
	pos, err := splitFlags(fs, args)
	if err != nil {
		return fmt.Errorf("import-calipsoplus: %w", err)
	}
	if *dsn == "" || len(pos) > 0 {
		return errors.New("usage: calipso import-calipsoplus --dsn 'user:pass@tcp(host:3306)/calipsoplus'")
	}
	src, err := mysql.ParseDSN(*dsn)
	if err != nil {
		return fmt.Errorf("import-calipsoplus: --dsn: %w", err)
	}
	rep, err := calipsoplus.Import(ctx, db, *src)
	if err != nil {
		return fmt.Errorf("import-calipsoplus: %w", err)
	}
	_, err = io.WriteString(stdout, rep.String())
	return err
}
