package httpapi

import (
	"context"
	"net/http"

	"github.com/mandatehq/mandate"
)

// Refusals of a credential (the admin's, an approver's, an agent's client
// assertion at the revocation endpoint) are audited: anyone can send one,
// so at most credentialRate a second in bursts of credentialBurst, and
// each recorded one says how many were not since the one before
// (details dropped). docs/events.md lists what is audited and what is not.
const (
	credentialRate  = 10
	credentialBurst = 100
)

// refusedCredential records the refusal of r for its credential: a
// decision event naming the route (resource), the credential it needs
// (details credential), and who presented another one where it is known
// (by: "admin" at an approver's route). No agent, task or mandate: the
// request proved nobody.
func (s *Server) refusedCredential(r *http.Request, credential, by string, err error) {
	ok, dropped := s.credRefusals.AllowDropped(s.cfg.Now())
	if !ok {
		return
	}
	details := map[string]any{"credential": credential, "error": mandate.ErrorCode(err)}
	if dropped > 0 {
		details["dropped"] = dropped
	}
	s.appendRefusal(r.Context(), &mandate.Event{V: mandate.EventVersion, Time: s.cfg.Now().UnixNano(), Type: mandate.EventDecision,
		Action: "authenticate", Resource: r.Pattern, Outcome: mandate.OutcomeDeny, By: by,
		Reason: mandate.ClipReason(mandate.ErrorMessage(err)), Details: details})
}

// appendRefusal writes a refusal's event; the refusal stands if it
// cannot be written (the log has why).
func (s *Server) appendRefusal(ctx context.Context, ev *mandate.Event) {
	if err := s.cfg.Events.Append(context.WithoutCancel(ctx), ev); err != nil {
		logFailure(ctx, s.log, unavailableLogs.refusal, "refusal not audited", err, "action", ev.Action, "resource", ev.Resource)
	}
}
