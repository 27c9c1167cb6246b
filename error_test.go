package mandate

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// A cause (SQLite's text, a path) is in the log's text of an error and
// never in what a caller is told; Errorf keeps no cause at all.
func TestErrorCauseStaysInternal(t *testing.T) {
	cause := errors.New("SQL logic error: no such table: agents (/var/lib/mandate/mandate.db)")
	for _, tc := range []struct {
		name string
		err  error
		msg  string
	}{
		{"Wrapf", Wrapf(cause, EUNAVAILABLE, "store unavailable"), "store unavailable"},
		{"wrapped again", fmt.Errorf("listing agents: %w", Wrapf(cause, EUNAVAILABLE, "store unavailable")), "store unavailable"},
		{"a struct literal", &Error{Code: EUNAVAILABLE, OAuth: "temporarily_unavailable", Message: "try again later", Err: cause}, "try again later"},
		{"internal", Wrapf(cause, EINTERNAL, "agent %s: stored ceiling does not parse", "a"), InternalMessage},
		{"not ours", cause, InternalMessage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ErrorMessage(tc.err); got != tc.msg {
				t.Errorf("ErrorMessage = %q, want %q", got, tc.msg)
			}
			if !strings.Contains(tc.err.Error(), "no such table") {
				t.Errorf("Error() = %q: the log would lose the cause", tc.err.Error())
			}
			if !errors.Is(tc.err, cause) {
				t.Error("errors.Is does not find the cause")
			}
		})
	}
	e := Errorf(EINVALID, "scope %q is malformed", "x:")
	if e.Err != nil || e.Message != `scope "x:" is malformed` || ErrorMessage(e) != e.Message || e.Error() != e.Message {
		t.Errorf("Errorf: %+v", e)
	}
}

// A message that quotes what a caller sent has its secrets masked, in
// what the caller is told and in the log's text, however the error was
// made; a message that cuts a caller's long input masks before it cuts,
// so that not even the first half of a secret is left.
func TestErrorMessagesMaskSecrets(t *testing.T) {
	const token = "ghp_0123456789abcdefghijklmnopqrstuvwxyz"
	for name, err := range map[string]error{
		"Errorf":           Errorf(EINVALID, "client_id %q does not match", token),
		"OAuthErrorf":      OAuthErrorf(EUNAUTHORIZED, "invalid_client", "unknown agent %q", "spiffe://example.org/agent/"+token),
		"a struct literal": &Error{Code: EFORBIDDEN, Message: "scope mcp:crm:" + token + " is outside the ceiling"},
		"wrapped":          fmt.Errorf("minting: %w", Wrapf(errors.New("cause "+token), EUNAVAILABLE, "kid %s unknown", token)),
	} {
		if msg := ErrorMessage(err); strings.Contains(msg, "ghp_0123") || !strings.Contains(msg, "[secret:github_token]") {
			t.Errorf("%s: ErrorMessage = %q", name, msg)
		}
		if log := err.Error(); strings.Contains(log, "ghp_0123") {
			t.Errorf("%s: Error() = %q", name, log)
		}
	}
	// A list of scopes over the length a message repeats, with a token
	// across the cut.
	_, err := ParseScopeSet("mcp:crm:list" + strings.Repeat(" mcp:crm:x", 4) + " " + token + "  mcp:crm:y")
	if msg := ErrorMessage(err); err == nil || strings.Contains(msg, "ghp_0123") || !strings.Contains(msg, "two spaces") {
		t.Errorf("a long scope list: %v", err)
	}
}
