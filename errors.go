package calipso

import (
	"context"
	"errors"
	"fmt"
)

// Error codes: the kinds of failure every package reports, whatever its dependency.
// The HTTP layer maps each to one status (internal/server: statusOf), and users read
// the message of the 4xx kinds; the others name only the failing part.
const (
	EINVALID      = "invalid"      // the request or its data is wrong: 400
	EUNAUTHORIZED = "unauthorized" // not logged in, or credentials refused: 401
	EFORBIDDEN    = "forbidden"    // logged in, but not allowed: 403
	ENOTFOUND     = "not_found"    // no such thing (or not the caller's): 404
	ECONFLICT     = "conflict"     // a quota, or the thing's state, forbids it now: 409
	ETOOLARGE     = "too_large"    // a request body past the limit: 413
	ETHROTTLED    = "throttled"    // too many attempts (failed logins): 429, try again later
	EUNLAUNCHABLE = "unlaunchable" // valid, but cannot run as defined (volumes, image): 422
	EUPSTREAM     = "upstream"     // a remote service answered nonsense or refused us: 502
	EUNAVAILABLE  = "unavailable"  // a part (database, engine, user office) is down: 503
	ETIMEOUT      = "timeout"      // a part did not answer in time: 504
	EINTERNAL     = "internal"     // a bug: 500
)

// Codes lists every code, for the tables that must cover them all.
var Codes = []string{EINVALID, EUNAUTHORIZED, EFORBIDDEN, ENOTFOUND, ECONFLICT, ETOOLARGE, ETHROTTLED, EUNLAUNCHABLE,
	EUPSTREAM, EUNAVAILABLE, ETIMEOUT, EINTERNAL}

// Error is a failure of a known kind. Packages declare their sentinel errors with
// NewError, so that errors.Is still tells them apart and ErrorCode finds their kind
// through any wrapping.
type Error struct {
	Code    string
	Message string
}

// NewError returns an error of code whose text is message.
func NewError(code, message string) *Error { return &Error{Code: code, Message: message} }

// Errorf returns an error of code with a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string { return e.Message }

// ErrorCode is the code of the outermost *Error in err's chain: context deadlines are
// ETIMEOUT, a cancelled request EUNAVAILABLE, anything else EINTERNAL.
func ErrorCode(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, context.DeadlineExceeded):
		return ETIMEOUT
	case errors.Is(err, context.Canceled):
		return EUNAVAILABLE
	}
	return EINTERNAL
}

// ErrorMessage is the message of the outermost *Error in err's chain, without the
// context wrapped around it: what may be shown when the details may not.
func ErrorMessage(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Message
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	}
	return "internal error"
}
