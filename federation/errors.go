package federation

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/calipsoplus/calipso"
)

// ErrInvalidResponse is the kind of every refused SAML response; errors.Is
// also matches the specific reason (ErrAudience, ErrReplay, ...).
var ErrInvalidResponse = calipso.NewError(calipso.EUNAUTHORIZED, "invalid SAML response")

// Reasons a SAML response is refused. Their texts are ours and safe to log;
// users should still only see a generic "login failed".
var (
	ErrMalformed        = calipso.NewError(calipso.EUNAUTHORIZED, "malformed response")
	ErrUnsigned         = calipso.NewError(calipso.EUNAUTHORIZED, "neither response nor assertion is signed")
	ErrSignature        = calipso.NewError(calipso.EUNAUTHORIZED, "signature verification failed")
	ErrWrapping         = calipso.NewError(calipso.EUNAUTHORIZED, "unexpected document structure (signature wrapping)")
	ErrIssuer           = calipso.NewError(calipso.EUNAUTHORIZED, "issuer is not the configured identity provider")
	ErrAudience         = calipso.NewError(calipso.EUNAUTHORIZED, "audience mismatch")
	ErrRecipient        = calipso.NewError(calipso.EUNAUTHORIZED, "recipient mismatch")
	ErrDestination      = calipso.NewError(calipso.EUNAUTHORIZED, "destination mismatch")
	ErrExpired          = calipso.NewError(calipso.EUNAUTHORIZED, "assertion expired")
	ErrNotYetValid      = calipso.NewError(calipso.EUNAUTHORIZED, "assertion not yet valid")
	ErrReplay           = calipso.NewError(calipso.EUNAUTHORIZED, "assertion already used")
	ErrReplayCacheFull  = calipso.NewError(calipso.EUNAVAILABLE, "replay cache full")
	ErrInResponseTo     = calipso.NewError(calipso.EUNAUTHORIZED, "response does not answer a pending login request")
	ErrIdPStatus        = calipso.NewError(calipso.EUNAUTHORIZED, "identity provider reported a failure")
	ErrMissingAttribute = calipso.NewError(calipso.EUNAUTHORIZED, "required attribute missing")
	ErrMarkupInHash     = calipso.NewError(calipso.EUNAUTHORIZED, "the EAAHash holds markup or control characters")
	ErrNoPendingLogout  = calipso.NewError(calipso.EUNAUTHORIZED, "logout response answers no logout this browser started")
)

// ErrNoSingleLogout means the identity provider publishes no HTTP-Redirect
// single logout endpoint.
var ErrNoSingleLogout = calipso.NewError(calipso.EINVALID, "identity provider has no single logout endpoint")

// ResponseError is a refused SAML response. Error() names only the reason;
// Detail holds internal diagnostics (possibly IdP-supplied text) for logs.
type ResponseError struct {
	Reason error
	Detail string
}

func (e *ResponseError) Error() string { return ErrInvalidResponse.Error() + ": " + e.Reason.Error() }

// Unwrap lets errors.Is match both ErrInvalidResponse and the reason.
func (e *ResponseError) Unwrap() []error { return []error{ErrInvalidResponse, e.Reason} }

// LogValue includes the internal detail when the error is logged with slog.
func (e *ResponseError) LogValue() slog.Value {
	return slog.GroupValue(slog.String("reason", e.Reason.Error()), slog.String("detail", e.Detail))
}

func refuse(reason error, detail string) error {
	return &ResponseError{Reason: reason, Detail: detail}
}

// CheckHash refuses an EAAHash that holds markup or control characters: a hash is an
// opaque token (hex, base64, "idp!sp!id" or "id@scope"), and one with markup is an
// attack on whatever shows it (the frontend, the user office, a log viewer).
func CheckHash(hash string) error {
	if i := strings.IndexFunc(hash, func(r rune) bool {
		return strings.ContainsRune("<>\"'&`", r) || r < 0x20 || r == 0x7f
	}); i >= 0 {
		return fmt.Errorf("%w: %q at byte %d", ErrMarkupInHash, hash[i:i+1], i)
	}
	return nil
}
