package sqlite

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/mandatehq/mandate"
)

// UsedAssertions implements mandate.UsedAssertions: the assertions named
// by the issuance events at or after since, then those RecordAssertion
// recorded.
func (s *Store) UsedAssertions(ctx context.Context, since, now time.Time, fn func(agentID, jti string, exp time.Time) error) error {
	return s.UsedAssertionsFrom(0).UsedAssertions(ctx, since, now, fn)
}

// UsedFrom is the mandate.UsedAssertions of the issuance events from a log
// position on, and of every assertion RecordAssertion recorded: what an
// issuer restores on top of a replay snapshot that covers the log up to
// that position. Reading only the events after the snapshot is what makes
// a start after a burst of issuances cheap; the rows of used_assertions
// are few (an assertion used without an issuance) and read in full.
type UsedFrom struct {
	s    *Store
	from int64
	// events counts the issuance events read, for tests and the start's
	// log line.
	events atomic.Int64
}

// UsedAssertionsFrom returns the used assertions of the issuance events at
// log positions from and after (0: the whole log), and of RecordAssertion.
func (s *Store) UsedAssertionsFrom(from int64) *UsedFrom { return &UsedFrom{s: s, from: from} }

// Events is how many issuance events UsedAssertions has read.
func (u *UsedFrom) Events() int64 { return u.events.Load() }

// UsedAssertions implements mandate.UsedAssertions.
func (u *UsedFrom) UsedAssertions(ctx context.Context, since, now time.Time, fn func(agentID, jti string, exp time.Time) error) error {
	s := u.s
	for _, typ := range []string{mandate.EventMandateIssued, mandate.EventMandateDelegated} {
		err := s.walkEvents(ctx, mandate.EventFilter{Type: typ, Since: since, After: u.from}, false, func(e mandate.LoggedEvent) error {
			u.events.Add(1)
			rec, err := mandate.IssuanceOf(e.Event)
			if err != nil || rec.AssertionID == "" || !rec.AssertionExpiry.After(now) {
				return nil
			}
			return fn(rec.AgentID, rec.AssertionID, rec.AssertionExpiry)
		})
		if err != nil {
			return err
		}
	}
	rows, err := s.db.QueryContext(ctx, `SELECT agent_id, jti, expires_at FROM used_assertions WHERE used_at >= ? AND expires_at > ?`,
		ms(since), ms(now))
	if err != nil {
		return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
	}
	defer rows.Close()
	for rows.Next() {
		var agent, jti string
		var exp int64
		if err := rows.Scan(&agent, &jti, &exp); err != nil {
			return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
		}
		if err := fn(agent, jti, time.UnixMilli(exp)); err != nil {
			return err
		}
	}
	return rows.Err()
}
