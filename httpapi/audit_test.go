package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auditlog/layout"
	"github.com/mandatehq/mandate/httpapi"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func get(t *testing.T, url string, admin bool) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if admin {
		req.Header.Set("Authorization", "Bearer "+adminToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// Every issuance is in the audit log before the mandate is returned, and
// the log reads back through the C2SP tlog-tiles layout: the signed
// checkpoint verifies with the served key, the tiles and entries rebuild
// its root, proofs check, and queries find the task's events.
func TestAuditReadAPI(t *testing.T) {
	ts := newServer(t)
	key := ts.addAgent(t, "a", "mcp:crm:*")
	ctx := context.Background()
	var task string
	for i := range 300 {
		tok, err := ts.client.Token(ctx, httpapi.TokenRequest{AgentID: "spiffe://example.org/agent/a", Key: key, Scope: "mcp:crm:list", Purpose: fmt.Sprint("job ", i)})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			task = mustClaims(t, tok.AccessToken).Task
		}
	}
	if _, err := ts.publisher.Publish(ctx); err != nil {
		t.Fatal(err)
	}

	code, vkey := get(t, ts.URL+"/audit/vkey", false)
	if code != 200 {
		t.Fatalf("vkey: %d", code)
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		t.Fatal(err)
	}
	code, cp := get(t, ts.URL+"/audit/checkpoint", false)
	if code != 200 {
		t.Fatalf("checkpoint: %d", code)
	}
	n, err := note.Open(cp, note.VerifierList(verifier))
	if err != nil {
		t.Fatalf("checkpoint does not verify: %v\n%s", err, cp)
	}
	origin, size, root, err := layout.ParseCheckpoint([]byte(n.Text))
	if err != nil {
		t.Fatal(err)
	}
	if origin != "mandate.test/audit" || size != 301 { // one registration, 300 issuances
		t.Fatalf("checkpoint %s: %d entries", origin, size)
	}

	// Entry bundles need the credential; hash tiles do not.
	if code, _ := get(t, ts.URL+"/audit/"+layout.EntriesPath(0, layout.TileWidth), false); code != 401 {
		t.Errorf("entry bundle without credential: HTTP %d", code)
	}
	if code, _ := get(t, ts.URL+"/audit/"+layout.HashTilePath(0, 0, layout.TileWidth), false); code != 200 {
		t.Errorf("hash tile: HTTP %d", code)
	}
	if code, _ := get(t, ts.URL+"/audit/"+layout.HashTilePath(0, 1, 46), false); code != 404 {
		t.Errorf("a tile beyond the checkpoint: HTTP %d", code)
	}
	if code, _ := get(t, ts.URL+"/audit/tile/0/x001", false); code != 404 {
		t.Errorf("a malformed tile path: HTTP %d", code)
	}
	// An index so large that 256·n wraps around to 0 is beyond the log.
	if code, _ := get(t, ts.URL+"/audit/tile/entries/x072/x057/x594/x037/x927/936", true); code != 404 {
		t.Errorf("a wrapping tile index: HTTP %d", code)
	}
	req, _ := http.NewRequest("GET", ts.URL+"/audit/"+layout.EntriesPath(0, layout.TileWidth), nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if resp, err := http.DefaultClient.Do(req); err != nil || !strings.HasPrefix(resp.Header.Get("Cache-Control"), "private") || resp.Header.Get("Vary") != "Authorization" {
		t.Errorf("an entry bundle fetched with the credential may be kept by shared caches: %v", resp.Header)
	} else {
		resp.Body.Close()
	}

	// Rebuild the tree from the entries and compare with the checkpoint
	// and the served hash tiles.
	var entries [][]byte
	for start := uint64(0); start < size; start += layout.TileWidth {
		w := int(min(size-start, layout.TileWidth))
		code, b := get(t, ts.URL+"/audit/"+layout.EntriesPath(start/layout.TileWidth, w), true)
		if code != 200 {
			t.Fatalf("bundle at %d: HTTP %d %s", start, code, b)
		}
		es, err := layout.DecodeBundle(b, w)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, es...)
	}
	stored := map[int64]tlog.Hash{}
	hr := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	issued := 0
	for i, e := range entries {
		hs, _ := tlog.StoredHashes(int64(i), e, hr)
		for j, h := range hs {
			stored[tlog.StoredHashIndex(0, int64(i))+int64(j)] = h
		}
		ev, err := mandate.ParseEvent(e)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if ev.Type == mandate.EventMandateIssued {
			issued++
		}
	}
	if got, _ := tlog.TreeHash(int64(size), hr); got != root {
		t.Fatal("the entries do not hash to the checkpoint's root")
	}
	if issued != 300 {
		t.Errorf("%d mandate.issued events, want 300", issued)
	}
	_, tile := get(t, ts.URL+"/audit/"+layout.HashTilePath(0, 1, 45), false)
	want, _ := tlog.ReadTileData(tlog.Tile{H: 8, L: 0, N: 1, W: 45}, hr)
	if string(tile) != string(want) {
		t.Error("served hash tile differs from the entries' hashes")
	}

	// An inclusion proof and a consistency proof check out.
	code, b := get(t, ts.URL+"/audit/proof?index=42", false)
	var p httpapi.ProofResponse
	if code != 200 || json.Unmarshal(b, &p) != nil {
		t.Fatalf("proof: %d %s", code, b)
	}
	var proof tlog.RecordProof
	for _, s := range p.Proof {
		h, _ := tlog.ParseHash(s)
		proof = append(proof, h)
	}
	if err := tlog.CheckRecord(proof, int64(size), root, 42, tlog.RecordHash(entries[42])); err != nil {
		t.Errorf("inclusion proof: %v", err)
	}
	code, b = get(t, ts.URL+"/audit/proof?from=100", false)
	if code != 200 || json.Unmarshal(b, &p) != nil {
		t.Fatalf("consistency proof: %d %s", code, b)
	}
	var tp tlog.TreeProof
	for _, s := range p.Proof {
		h, _ := tlog.ParseHash(s)
		tp = append(tp, h)
	}
	old, _ := tlog.TreeHash(100, hr)
	if err := tlog.CheckTree(tp, int64(size), root, 100, old); err != nil {
		t.Errorf("consistency proof: %v", err)
	}
	if code, _ := get(t, ts.URL+"/audit/proof?index=1000", false); code != 400 {
		t.Errorf("proof beyond the log: %d", code)
	}

	// Queries.
	code, b = get(t, ts.URL+"/v1/tasks/"+task+"/events", true)
	var evs httpapi.EventsResponse
	if code != 200 || json.Unmarshal(b, &evs) != nil || len(evs.Events) != 1 || evs.Events[0].Type != mandate.EventMandateIssued ||
		evs.Events[0].Details["purpose"] != "job 0" {
		t.Errorf("task events: %d %s", code, b)
	}
	code, b = get(t, ts.URL+"/v1/events?agent=a&type=agent.registered", true)
	if code != 200 || json.Unmarshal(b, &evs) != nil || len(evs.Events) != 1 || evs.Events[0].Index != 0 {
		t.Errorf("agent events: %d %s", code, b)
	}
	code, b = get(t, ts.URL+"/v1/events?limit=5&last=true&since="+time.Now().Add(-time.Hour).Format(time.RFC3339), true)
	// The last is the refusal of the entry bundle asked for without the
	// admin credential: audited.
	if code != 200 || json.Unmarshal(b, &evs) != nil || len(evs.Events) != 5 || evs.Events[4].Index != 301 ||
		evs.Events[4].Type != mandate.EventDecision || evs.Events[4].Details["credential"] != "admin" {
		t.Errorf("last events: %d %s", code, b)
	}
	if code, _ := get(t, ts.URL+"/v1/events?limit=0", true); code != 400 {
		t.Errorf("limit=0: %d", code)
	}
}
