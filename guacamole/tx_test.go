package guacamole

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestErrorKinds(t *testing.T) {
	tests := []struct {
		name        string
		err         error
		retry, down bool
	}{
		{"mysql deadlock", &mysql.MySQLError{Number: 1213}, true, false},
		{"mysql lock wait timeout", &mysql.MySQLError{Number: 1205}, true, false},
		{"mysql duplicate key", &mysql.MySQLError{Number: 1062}, false, false},
		{"mysql access denied", &mysql.MySQLError{Number: 1045}, false, false},
		{"mysql too many connections", &mysql.MySQLError{Number: 1040}, false, true},
		{"mysql invalid connection", mysql.ErrInvalidConn, false, true},
		{"postgres deadlock", &pgconn.PgError{Code: "40P01"}, true, false},
		{"postgres serialization", &pgconn.PgError{Code: "40001"}, true, false},
		{"postgres admin shutdown", &pgconn.PgError{Code: "57P01"}, false, true},
		{"postgres bad password", &pgconn.PgError{Code: "28P01"}, false, false},
		{"postgres conn closed", pgconn.ErrConnClosed, false, true},
		{"refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, false, true},
		{"bad conn", driver.ErrBadConn, false, true},
		{"cancelled", context.Canceled, false, false},
		{"plain", errors.New("syntax error"), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wrapped := fmt.Errorf("insert: %w", tt.err)
			if got := retryable(wrapped); got != tt.retry {
				t.Errorf("retryable = %v, want %v", got, tt.retry)
			}
			if got := errors.Is(classify(wrapped), ErrUnavailable); got != tt.down {
				t.Errorf("classify is ErrUnavailable = %v, want %v", got, tt.down)
			}
			if !errors.Is(classify(wrapped), tt.err) {
				t.Errorf("classify lost the cause")
			}
		})
	}
}

func TestPlaceholders(t *testing.T) {
	q := `SELECT a FROM t WHERE b = ? AND c IN (?, ?)`
	if got := New(nil, MySQL, Options{}).q(q); got != q {
		t.Errorf("MySQL q = %q", got)
	}
	if got, want := New(nil, Postgres, Options{}).q(q), `SELECT a FROM t WHERE b = $1 AND c IN ($2, $3)`; got != want {
		t.Errorf("Postgres q = %q, want %q", got, want)
	}
}
