package gateway_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/gateway"
	"github.com/mandatehq/mandate/policy"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// jumpClock is the wall clock, set ahead by what the test says: a clock
// that jumps (an NTP step, an operator's date command) and is set right.
type jumpClock struct{ ahead atomic.Int64 }

func (c *jumpClock) Now() time.Time           { return time.Now().Add(time.Duration(c.ahead.Load())) }
func (c *jumpClock) jump(ahead time.Duration) { c.ahead.Store(int64(ahead)) }

// A gateway's wall clock that jumps 15 minutes ahead, while requests go
// on, and is set right again does not make it forget what a live task
// did: a task that read confidential data still may not send it out
// (issue 16, item 8).
func TestTaskStateAfterClockJump(t *testing.T) {
	e := newEnvWith(t, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	mcp.AddTool(e.srv, &mcp.Tool{Name: "send_email", Description: "Sends an e-mail."},
		func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "sent"}}}, nil, nil
		})
	pol, err := policy.Open(policy.Config{Dir: filepath.Join("..", "examples", "policies", "risk-gating"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var clk jumpClock
	e.regateway(func(c *gateway.Config) {
		c.Policy, c.Now = pol, clk.Now
		c.Routes[0].ToolLabels = map[string][]string{"list_customers": {"data:confidential"}, "send_email": {"external_send"}}
	})
	callBody := func(tool string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":{"name":"x"}}}`
	}
	// The reader's task ends with its mandate, in 5 minutes (and the
	// gateway's margin of a minute).
	reader := e.mint("reader", e.agent("reader", "mcp:crm:*"), "mcp:crm:*", 5*time.Minute, false)
	if _, body := e.post(reader.AccessToken, "", callBody("list_customers")); !strings.Contains(body, "ada") {
		t.Fatalf("the read: %s", body)
	}
	// During the jump, another task's request (its mandate valid then too)
	// makes the gateway sweep the task state.
	other := e.mint("other", e.agent("other", "mcp:crm:*"), "mcp:crm:*", time.Hour, false)
	clk.jump(15 * time.Minute)
	if _, body := e.post(other.AccessToken, "", callBody("list_customers")); !strings.Contains(body, "ada") {
		t.Fatalf("a call while the clock is ahead: %s", body)
	}
	clk.jump(0)
	if _, body := e.post(reader.AccessToken, "", callBody("send_email")); !strings.Contains(body, "no-send-after-confidential") {
		t.Errorf("the reader's send after the clock came back: %s, want a denial by no-send-after-confidential", body)
	}
}

// A DPoP proof the gateway accepted before its wall clock jumped 15
// minutes ahead, while proofs went on, is refused as a replay once the
// clock is set right, within the proof's 60 s; and fresh proofs are
// accepted then, not refused until the wall clock catches up with where
// it jumped to (issue 16, item 8).
func TestDPoPProofAfterClockJump(t *testing.T) {
	e := newEnv(t)
	var clk jumpClock
	e.regateway(func(c *gateway.Config) { c.Now = clk.Now })
	key := e.agent("reporter", "mcp:crm:*")
	tok := e.mint("reporter", key, "mcp:crm:*", time.Hour, true)
	htu := e.gw.URL + "/mcp/crm"
	send := func(proof string) (int, string) {
		t.Helper()
		return postInitialize(t, htu, tok.AccessToken, proof)
	}
	used := dpop.NewProofMillis(key, "POST", htu, tok.AccessToken, clk.Now())
	if code, _ := send(used); code != 200 {
		t.Fatalf("first use of the proof: HTTP %d", code)
	}
	clk.jump(15 * time.Minute)
	if code, _ := send(dpop.NewProofMillis(key, "POST", htu, tok.AccessToken, clk.Now())); code != 200 {
		t.Fatalf("a proof made while the clock is ahead: HTTP %d", code)
	}
	clk.jump(0)
	if code, challenge := send(used); code != 401 || !strings.Contains(challenge, "used before") {
		t.Errorf("the proof used before the jump, replayed after the clock came back: HTTP %d %s, want 401 as a replay", code, challenge)
	}
	if code, _ := send(dpop.NewProofMillis(key, "POST", htu, tok.AccessToken, clk.Now())); code != 200 {
		t.Errorf("a fresh proof after the clock came back: HTTP %d", code)
	}
}
