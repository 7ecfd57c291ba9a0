package federation

import (
	"errors"
	"log/slog"
)

// ErrInvalidResponse is the kind of every refused SAML response; errors.Is
// also matches the specific reason (ErrAudience, ErrReplay, ...).
var ErrInvalidResponse = errors.New("invalid SAML response")

// Reasons a SAML response is refused. Their texts are ours and safe to log;
// users should still only see a generic "login failed".
var (
	ErrMalformed        = errors.New("malformed response")
	ErrUnsigned         = errors.New("neither response nor assertion is signed")
	ErrSignature        = errors.New("signature verification failed")
	ErrWrapping         = errors.New("unexpected document structure (signature wrapping)")
	ErrIssuer           = errors.New("issuer is not the configured identity provider")
	ErrAudience         = errors.New("audience mismatch")
	ErrRecipient        = errors.New("recipient mismatch")
	ErrDestination      = errors.New("destination mismatch")
	ErrExpired          = errors.New("assertion expired")
	ErrNotYetValid      = errors.New("assertion not yet valid")
	ErrReplay           = errors.New("assertion already used")
	ErrReplayCacheFull  = errors.New("replay cache full")
	ErrInResponseTo     = errors.New("response does not answer a pending login request")
	ErrIdPStatus        = errors.New("identity provider reported a failure")
	ErrMissingAttribute = errors.New("required attribute missing")
)

// ErrNoSingleLogout means the identity provider publishes no HTTP-Redirect
// single logout endpoint.
var ErrNoSingleLogout = errors.New("identity provider has no single logout endpoint")

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
