package httpapi

import (
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/issuer"
)

// The task tree is rebuilt from the audit log, not from the issuance
// records: those are pruned once their mandates have expired, while the
// log keeps every mandate's story, including those that lived for
// milliseconds.

// Statuses of a node of a task tree.
const (
	NodeActive  = "active"
	NodeExpired = "expired"
	NodeRevoked = "revoked"
)

// TaskNode is one mandate of a task's delegation tree.
type TaskNode struct {
	Mandate   string    `json:"mandate"`
	Parent    string    `json:"parent,omitempty"`
	Agent     string    `json:"agent"`
	Ephemeral bool      `json:"ephemeral"`
	Scope     string    `json:"scope"`
	Audience  []string  `json:"aud"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// Status is revoked if the mandate, or an ancestor, was revoked before
	// it expired; else expired once its time is past; else active.
	Status string `json:"status"`
	// RevokedAt is when the mandate itself was revoked.
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Depth     int        `json:"depth"`
	Approval  string     `json:"approval,omitempty"` // the approval its delegation used
}

// TaskEdge is a delegation: From is the parent mandate, To the child.
type TaskEdge struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// TaskResponse is a task's delegation tree (GET /v1/tasks/{id}). Nodes are
// in the order they were issued; the first is the root.
type TaskResponse struct {
	Task      string     `json:"task"`
	Subject   string     `json:"subject"`
	Purpose   string     `json:"purpose,omitempty"`
	Agent     string     `json:"agent"` // the root agent
	CreatedAt time.Time  `json:"created_at"`
	Nodes     []TaskNode `json:"nodes"`
	Edges     []TaskEdge `json:"edges"`
}

// maxTaskEvents bounds the events read to draw one tree.
const maxTaskEvents = 20 * mandate.MaxEventsPerQuery

// taskEvents reads every event of one type of a task, page by page.
func (s *Server) taskEvents(ctx context.Context, task, typ string, budget *int) ([]mandate.LoggedEvent, error) {
	var out []mandate.LoggedEvent
	f := mandate.EventFilter{Task: task, Type: typ, Limit: mandate.MaxEventsPerQuery}
	for {
		evs, err := s.cfg.Audit.Events(ctx, f)
		if err != nil {
			return nil, err
		}
		if *budget -= len(evs); *budget < 0 {
			return nil, mandate.Errorf(mandate.ETOOLARGE, "task %s has more than %d mandates and revocations: query its events page by page (GET /v1/tasks/%s/events?after=N)", task, maxTaskEvents, task)
		}
		out = append(out, evs...)
		if len(evs) < f.Limit {
			return out, nil
		}
		f.After = evs[len(evs)-1].Index + 1
	}
}

func (s *Server) getTask(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	budget := maxTaskEvents
	var issued []mandate.LoggedEvent
	var revoked map[string]time.Time
	for _, typ := range []string{mandate.EventMandateIssued, mandate.EventMandateDelegated, mandate.EventMandateRevoked} {
		evs, err := s.taskEvents(r.Context(), id, typ, &budget)
		if err != nil {
			writeError(w, r, s.log, err)
			return
		}
		if typ != mandate.EventMandateRevoked {
			issued = append(issued, evs...)
			continue
		}
		revoked = make(map[string]time.Time, len(evs))
		for _, e := range evs {
			t := time.Unix(0, e.Time).UTC()
			if old, ok := revoked[e.Mandate]; !ok || t.Before(old) {
				revoked[e.Mandate] = t
			}
		}
	}
	if len(issued) == 0 {
		writeError(w, r, s.log, mandate.Errorf(mandate.ENOTFOUND, "no mandates for task %s: task ids start with t_ (see GET /v1/tasks)", id))
		return
	}
	writeJSON(w, http.StatusOK, buildTree(id, issued, revoked, s.cfg.Now()))
}

// buildTree makes a task's tree from its issuance events and the times its
// mandates were revoked.
func buildTree(task string, issued []mandate.LoggedEvent, revoked map[string]time.Time, now time.Time) TaskResponse {
	slices.SortFunc(issued, func(a, b mandate.LoggedEvent) int { return cmp.Compare(a.Index, b.Index) })
	resp := TaskResponse{Task: task, Nodes: make([]TaskNode, 0, len(issued)), Edges: []TaskEdge{}}
	index := make(map[string]int, len(issued))
	for _, e := range issued {
		if _, dup := index[e.Mandate]; dup || e.Mandate == "" {
			continue // the log never has a duplicate, but the tree stays a tree
		}
		n := TaskNode{
			Mandate: e.Mandate, Parent: e.Parent, Agent: e.Agent, Ephemeral: mandate.IsEphemeral(e.Agent),
			Scope: detailString(e.Details, "scope"), Audience: strings.Fields(e.Resource),
			IssuedAt: detailTime(e.Details, "iat_ms", time.Unix(0, e.Time)), Depth: 1,
			Approval: detailString(e.Details, "approval"),
		}
		n.ExpiresAt = detailTime(e.Details, "exp_ms", n.IssuedAt)
		if d := detailInt(e.Details, "depth"); d > 0 {
			n.Depth = d
		} else if len(e.Chain) > 0 {
			n.Depth = len(e.Chain)
		}
		if n.Audience == nil {
			n.Audience = []string{}
		}
		if t, ok := revoked[e.Mandate]; ok {
			n.RevokedAt = &t
		}
		if e.Type == mandate.EventMandateIssued && resp.Subject == "" {
			resp.Subject, resp.Agent, resp.CreatedAt = e.Subject, e.Agent, n.IssuedAt
			resp.Purpose = detailString(e.Details, "purpose")
		}
		index[e.Mandate] = len(resp.Nodes)
		resp.Nodes = append(resp.Nodes, n)
	}
	if resp.Subject == "" && len(issued) > 0 {
		resp.Subject, resp.Agent, resp.CreatedAt = issued[0].Subject, issued[0].Agent, resp.Nodes[0].IssuedAt
	}
	// Parents come before their children in the log, so one pass in log
	// order settles each node's effective revocation: its own, or its
	// parent's, whichever came first.
	effective := make([]*time.Time, len(resp.Nodes))
	for i := range resp.Nodes {
		n := &resp.Nodes[i]
		eff := n.RevokedAt
		if p, ok := index[n.Parent]; ok && n.Parent != "" {
			resp.Edges = append(resp.Edges, TaskEdge{From: n.Parent, To: n.Mandate})
			if pe := effective[p]; pe != nil && (eff == nil || pe.Before(*eff)) {
				eff = pe
			}
		}
		effective[i] = eff
		switch {
		case eff != nil && eff.Before(n.ExpiresAt):
			n.Status = NodeRevoked
		case !now.Before(n.ExpiresAt):
			n.Status = NodeExpired
		default:
			n.Status = NodeActive
		}
	}
	return resp
}

func detailString(d map[string]any, k string) string {
	s, _ := d[k].(string)
	return s
}

// detailInt reads a number of an event's details (mandate.DetailInt).
func detailInt(d map[string]any, k string) int {
	n, _ := mandate.DetailInt(d[k])
	return int(n)
}

func detailTime(d map[string]any, k string, def time.Time) time.Time {
	var ms int64
	switch v := d[k].(type) {
	case json.Number:
		n, err := v.Int64()
		if err != nil {
			return def.UTC()
		}
		ms = n
	case int64:
		ms = v
	case int:
		ms = int64(v)
	case float64:
		ms = int64(v)
	default:
		return def.UTC()
	}
	return time.UnixMilli(ms).UTC()
}

// TaskSummary is one task in a listing: its root mandate.
type TaskSummary struct {
	Task      string    `json:"task"`
	Mandate   string    `json:"mandate"` // the root mandate
	Agent     string    `json:"agent"`
	Subject   string    `json:"subject"`
	Purpose   string    `json:"purpose,omitempty"`
	Scope     string    `json:"scope"`
	CreatedAt time.Time `json:"created_at"`
}

// TasksResponse lists tasks, newest first.
type TasksResponse struct {
	Tasks []TaskSummary `json:"tasks"`
}

// DefaultTaskLimit is how many tasks GET /v1/tasks lists without ?limit=.
const DefaultTaskLimit = 20

// listTasks answers GET /v1/tasks?limit=N: the most recent tasks, from
// their root mandates' mandate.issued events, newest first.
func (s *Server) listTasks(w http.ResponseWriter, r *http.Request) {
	limit := DefaultTaskLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > mandate.MaxEventsPerQuery {
			writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "limit must be 1 to %d", mandate.MaxEventsPerQuery))
			return
		}
		limit = n
	}
	evs, err := s.cfg.Audit.Events(r.Context(), mandate.EventFilter{Type: mandate.EventMandateIssued, Limit: limit, Last: true})
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out := TasksResponse{Tasks: make([]TaskSummary, 0, len(evs))}
	for i := len(evs) - 1; i >= 0; i-- {
		e := evs[i]
		out.Tasks = append(out.Tasks, TaskSummary{
			Task: e.Task, Mandate: e.Mandate, Agent: e.Agent, Subject: e.Subject,
			Purpose: detailString(e.Details, "purpose"), Scope: detailString(e.Details, "scope"),
			CreatedAt: time.Unix(0, e.Time).UTC(),
		})
	}
	writeJSON(w, http.StatusOK, out)
}

// EphemeralResponse lists the live ephemeral agents.
type EphemeralResponse struct {
	Agents []issuer.EphemeralAgent `json:"agents"`
}

func (s *Server) listEphemeral(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, EphemeralResponse{Agents: s.cfg.Issuer.Ephemeral()})
}
