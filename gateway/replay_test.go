package gateway_test

import (
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/gateway"
	"github.com/mandatehq/mandate/policy"
)

// The gateway's replay set of DPoP proofs is in memory, so a restart
// empties it: a proof it accepted just before, replayed within its 60 s,
// must not be good again. A gateway refuses proofs made before it started
// (and accepts those made since).
func TestDPoPProofAcrossGatewayRestart(t *testing.T) {
	e := newEnv(t)
	key := e.agent("reporter", "mcp:crm:*")
	tok := e.mint("reporter", key, "mcp:crm:list_customers", time.Minute, true)
	htu := e.gw.URL + "/mcp/crm"
	send := func(proof string) (int, string) {
		t.Helper()
		return postInitialize(t, htu, tok.AccessToken, proof)
	}
	proof := dpop.NewProofMillis(key, "POST", htu, tok.AccessToken, time.Now())
	if code, _ := send(proof); code != 200 {
		t.Fatalf("first use of the proof: HTTP %d", code)
	}
	if code, _ := send(proof); code != 401 {
		t.Fatalf("replayed proof: HTTP %d", code)
	}

	// The restart: a new gateway on the same stores, a second later by
	// its clock.
	pol, err := policy.Open(policy.Config{Dir: filepath.Join(t.TempDir(), "policies"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	later := func() time.Time { return time.Now().Add(time.Second) }
	g, err := gateway.New(gateway.Config{Routes: []gateway.Route{{Name: "crm", URL: e.upstream.URL}},
		Issuer: iss, Keys: keySource{e.keys}, PublicURL: e.gw.URL, Agents: e.store, Policy: pol, Events: e.store, Tools: e.store,
		Now: later, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	e.gw.Config.Handler, e.g = g, g
	if code, challenge := send(proof); code != 401 || !strings.Contains(challenge, "before the server started") {
		t.Fatalf("a proof of before the restart, replayed: HTTP %d %s", code, challenge)
	}
	if code, _ := send(dpop.NewProofMillis(key, "POST", htu, tok.AccessToken, later())); code != 200 {
		t.Fatalf("a proof made after the restart: HTTP %d", code)
	}
}

// postInitialize posts an MCP initialize to url with a DPoP-bound mandate
// and its proof, and returns the status and the WWW-Authenticate
// challenges.
func postInitialize(t *testing.T, url, mandate, proof string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(initialize))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "DPoP "+mandate)
	req.Header.Set("DPoP", proof)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, strings.Join(resp.Header.Values("WWW-Authenticate"), " ")
}
