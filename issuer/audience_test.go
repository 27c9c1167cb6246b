package issuer

import (
	"strings"
	"testing"

	"github.com/mandatehq/mandate"
)

// The audience of a mandate comes from its scopes' servers, whatever the
// scopes name on them: tools, prompts or resources (whose URIs hold ":").
func TestAudienceOfEverySortOfScope(t *testing.T) {
	scopes, err := mandate.ParseScopeSet("mcp:files:resource:file:///public/** mcp:docs:prompt:review mcp:crm:list http:api:GET:/a:b mcp:x*:resource:**")
	if err != nil {
		t.Fatal(err)
	}
	aud, err := audience(nil, scopes)
	if err != nil || strings.Join(aud, " ") != "mcp:files mcp:docs mcp:crm http:api" {
		t.Errorf("audience %v %v", aud, err)
	}
	for _, r := range []string{"mcp:files", "mcp:docs", "mcp:xy"} {
		if aud, err := audience([]string{r}, scopes); err != nil || strings.Join(aud, " ") != r {
			t.Errorf("resource %s: %v %v", r, aud, err)
		}
	}
	for _, r := range []string{"mcp:resource", "mcp:file", "mcp:prompt"} {
		if _, err := audience([]string{r}, scopes); err == nil {
			t.Errorf("resource %s is reached by none of the scopes, yet allowed", r)
		}
	}
}
