package noredirect

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// A redirect is the answer, for a client made from nil or from one that
// would follow it; the original client is unchanged.
func TestClient(t *testing.T) {
	reached := false
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true }))
	defer target.Close()
	redirect := httptest.NewServer(http.RedirectHandler(target.URL, http.StatusTemporaryRedirect))
	defer redirect.Close()
	follows := &http.Client{}
	for _, c := range []*http.Client{Client(nil), Client(follows)} {
		resp, err := c.Get(redirect.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTemporaryRedirect || reached {
			t.Errorf("status %d, target reached %v", resp.StatusCode, reached)
		}
	}
	if follows.CheckRedirect != nil {
		t.Error("the caller's client was changed")
	}
}
