package mandate

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateAgentLabels(t *testing.T) {
	many := make([]string, MaxAgentLabels+1)
	for i := range many {
		many[i] = "l" + strings.Repeat("x", i)
	}
	tests := []struct {
		name   string
		labels []string
		ok     bool
	}{
		{"none", nil, true},
		{"plain", []string{"batch", "team:payments", "tier.1", "night_only", "a-b"}, true},
		{"longest", []string{strings.Repeat("a", MaxAgentLabelLen)}, true},
		{"most", many[:MaxAgentLabels], true},
		{"too many", many, false},
		{"too long", []string{strings.Repeat("a", MaxAgentLabelLen+1)}, false},
		{"empty", []string{""}, false},
		{"upper case", []string{"Batch"}, false},
		{"space", []string{"two words"}, false},
		{"slash", []string{"team/payments"}, false},
		{"non-ASCII", []string{"équipe"}, false},
		{"duplicate", []string{"batch", "internal", "batch"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateAgentLabels(tt.labels)
			if got := err == nil; got != tt.ok {
				t.Fatalf("ValidateAgentLabels(%q) = %v, want ok %v", tt.labels, err, tt.ok)
			}
			var e *Error
			if err != nil && (!errors.As(err, &e) || e.Code != EINVALID) {
				t.Errorf("error %v: want code %s", err, EINVALID)
			}
		})
	}
}

func TestAgentValidateLabels(t *testing.T) {
	ceiling, _ := ParseScopeSet("mcp:crm:*")
	a := &Agent{Name: "a", Owner: "alice@example.org", Ceiling: ceiling, PublicKey: make([]byte, 32),
		Labels: []string{"batch", "batch"}}
	if err := a.Validate(); err == nil || !strings.Contains(err.Error(), `label "batch" is given twice`) {
		t.Errorf("Validate with a duplicate label: %v", err)
	}
	a.Labels = []string{"batch"}
	if err := a.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}
