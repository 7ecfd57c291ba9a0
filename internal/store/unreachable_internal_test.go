package store

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/go-sql-driver/mysql"
)

// TestWrapUnreachable: the errors of a database that cannot be reached are
// ErrUnavailable (a 503), whatever part of the way failed; others are not.
func TestWrapUnreachable(t *testing.T) {
	s := &Store{dialect: mysqlDialect}
	dial := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	unavailable := map[string]error{
		"host name gone":     dial(&net.DNSError{Err: "no such host", Name: "db", Server: "127.0.0.11:53", IsNotFound: true}),
		"DNS server down":    dial(&net.DNSError{Err: "server misbehaving", Name: "db", IsTemporary: true}),
		"refused":            dial(os.NewSyscallError("connect", syscall.ECONNREFUSED)),
		"host unreachable":   dial(os.NewSyscallError("connect", syscall.EHOSTUNREACH)),
		"network down":       dial(os.NewSyscallError("connect", syscall.ENETUNREACH)),
		"socket gone":        &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.ENOENT)},
		"reset":              &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)},
		"bad connection":     driver.ErrBadConn,
		"invalid connection": fmt.Errorf("login: %w", mysql.ErrInvalidConn),
		"too many":           &mysql.MySQLError{Number: 1040, Message: "Too many connections"},
		"shutting down":      &mysql.MySQLError{Number: 1053, Message: "Server shutdown in progress"},
		"killed":             &mysql.MySQLError{Number: 1927, Message: "Connection was killed"},
		"read-only":          &mysql.MySQLError{Number: 1290, Message: "The MariaDB server is running with the --read-only option"},
	}
	for name, err := range unavailable {
		if got := s.wrap(err); !errors.Is(got, ErrUnavailable) || !errors.Is(got, err) {
			t.Errorf("%s: wrap(%v) = %v, want ErrUnavailable wrapping it", name, err, got)
		}
	}
	for name, err := range map[string]error{
		"syntax":    &mysql.MySQLError{Number: 1064, Message: "You have an error in your SQL syntax"},
		"duplicate": &mysql.MySQLError{Number: 1062, Message: "Duplicate entry"},
		"other":     errors.New("something else"),
	} {
		if errors.Is(s.wrap(err), ErrUnavailable) {
			t.Errorf("%s: wrap(%v) is ErrUnavailable", name, err)
		}
	}
}
