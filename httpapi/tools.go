package httpapi

import (
	"context"
	"net/http"

	"github.com/mandatehq/mandate"
)

// ToolApprover approves a changed or flagged tool definition: the
// gateway (*gateway.Gateway), which must learn of it at once.
type ToolApprover interface {
	ApproveTool(ctx context.Context, server, name, hash, by string) (*mandate.ToolPin, error)
}

// ToolsResponse lists pinned tool definitions.
type ToolsResponse struct {
	Tools []*mandate.ToolPin `json:"tools"`
}

// ApproveToolRequest names the definition approved: its hash, as
// `GET /v1/tools/{server}/{name}` shows it, so that an operator approves
// what they read and nothing that changed since.
type ApproveToolRequest struct {
	Hash string `json:"hash"`
}

func (s *Server) toolsAvailable(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.Tools == nil || s.cfg.ToolApprover == nil {
		writeError(w, r, s.log, mandate.Errorf(mandate.ENOTFOUND, "this server runs no MCP gateway; hint: start it with --mcp-upstream NAME=URL"))
		return false
	}
	return true
}

// listTools answers GET /v1/tools?server=: the pinned definitions.
func (s *Server) listTools(w http.ResponseWriter, r *http.Request) {
	if !s.toolsAvailable(w, r) {
		return
	}
	list, err := s.cfg.Tools.ToolPins(r.Context(), r.URL.Query().Get("server"))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if list == nil {
		list = []*mandate.ToolPin{}
	}
	writeJSON(w, http.StatusOK, ToolsResponse{Tools: list})
}

// getTool answers GET /v1/tools/{server}/{name}.
func (s *Server) getTool(w http.ResponseWriter, r *http.Request) {
	if !s.toolsAvailable(w, r) {
		return
	}
	p, err := s.toolPin(r.Context(), r.PathValue("server"), r.PathValue("name"))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) toolPin(ctx context.Context, server, name string) (*mandate.ToolPin, error) {
	list, err := s.cfg.Tools.ToolPins(ctx, server)
	if err != nil {
		return nil, err
	}
	for _, p := range list {
		if p.Name == name {
			return p, nil
		}
	}
	return nil, mandate.Errorf(mandate.ENOTFOUND, "no tool %s of server %s has been seen by the gateway", name, server)
}

// approveTool answers POST /v1/tools/{server}/{name}/approve {"hash"}.
func (s *Server) approveTool(w http.ResponseWriter, r *http.Request) {
	if !s.toolsAvailable(w, r) {
		return
	}
	var req ApproveToolRequest
	if err := readJSON(w, r, &req); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if req.Hash == "" {
		writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "hash is required: the definition you approve, as GET /v1/tools/{server}/{name} shows it"))
		return
	}
	p, err := s.cfg.ToolApprover.ApproveTool(r.Context(), r.PathValue("server"), r.PathValue("name"), req.Hash, "admin")
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.log.Info("tool definition approved", "server", p.Server, "tool", p.Name, "hash", p.Hash)
	writeJSON(w, http.StatusOK, p)
}
