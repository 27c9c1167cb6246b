package httpapi_test

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/issuer"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// x/oauth2, unmodified, in its documented configuration for a client
// assertion (EndpointParams), reads a 500 ms mandate as expiring: expires_in
// is rounded up to 1, where a 0 meant "never expires" to it and it kept the
// mandate after it died. Its default early expiry of 10 s then fetches anew
// for every call; the exact lifetime is in expires_in_ms.
func TestXOAuth2SubSecondMandateExpires(t *testing.T) {
	ts := newServer(t)
	key := ts.addAgent(t, "a", "mcp:crm:*")
	const agent = "spiffe://example.org/agent/a"
	assertion := func() url.Values {
		return url.Values{
			"client_assertion_type": {issuer.ClientAssertionType},
			"client_assertion":      {httpapi.ClientAssertion(key, agent, ts.URL, time.Now())},
			"ttl_ms":                {"500"},
		}
	}
	cfg := &clientcredentials.Config{ClientID: agent, TokenURL: ts.URL + "/oauth2/token", Scopes: []string{"mcp:crm:list"},
		AuthStyle: oauth2.AuthStyleInParams, EndpointParams: assertion()}
	ctx := context.Background()
	before := time.Now()
	tok, err := cfg.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Expiry.IsZero() || tok.Expiry.Before(before.Add(500*time.Millisecond)) || tok.Expiry.After(time.Now().Add(time.Second)) {
		t.Fatalf("expiry %v for a 500 ms mandate fetched at %v", tok.Expiry, before)
	}
	if tok.Extra("expires_in") != 1.0 || tok.Extra("expires_in_ms") != 500.0 {
		t.Fatalf("expires_in %v, expires_in_ms %v", tok.Extra("expires_in"), tok.Extra("expires_in_ms"))
	}
	// Valid applies the default early expiry of 10 s: a mandate shorter
	// than that is never reused.
	if tok.Valid() {
		t.Fatal("x/oauth2 takes a 500 ms mandate as valid under its 10 s early expiry")
	}

	// Its token source therefore fetches again for each call; with the
	// same static assertion the second fetch is refused (its jti is used),
	// so each fetch needs a fresh one.
	cfg.EndpointParams = assertion()
	src := cfg.TokenSource(ctx)
	if _, err := src.Token(); err != nil {
		t.Fatal(err)
	}
	var re *oauth2.RetrieveError
	if _, err := src.Token(); !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
		t.Fatalf("a reused assertion: %v", err)
	}

	// ReuseTokenSourceWithExpiry with a small early expiry (0 means the
	// default 10 s) keeps the mandate until its rounded-up expiry.
	cfg.EndpointParams = assertion()
	reuse := oauth2.ReuseTokenSourceWithExpiry(nil, cfg.TokenSource(ctx), time.Millisecond)
	a, err := reuse.Token()
	if err != nil {
		t.Fatal(err)
	}
	if b, err := reuse.Token(); err != nil || b.AccessToken != a.AccessToken {
		t.Fatalf("not reused: %v", err)
	}
}
