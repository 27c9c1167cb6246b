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
