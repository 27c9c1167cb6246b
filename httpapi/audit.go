package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auditlog"
	"github.com/mandatehq/mandate/auditlog/layout"
	"golang.org/x/mod/sumdb/tlog"
)

// AuditStore is what the audit endpoints read.
type AuditStore interface {
	mandate.EventQuerier
	// ReadEntries returns entries [start, start+n).
	ReadEntries(ctx context.Context, start, n int64) ([][]byte, error)
	// ReadTile returns the first width hashes of hash tile (L, n).
	ReadTile(ctx context.Context, L int, n int64, width int) ([]byte, error)
	// HashReader reads stored hashes, for proofs.
	HashReader(ctx context.Context) tlog.HashReader
}

// The audit log's read API: the C2SP tlog-tiles layout under /audit/, so
// that any transparency-log tooling can read it (and `mandate audit
// export` can copy it to a static file server), plus JSON proofs and
// queries.
//
// The checkpoint, the verifier key and the hash tiles are public: they
// hold hashes, not events. The entry bundles hold the events — who did
// what for whom — so they need the admin credential unless
// Config.PublicAudit says otherwise.

func (s *Server) auditCheckpoint(w http.ResponseWriter, r *http.Request) {
	signed, _ := s.cfg.Publisher.Latest()
	if signed == nil {
		var err error
		if signed, err = s.cfg.Publisher.Publish(r.Context()); err != nil {
			writeError(w, r, s.log, mandate.Wrapf(err, mandate.EUNAVAILABLE, "no checkpoint yet"))
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(signed)
}

func (s *Server) auditVKey(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(s.cfg.Publisher.Key.VKey + "\n"))
}

func (s *Server) auditTile(w http.ResponseWriter, r *http.Request) {
	level, n, width, err := layout.ParseTilePath("tile/" + r.PathValue("path"))
	if err != nil {
		writeError(w, r, s.log, mandate.Errorf(mandate.ENOTFOUND, "%v", err))
		return
	}
	if level < 0 && !s.cfg.PublicAudit && !s.isAdmin(r) {
		err := mandate.Errorf(mandate.EUNAUTHORIZED, "entry bundles hold the events: send the admin credential, or start the server with --public-audit")
		s.refusedCredential(r, "admin", "", err)
		w.Header().Set("WWW-Authenticate", `Bearer realm="mandate-admin"`)
		writeError(w, r, s.log, err)
		return
	}
	// Only what the latest checkpoint covers is served: a tile of a given
	// width never changes once it exists, so it can be cached for ever.
	_, size := s.cfg.Publisher.Latest()
	L := max(level, 0)
	count := uint64(size) >> (auditlog.TileHeight * uint(L))
	// n is compared before it is multiplied: a huge n must not wrap.
	if n > count/layout.TileWidth || n*layout.TileWidth+uint64(width) > count {
		writeError(w, r, s.log, mandate.Errorf(mandate.ENOTFOUND, "tile %s is beyond the latest checkpoint (%d entries)", r.URL.Path, size))
		return
	}
	var data []byte
	if level < 0 {
		var entries [][]byte
		if entries, err = s.cfg.Audit.ReadEntries(r.Context(), int64(n)*layout.TileWidth, int64(width)); err == nil {
			data, err = layout.EncodeBundle(entries)
		}
	} else {
		data, err = s.cfg.Audit.ReadTile(r.Context(), level, int64(n), width)
	}
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if level < 0 && !s.cfg.PublicAudit {
		// Events, fetched with the admin credential: no shared cache may
		// keep them for others (RFC 9111 §3.5).
		w.Header().Set("Cache-Control", "private, max-age=31536000, immutable")
		w.Header().Set("Vary", "Authorization")
	} else {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	}
	w.Write(data)
}

// publishCheckpoint signs a checkpoint now (POST /v1/audit/checkpoint).
func (s *Server) publishCheckpoint(w http.ResponseWriter, r *http.Request) {
	signed, err := s.cfg.Publisher.Publish(r.Context())
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(signed)
}

// ProofResponse carries an RFC 6962 proof as base64 hashes, with the
// checkpoint it is relative to.
type ProofResponse struct {
	Index      int64    `json:"index,omitempty"`
	From       int64    `json:"from,omitempty"`
	Size       int64    `json:"size"`
	Root       string   `json:"root"`
	LeafHash   string   `json:"leaf_hash,omitempty"`
	Proof      []string `json:"proof"`
	Checkpoint string   `json:"checkpoint"`
}

// auditProof serves inclusion (?index=N) and consistency (?from=M)
// proofs relative to the latest checkpoint, or to ?size= if given (at most
// the latest).
func (s *Server) auditProof(w http.ResponseWriter, r *http.Request) {
	signed, latest := s.cfg.Publisher.Latest()
	q := r.URL.Query()
	num := func(name string) (int64, bool, error) {
		v := q.Get(name)
		if v == "" {
			return 0, false, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, true, mandate.Errorf(mandate.EINVALID, "%s must be a non-negative integer", name)
		}
		return n, true, nil
	}
	size, haveSize, err := num("size")
	if err == nil && !haveSize {
		size = latest
	}
	index, haveIndex, err2 := num("index")
	from, haveFrom, err3 := num("from")
	for _, e := range []error{err, err2, err3} {
		if e != nil {
			writeError(w, r, s.log, e)
			return
		}
	}
	switch {
	case size > latest:
		writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "size %d is beyond the latest checkpoint (%d)", size, latest))
		return
	case haveIndex == haveFrom:
		writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "give index=N for an inclusion proof or from=M for a consistency proof"))
		return
	case haveIndex && index >= size, haveFrom && (from == 0 || from > size):
		writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "out of range for a tree of %d entries", size))
		return
	}
	hr := s.cfg.Audit.HashReader(r.Context())
	root, err := tlog.TreeHash(size, hr)
	if err != nil {
		writeError(w, r, s.log, mandate.Wrapf(err, mandate.EINTERNAL, "tree hash"))
		return
	}
	resp := ProofResponse{Size: size, Root: root.String(), Checkpoint: string(signed)}
	var proof []tlog.Hash
	if haveIndex {
		resp.Index = index
		var entries [][]byte
		if entries, err = s.cfg.Audit.ReadEntries(r.Context(), index, 1); err == nil {
			resp.LeafHash = tlog.RecordHash(entries[0]).String()
			var p tlog.RecordProof
			p, err = tlog.ProveRecord(size, index, hr)
			proof = p
		}
	} else {
		resp.From = from
		var p tlog.TreeProof
		p, err = tlog.ProveTree(size, from, hr)
		proof = p
	}
	if err != nil {
		writeError(w, r, s.log, mandate.Wrapf(err, mandate.EINTERNAL, "proof"))
		return
	}
	resp.Proof = make([]string, len(proof))
	for i, h := range proof {
		resp.Proof[i] = h.String()
	}
	writeJSON(w, http.StatusOK, resp)
}

// EventsResponse is a page of audit events.
type EventsResponse struct {
	Events []mandate.LoggedEvent `json:"events"`
}

// events answers GET /v1/events?task=&mandate=&agent=&type=&since=&until=&after=&limit=&last=
// and GET /v1/tasks/{id}/events.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := mandate.EventFilter{Task: q.Get("task"), Mandate: q.Get("mandate"), Agent: q.Get("agent"), Type: q.Get("type")}
	if id := r.PathValue("id"); id != "" {
		f.Task = id
	}
	if f.Agent != "" && !strings.HasPrefix(f.Agent, "spiffe://") {
		f.Agent = mandate.AgentID(s.cfg.TrustDomain, f.Agent)
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "%s must be an RFC 3339 time", p.name))
				return
			}
			*p.dst = t
		}
	}
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "after must be a non-negative integer"))
			return
		}
		f.After = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > mandate.MaxEventsPerQuery {
			writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "limit must be 1 to %d", mandate.MaxEventsPerQuery))
			return
		}
		f.Limit = n
	}
	f.Last = q.Get("last") == "true"
	if wantsStream(r) {
		s.streamEvents(w, r, f)
		return
	}
	if strings.Contains(f.Type, ",") {
		writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "type: one event type (a stream, Accept: text/event-stream, takes several)"))
		return
	}
	evs, err := s.cfg.Audit.Events(r.Context(), f)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if evs == nil {
		evs = []mandate.LoggedEvent{}
	}
	writeJSON(w, http.StatusOK, EventsResponse{Events: evs})
}
