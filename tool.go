package mandate

import (
	"context"
	"time"
)

// ToolStatus says whether the gateway lets agents use a tool.
type ToolStatus string

const (
	// ToolPinned: the definition the gateway pinned is the one the server
	// shows; the tool may be used (as scopes and policy allow).
	ToolPinned ToolStatus = "pinned"
	// ToolChanged: the server shows another definition than the pinned
	// one (a "rug pull"?); the tool is blocked until an operator approves
	// the new definition.
	ToolChanged ToolStatus = "changed"
	// ToolFlagged: the definition holds markers of injected instructions
	// (ToolPin.Findings); the tool is blocked until an operator approves it.
	ToolFlagged ToolStatus = "flagged"
)

// ToolPin is the definition of an MCP server's tool as the gateway first
// saw it (or as an operator last approved it): its name, description and
// input schema, in canonical JSON, and its SHA-256.
type ToolPin struct {
	Server     string     `json:"server"`
	Name       string     `json:"name"`
	Status     ToolStatus `json:"status"`
	Hash       string     `json:"hash"`       // hex SHA-256 of Definition
	Definition []byte     `json:"definition"` // canonical JSON: {"description","inputSchema","name"}
	// Pending is the definition the server shows now, when it differs
	// from Definition (Status changed): what an operator approves.
	PendingHash       string    `json:"pending_hash,omitempty"`
	PendingDefinition []byte    `json:"pending_definition,omitempty"`
	Findings          []string  `json:"findings,omitempty"` // what the scan found in the definition shown
	FirstSeen         time.Time `json:"first_seen"`
	UpdatedAt         time.Time `json:"updated_at"`
	ApprovedBy        string    `json:"approved_by,omitempty"`
}

// ToolPinStore keeps the gateway's pinned tool definitions. Every change is
// written with its audit event in one transaction.
type ToolPinStore interface {
	// ToolPins lists the pins of a server, or of every server if server
	// is "", by server and name.
	ToolPins(ctx context.Context, server string) ([]*ToolPin, error)
	// SaveToolPin inserts or replaces the pin of (p.Server, p.Name) and
	// appends ev.
	SaveToolPin(ctx context.Context, p *ToolPin, ev *Event) error
}
