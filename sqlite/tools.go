package sqlite

import (
	"context"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
)

var _ mandate.ToolPinStore = (*Store)(nil)

// ToolPins implements mandate.ToolPinStore.
func (s *Store) ToolPins(ctx context.Context, server string) ([]*mandate.ToolPin, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT server, name, status, hash, definition, pending_hash, pending_definition,
		findings, first_seen, updated_at, approved_by FROM tool_pins WHERE ? = '' OR server = ? ORDER BY server, name`, server, server)
	if err != nil {
		return nil, mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
	}
	defer rows.Close()
	var out []*mandate.ToolPin
	for rows.Next() {
		var p mandate.ToolPin
		var status, findings string
		var first, updated int64
		if err := rows.Scan(&p.Server, &p.Name, &status, &p.Hash, &p.Definition, &p.PendingHash, &p.PendingDefinition,
			&findings, &first, &updated, &p.ApprovedBy); err != nil {
			return nil, mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
		}
		p.Status = mandate.ToolStatus(status)
		if findings != "" {
			p.Findings = strings.Split(findings, "\n")
		}
		p.FirstSeen, p.UpdatedAt = time.UnixMilli(first).UTC(), time.UnixMilli(updated).UTC()
		out = append(out, &p)
	}
	if err := rows.Err(); err != nil {
		return nil, mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
	}
	return out, nil
}

// SaveToolPin implements mandate.ToolPinStore.
func (s *Store) SaveToolPin(ctx context.Context, p *mandate.ToolPin, ev *mandate.Event) error {
	if p.Server == "" || p.Name == "" || p.Hash == "" || len(p.Definition) == 0 {
		return mandate.Errorf(mandate.EINVALID, "a tool pin needs a server, a name, a hash and a definition")
	}
	for _, f := range p.Findings {
		if strings.Contains(f, "\n") {
			return mandate.Errorf(mandate.EINVALID, "a finding is one line")
		}
	}
	return s.exec(ctx, func(ctx context.Context, tx *writeTx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO tool_pins(server, name, status, hash, definition, pending_hash, pending_definition,
			findings, first_seen, updated_at, approved_by) VALUES(?,?,?,?,?,?,?,?,?,?,?)
			ON CONFLICT(server, name) DO UPDATE SET status = excluded.status, hash = excluded.hash, definition = excluded.definition,
			pending_hash = excluded.pending_hash, pending_definition = excluded.pending_definition, findings = excluded.findings,
			updated_at = excluded.updated_at, approved_by = excluded.approved_by`,
			p.Server, p.Name, string(p.Status), p.Hash, p.Definition, p.PendingHash, p.PendingDefinition,
			strings.Join(p.Findings, "\n"), ms(p.FirstSeen), ms(p.UpdatedAt), p.ApprovedBy)
		if err != nil {
			return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
		}
		return nil
	}, nil, ev)
}
