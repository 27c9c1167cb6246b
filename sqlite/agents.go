package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
)

const agentColumns = "id, name, owner, ceiling, public_key, key_thumbprint, status, created_at, updated_at, max_depth, approval, approvers, labels"

func scanAgent(row interface{ Scan(...any) error }) (*mandate.Agent, error) {
	var a mandate.Agent
	var ceiling, status, approval, approvers, labels string
	var created, updated int64
	if err := row.Scan(&a.ID, &a.Name, &a.Owner, &ceiling, &a.PublicKey, &a.KeyID, &status, &created, &updated,
		&a.MaxDepth, &approval, &approvers, &labels); err != nil {
		return nil, err
	}
	c, err := mandate.ParseScopeSet(ceiling)
	if err != nil {
		return nil, mandate.Wrapf(err, mandate.EINTERNAL, "agent %s: stored ceiling does not parse", a.ID)
	}
	if a.Approval, err = mandate.ParseScopeSet(approval); err != nil {
		return nil, mandate.Wrapf(err, mandate.EINTERNAL, "agent %s: stored approval scopes do not parse", a.ID)
	}
	a.Approvers, a.Labels = splitList(approvers), splitList(labels)
	a.Ceiling, a.Status = c, mandate.AgentStatus(status)
	a.CreatedAt, a.UpdatedAt = time.UnixMilli(created).UTC(), time.UnixMilli(updated).UTC()
	return &a, nil
}

// CreateAgent implements mandate.AgentStore.
func (s *Store) CreateAgent(ctx context.Context, a *mandate.Agent, ev *mandate.Event) error {
	if err := a.Validate(); err != nil {
		return err
	}
	// The cache keeps a copy of its own: the caller may go on using a.
	stored := *a
	stored.Ceiling, stored.Approval = slices.Clone(a.Ceiling), slices.Clone(a.Approval)
	stored.Approvers, stored.PublicKey = slices.Clone(a.Approvers), slices.Clone(a.PublicKey)
	stored.Labels = slices.Clone(a.Labels)
	return s.exec(ctx, func(ctx context.Context, tx *writeTx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO agents("+agentColumns+") VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
			a.ID, a.Name, a.Owner, a.Ceiling.String(), a.PublicKey, a.KeyID, string(a.Status), ms(a.CreatedAt), ms(a.UpdatedAt),
			a.MaxDepth, a.Approval.String(), strings.Join(a.Approvers, " "), strings.Join(a.Labels, " "))
		if isUnique(err) {
			return mandate.Errorf(mandate.ECONFLICT, "agent %q is registered already", a.Name)
		}
		if err != nil {
			return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
		}
		return nil
	}, func() {
		s.mu.Lock()
		s.agents[stored.ID] = &stored
		s.mu.Unlock()
	}, ev)
}

// splitList splits a space-separated column; an empty one is an empty list.
func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, " ")
}

// Agent implements mandate.AgentGetter. It answers from memory after the
// first read of each agent: the store is the only writer of the table.
func (s *Store) Agent(ctx context.Context, id string) (*mandate.Agent, error) {
	s.mu.RLock()
	a, ok := s.agents[id]
	s.mu.RUnlock()
	if ok {
		return a, nil
	}
	a, err := scanAgent(s.db.QueryRowContext(ctx, "SELECT "+agentColumns+" FROM agents WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, mandate.Errorf(mandate.ENOTFOUND, "no agent %q is registered", id)
	}
	if err != nil {
		return nil, mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
	}
	s.mu.Lock()
	if cached, ok := s.agents[id]; ok { // a concurrent write won
		a = cached
	} else {
		s.agents[id] = a
	}
	s.mu.Unlock()
	return a, nil
}

// Agents implements mandate.AgentStore.
func (s *Store) Agents(ctx context.Context) ([]*mandate.Agent, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT "+agentColumns+" FROM agents ORDER BY name")
	if err != nil {
		return nil, mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
	}
	defer rows.Close()
	var out []*mandate.Agent
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// SetAgentStatus implements mandate.AgentStore.
func (s *Store) SetAgentStatus(ctx context.Context, id string, status mandate.AgentStatus, ev *mandate.Event) (*mandate.Agent, error) {
	now := s.cfg.Now()
	var updated *mandate.Agent
	err := s.exec(ctx, func(ctx context.Context, tx *writeTx) error {
		res, err := tx.ExecContext(ctx, "UPDATE agents SET status = ?, updated_at = ? WHERE id = ?", string(status), ms(now), id)
		if err != nil {
			return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return mandate.Errorf(mandate.ENOTFOUND, "no agent %q is registered", id)
		}
		updated, err = scanAgent(tx.QueryRowContext(ctx, "SELECT "+agentColumns+" FROM agents WHERE id = ?", id))
		return err
	}, func() {
		s.mu.Lock()
		s.agents[id] = updated
		s.mu.Unlock()
	}, ev)
	return updated, err
}

// Revoke implements mandate.RevocationStore.
func (s *Store) Revoke(ctx context.Context, r *mandate.Revocation, ev *mandate.Event) error {
	return s.exec(ctx, func(ctx context.Context, tx *writeTx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO revocations(mandate_id, expires_at, revoked_at, revoked_by, reason)
			VALUES(?,?,?,?,?) ON CONFLICT(mandate_id) DO NOTHING`,
			r.MandateID, ms(r.ExpiresAt), ms(r.RevokedAt), r.RevokedBy, r.Reason)
		if err != nil {
			return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
		}
		return nil
	}, func() {
		s.mu.Lock()
		s.revoked[r.MandateID] = r.ExpiresAt
		s.mu.Unlock()
	}, ev)
}

// IsRevoked implements mandate.RevocationChecker from memory. Revocations of
// expired mandates are forgotten by PruneRevocations (from memory) and
// PruneMandates (from the table): an expired mandate is refused anyway.
func (s *Store) IsRevoked(ctx context.Context, id string) (bool, error) {
	s.mu.RLock()
	_, ok := s.revoked[id]
	s.mu.RUnlock()
	return ok, nil
}

// PruneRevocations drops from memory the revocations of mandates that have
// expired, bounding memory by the number of live mandates. The rows stay
// until PruneMandates.
func (s *Store) PruneRevocations(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id, exp := range s.revoked {
		if !now.Before(exp) {
			delete(s.revoked, id)
			n++
		}
	}
	return n
}

// RunPruner prunes expired revocations every interval until ctx ends, by
// the store's clock but never ahead of the time elapsed since Open
// (Config.Elapsed): a wall clock that jumps forward and is corrected later
// must not forget the revocation of a mandate that is live again.
func (s *Store) RunPruner(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.pruneOnce()
		}
	}
}

// pruneOnce is one pass of RunPruner.
func (s *Store) pruneOnce() int { return s.PruneRevocations(s.pruneNow()) }

// LiveIssuances lists the issuance records of live mandates (expiring
// after now, not revoked) held by agentID, or, if agentID is "", the root
// of task taskID: what a revocation by agent or by task revokes
// (descendants are refused through their ancestors). It reads the
// issuance events of the agent's last liveWindow, or the task's root: it
// is for operators' revocations, not for a hot path.
func (s *Store) LiveIssuances(ctx context.Context, agentID, taskID string, now time.Time) ([]*mandate.Issuance, error) {
	f := mandate.EventFilter{Agent: agentID, Since: now.Add(-liveWindow)}
	if agentID == "" {
		f = mandate.EventFilter{Task: taskID, Type: mandate.EventMandateIssued}
	}
	var out []*mandate.Issuance
	err := s.walkEvents(ctx, f, false, func(e mandate.LoggedEvent) error {
		if !isIssuance(e.Event) {
			return nil
		}
		rec, err := mandate.IssuanceOf(e.Event)
		if err != nil {
			return mandate.Wrapf(err, mandate.EINTERNAL, "audit log entry %d", e.Index)
		}
		if !rec.ExpiresAt.After(now) {
			return nil
		}
		if revoked, _ := s.IsRevoked(ctx, rec.MandateID); revoked {
			return nil // not live: revoking it again would say so twice
		}
		if rec.ParentID != "" { // the task's purpose, as Issuance gives it
			if rec.TaskPurpose, err = s.taskPurpose(ctx, rec.TaskID); err != nil {
				return err
			}
		}
		out = append(out, rec)
		return nil
	})
	return out, err
}

// liveWindow bounds how far back LiveIssuances looks for an agent's live
// mandates: no mandate lives longer (issuer.MaxTTL is an hour).
const liveWindow = 24 * time.Hour
