package auditcheck_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	mandate "github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/sqlite"
)

// realisticEvent returns event i of a log shaped like a busy server's,
// measured on the log `mandate demo` writes: issuance events are 750–980
// bytes (the chain, the key ids, the policy set's hash, the scope and
// purpose), tool calls and results 500–700, decisions, revocations and
// alerts 450–870. Of every 16 events, 4 are mandate.issued, 4
// mandate.delegated, 2 tool.call, 2 tool.result, 2 denied decisions, 1
// mandate.revoked and 1 alert; the lengths of purposes, scopes and
// reasons vary. The mean is ~740 bytes. The same i and seed give the same
// event, times increasing from start.
func realisticEvent(i int, seed uint64, start time.Time) *mandate.Event {
	rng := rand.New(rand.NewPCG(seed, uint64(i)))
	task := i / 16
	id := func(prefix string, n int) string { return fmt.Sprintf("%s_01M99MFH%018d", prefix, n) }
	root := "spiffe://example.org/agent/" + []string{"orchestrator", "researcher", "support-bot", "billing-agent"}[task%4]
	sub := fmt.Sprintf("%s/sub/%012x", root, rng.Uint64()&0xffffffffffff)
	user := fmt.Sprintf("user:%s@example.org", []string{"alice", "bob", "carol.nguyen", "dmitri"}[task%4])
	servers := []string{"crm", "email", "github", "billing", "calendar"}
	srv := servers[rng.IntN(len(servers))]
	tool := fmt.Sprintf("mcp:%s:%s", srv, []string{"list_customers", "get_customer", "send_email", "list_issues", "create_invoice", "delete_customer"}[rng.IntN(6)])
	words := strings.Fields("clean up the customer list and send the weekly report to the team reconcile invoices of last quarter triage the open issues")
	text := func(min, max int) string {
		n := min + rng.IntN(max-min+1)
		w := make([]string, n)
		for j := range w {
			w[j] = words[rng.IntN(len(words))]
		}
		return strings.Join(w, " ")
	}
	scope := func() string {
		n := 1 + rng.IntN(4)
		s := make([]string, n)
		for j := range s {
			s[j] = fmt.Sprintf("mcp:%s:%s", servers[rng.IntN(len(servers))], []string{"*", "list_*", "get_customer", "send_email", "create_invoice"}[rng.IntN(5)])
		}
		return strings.Join(s, " ")
	}
	b64 := func(n int) string {
		const a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		b := make([]byte, n)
		for j := range b {
			b[j] = a[rng.IntN(len(a))]
		}
		return string(b)
	}
	num := func(n int64) json.Number { return json.Number(strconv.FormatInt(n, 10)) }
	t := start.Add(time.Duration(i) * 997 * time.Microsecond)
	ms := t.UnixMilli()
	const policySet = "eca6fb33037b6cf9310d278bcc80a6187cd413687710b4fdd0cac33dc732837b"
	const kid = "qZYgdGx4cD0Fi9yfUNuUYXnA2KbAPXt6t4bRdL4DUSY"
	e := &mandate.Event{V: mandate.EventVersion, Time: t.UnixNano(), Task: id("t", task), Subject: user, Outcome: mandate.OutcomeOK,
		Mandate: id("m", i/2), Parent: id("m", task*8), Agent: sub, Chain: []string{sub, root}}
	switch k := i % 16; {
	case k < 8 && k%2 == 0:
		e.Type, e.Action, e.Resource, e.Parent, e.Agent, e.Chain = mandate.EventMandateIssued, "mint", "mcp:"+srv, "", root, []string{root}
		e.Details = map[string]any{"assertion": b64(22), "assertion_exp_ms": num(ms + 60000), "exp_ms": num(ms + 120000), "iat_ms": num(ms),
			"jkt": b64(43), "kid": kid, "policies": []any{"mint-root"}, "policy_set": policySet, "purpose": text(3, 12), "scope": scope()}
	case k < 8:
		e.Type, e.Action, e.Resource, e.By = mandate.EventMandateDelegated, "delegate", "mcp:"+srv, root
		jkt := b64(43)
		e.Details = map[string]any{"agent_jkt": jkt, "assertion": b64(22), "assertion_exp_ms": num(ms + 60000), "depth": num(2), "ephemeral": true,
			"exp_ms": num(ms + 30000), "iat_ms": num(ms), "jkt": jkt, "kid": kid, "policies": []any{"delegate-depth-3"}, "policy_set": policySet, "scope": scope()}
	case k == 8 || k == 10:
		e.Type, e.Action, e.Resource = mandate.EventToolCall, "tools/call", tool
		e.Details = map[string]any{"args_bytes": num(rng.Int64N(2000)), "policies": []any{"call-tools"}, "policy_set": policySet,
			"rpc_id": strconv.Itoa(rng.IntN(1000)), "tool_labels": []any{"read_only", "data:customer-data"}}
	case k == 9 || k == 11:
		e.Type, e.Action, e.Resource = mandate.EventToolResult, "tools/call", tool
		e.Details = map[string]any{"ms": num(rng.Int64N(900)), "result_bytes": num(rng.Int64N(100000)), "rpc_id": strconv.Itoa(rng.IntN(1000))}
	case k == 12 || k == 13:
		e.Type, e.Action, e.Resource, e.Outcome = mandate.EventDecision, "tools/call", tool, mandate.OutcomeDeny
		e.Reason = fmt.Sprintf("the mandate does not allow %s: its scope is %s", tool, scope())
		e.Details = map[string]any{"cause": "scope", "rpc_error": num(-32001)}
	case k == 14:
		e.Type, e.Action, e.By, e.Parent, e.Chain = mandate.EventMandateRevoked, "revoke", "monitor", "", nil
		e.Reason = "the monitor's exfiltration detector: " + text(8, 20)
		e.Details = map[string]any{"by_agent": "", "by_mandate": "", "by_task": id("t", task), "cascade": true, "detector": "exfiltration",
			"evidence": []any{num(int64(i - 3)), num(int64(i - 1))}}
	default:
		e.Type, e.Action, e.Resource, e.Outcome, e.By = mandate.EventAlert, "detect", tool, mandate.OutcomeDeny, "monitor"
		e.Reason = text(8, 20)
		e.Details = map[string]any{"agent_risk": num(rng.Int64N(100)), "detector": "exfiltration", "evidence": []any{num(int64(i - 4)), num(int64(i - 2))},
			"responses": []any{"alert", "revoke-task"}, "risk": num(rng.Int64N(100))}
	}
	return e
}

func realisticEntry(t testing.TB, i int, seed uint64) []byte {
	b, err := mandate.MarshalEvent(realisticEvent(i, seed, time.Unix(1764412800, 0)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWriteRealisticLog writes MANDATE_GENLOG_N realistic events (default
// one million) through the real store into the data directory
// MANDATE_GENLOG_DIR, with a clock that starts an hour ago, for measuring
// "mandate audit verify" against a real server (docs/benchmarks.md):
//
//	mandate serve --data D   # once, to create the keys; then stop it
//	MANDATE_GENLOG_DIR=D go test -run WriteRealisticLog -v ./auditcheck/
//	mandate serve --data D --public-audit
//
// Without MANDATE_GENLOG_DIR it is skipped.
func TestWriteRealisticLog(t *testing.T) {
	dir := os.Getenv("MANDATE_GENLOG_DIR")
	if dir == "" {
		t.Skip("set MANDATE_GENLOG_DIR to a data directory to write a log into it")
	}
	n := 1_000_000
	if s := os.Getenv("MANDATE_GENLOG_N"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now().Add(-time.Hour)
	clock := start
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(dir, "mandate.db"), Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base, _ := s.LogHead()
	var bytes int64
	const batch = 512
	evs := make([]*mandate.Event, 0, batch)
	for i := range n {
		e := realisticEvent(int(base)+i, 1, start)
		clock = time.Unix(0, e.Time)
		b, err := mandate.MarshalEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		bytes += int64(len(b))
		if evs = append(evs, e); len(evs) == batch || i == n-1 {
			if err := s.Append(context.Background(), evs...); err != nil {
				t.Fatal(err)
			}
			evs = evs[:0]
		}
	}
	t.Logf("appended %d events (%.0f bytes on average) after %d", n, float64(bytes)/float64(n), base)
}

// TestRealisticEventSizes keeps the generator honest: its events are as
// large as a real server's.
func TestRealisticEventSizes(t *testing.T) {
	var total int
	const n = 1600
	for i := range n {
		e := realisticEntry(t, i, 1)
		if _, err := mandate.ParseEvent(e); err != nil {
			t.Fatal(err)
		}
		total += len(e)
	}
	t.Logf("mean event size %d bytes", total/n)
	if mean := total / n; mean < 650 || mean > 950 {
		t.Errorf("mean event size %d bytes, want 650 to 950 (a real server's)", mean)
	}
}
