package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/gateway"
	"github.com/mandatehq/mandate/policy"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// A flood of tasks cannot wash a live task's state away (issue 15, item
// 11): past an agent's bound, and past the gateway's, new tasks are
// refused and the refusals audited, while the task that read confidential
// data still may not send it out.
func TestTaskFloodIsRefusedNotForgotten(t *testing.T) {
	e := newEnvWith(t, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	mcp.AddTool(e.srv, &mcp.Tool{Name: "send_email", Description: "Sends an e-mail."},
		func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "sent"}}}, nil, nil
		})
	pol, err := policy.Open(policy.Config{Dir: filepath.Join("..", "examples", "policies", "risk-gating"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	e.regateway(func(c *gateway.Config) {
		c.Policy, c.MaxTasks, c.MaxTasksPerAgent = pol, 6, 3
		c.Routes[0].ToolLabels = map[string][]string{"list_customers": {"data:confidential"}, "send_email": {"external_send"}}
	})
	callBody := func(tool string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":{"name":"x"}}}`
	}
	reader := e.mint("reader", e.agent("reader", "mcp:crm:*"), "mcp:crm:*", time.Minute, false)
	if _, body := e.post(reader.AccessToken, "", callBody("list_customers")); !strings.Contains(body, "ada") {
		t.Fatalf("the read: %s", body)
	}
	flood := func(name string, n int) []int {
		key := e.agent(name, "mcp:crm:*")
		var codes []int
		for range n {
			resp, _ := e.post(e.mint(name, key, "mcp:crm:*", time.Minute, false).AccessToken, "", callBody("send_email"))
			codes = append(codes, resp.StatusCode)
		}
		return codes
	}
	if got := fmt.Sprint(flood("flooder", 5)); got != "[200 200 200 429 429]" {
		t.Errorf("one agent's tasks past its bound of 3: %s", got)
	}
	if got := fmt.Sprint(flood("other", 3)); got != "[200 200 503]" {
		t.Errorf("another agent's past the gateway's bound of 6: %s", got)
	}
	if _, body := e.post(reader.AccessToken, "", callBody("send_email")); !strings.Contains(body, "no-send-after-confidential") {
		t.Errorf("the reader's send after the flood: %s", body)
	}
	refused := 0
	for _, ev := range e.events(mandate.EventDecision) {
		if ev.Details["check"] == "task-state-full" && ev.Details["http_status"] != nil {
			refused++
		}
	}
	if refused != 3 {
		t.Errorf("%d refusals of new tasks audited, want 3", refused)
	}
}

// A task whose end the gateway cannot tell (its root's record cannot be
// read) is refused, as a task without room is, and the refusal audited,
// once a minute for the task.
func TestTaskOfUnknownEndRefusedAndAudited(t *testing.T) {
	e := newEnvWith(t, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	e.regateway(func(c *gateway.Config) {
		c.TaskEnd = func(context.Context, *mandate.Claims) (time.Time, error) {
			return time.Time{}, fmt.Errorf("the store is down")
		}
	})
	key := e.agent("orchestrator", "mcp:crm:*")
	child := e.delegate(e.mint("orchestrator", key, "mcp:crm:*", time.Minute, false), newKey(t))
	for range 2 {
		resp, body := e.post(child.AccessToken, "", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
		if resp.StatusCode != 503 || strings.Contains(body, "store is down") {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	}
	var got []string
	for _, ev := range e.events(mandate.EventDecision) {
		got = append(got, fmt.Sprint(ev.Task == child.Claims.Task, " ", ev.Details["check"], " ", ev.Details["http_status"]))
	}
	if fmt.Sprint(got) != "[true task-state-unknown 503]" {
		t.Errorf("the refusals audited: %v", got)
	}
}
