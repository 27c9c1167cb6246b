package mandate

import (
	"errors"
	"fmt"
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
// it never holds a secret. Err, if set, is the internal cause; it is logged
// and never returned over the wire.
type Error struct {
	Code    string // one of the E* codes
	OAuth   string // RFC 6749 §5.2 / RFC 8707 / RFC 9449 error code, if it differs from the default for Code
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil && e.Message == "" {
		return e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and a formatted message.
// A %w verb in format wraps the cause as usual.
func Errorf(code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Message: err.Error(), Err: errors.Unwrap(err)}
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

// ErrorMessage returns the caller-safe message of err: the message of the
// first *Error in its chain, or a generic text for anything else.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
