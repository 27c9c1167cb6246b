package mandate

import (
	"errors"
	"fmt"

	"github.com/mandatehq/mandate/internal/secret"
)

// Application error codes. Each maps to one HTTP status and, at the OAuth
// endpoints, to an RFC 6749 error code unless the error names one itself.
const (
	EINVALID      = "invalid"      // the request is malformed or breaks a rule
	ENOTFOUND     = "not_found"    // the thing asked for does not exist
	EUNAUTHORIZED = "unauthorized" // no or bad credentials
	EFORBIDDEN    = "forbidden"    // authenticated, but not allowed
	ECONFLICT     = "conflict"     // exists already, or changed meanwhile
	ETOOLARGE     = "too_large"    // a body or field over its limit
	EUNAVAILABLE  = "unavailable"  // a dependency (the store, the log) cannot serve now
	EINTERNAL     = "internal"     // a bug or an unexpected failure; details are logged, not returned
)

// Error is the application error. Message is safe to show to the caller:
// it never holds a secret, nor the text of an internal cause. Err, if set,
// is the internal cause (SQLite's text, a file path): it is logged and
// never returned over the wire.
//
// Error() is for logs: the message and the cause. What a caller is told is
// ErrorMessage's, which never holds the cause.
//
// A message may quote what a caller sent (a scope, a client_id, a JWT's
// kid), and callers put credentials where they do not belong: both
// ErrorMessage and Error mask every secret the detectors of
// internal/secret find ("[secret:github_token]"), so that what a caller
// is told, what an audit event's reason says and what the log reads hold
// none (docs/events.md, "Refusals").
type Error struct {
	Code    string // one of the E* codes
	OAuth   string // RFC 6749 §5.2 / RFC 8707 / RFC 9449 error code, if it differs from the default for Code
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return secret.Mask(e.Message)
	}
	cause := e.Err.Error()
	if e.Message == "" || e.Message == cause { // a typed cause that is its own message
		return secret.Mask(cause)
	}
	return secret.Mask(e.Message + ": " + cause)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and a message formatted as
// fmt.Sprintf formats it. It never wraps: the message is the caller's to
// read, and a cause's text must not reach callers. To keep a cause for the
// log, use Wrapf (go vet refuses %w here).
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrapf returns an *Error with the given code, the formatted message (safe
// for callers), and cause as its internal cause: errors.Is and errors.As
// see it, the log reads it (Error), callers never do (ErrorMessage).
func Wrapf(cause error, code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Err: cause}
}

// OAuthErrorf returns an *Error carrying a specific OAuth error code, such
// as "invalid_scope" or "invalid_dpop_proof".
func OAuthErrorf(code, oauth, format string, args ...any) *Error {
	e := Errorf(code, format, args...)
	e.OAuth = oauth
	return e
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL for
// any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// InternalMessage is what a caller is told of an internal error: the
// details are in the log.
const InternalMessage = "internal error"

// ErrorMessage returns the caller-safe message of err: the message of the
// first *Error in its chain, never its cause, with its secrets masked;
// InternalMessage for an EINTERNAL error (a bug's details are for the log)
// or any other error. It is the one way to the text a caller is told and
// a refusal's audit event says, so that it needs no masking after; what
// builds a message must not cut a caller's words before it is masked (a
// text cut in the middle of a secret keeps a part that no detector finds).
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Code != EINTERNAL && e.Message != "" {
		return secret.Mask(e.Message)
	}
	return InternalMessage
}
