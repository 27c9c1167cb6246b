package main

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/httpapi"
)

// The commands here make, for a client that is not Mandate's own (curl, a
// script), the two signed JWTs its requests need. Each prints the JWT alone
// on standard output, so that a shell can take it with $(...).

// assertion prints a client assertion (RFC 7523 §3) with which an agent
// authenticates at the token endpoint: iss = sub = the agent's SPIFFE ID,
// aud = the server's issuer identifier, valid for one minute.
func (c *cli) assertion(args []string) error {
	fs := c.flags("assertion", "--key KEYFILE --agent NAME|SPIFFE-ID [--issuer URL | --server URL]")
	keyFile := fs.String("key", "", "the agent's private JWK, which signs the assertion")
	agent := fs.String("agent", "", "the agent's name or SPIFFE ID")
	iss := fs.String("issuer", "", "the server's issuer identifier, the assertion's aud (default: read from the server's RFC 8414 metadata)")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	if *keyFile == "" || *agent == "" {
		return usageError{"assertion: --key and --agent are required"}
	}
	if *iss != "" {
		if err := checkHTTPURL("--issuer", *iss, "http://127.0.0.1:7676"); err != nil {
			return err
		}
	}
	key, _, err := readKeyFile(*keyFile)
	if err != nil {
		return err
	}
	if key == nil {
		return fmt.Errorf("%s holds a public key only\nhint: --key needs the agent's private JWK", *keyFile)
	}
	cl := &httpapi.Client{BaseURL: c.server}
	// The server is asked only for what the arguments do not say: a SPIFFE
	// ID and --issuer make the assertion offline.
	id, err := c.agentID(cl, *agent)
	if err != nil {
		return err
	}
	aud := *iss
	if aud == "" {
		md, err := cl.Metadata(c.ctx)
		if err != nil {
			return err
		}
		aud = md.Issuer
	}
	fmt.Fprintln(c.stdout, httpapi.ClientAssertion(key, id, aud, time.Now()))
	return nil
}

// dpopProof prints a DPoP proof (RFC 9449 §4) for one request. With
// --ath-of it carries ath, the hash of the access token it goes with
// (§4.2), as a resource requires (§7.1); the token endpoint takes a proof
// without it.
func (c *cli) dpopProof(args []string) error {
	fs := c.flags("dpop-proof", "--key KEYFILE --url URL [--method POST] [--ath-of TOKEN|FILE|-]")
	keyFile := fs.String("key", "", "the private JWK the proof is signed with, the key the mandate is bound to")
	method := fs.String("method", "POST", "the request's HTTP method (htm)")
	target := fs.String("url", "", "the request's URL (htu; its query and fragment are left out)")
	athOf := fs.String("ath-of", "", "the access token the request presents (the token, a file holding it, or - for standard input)")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	if *keyFile == "" || *target == "" {
		return usageError{"dpop-proof: --key and --url are required"}
	}
	if !isToken(*method) {
		return usageError{fmt.Sprintf("dpop-proof: --method %q is not an HTTP method; give it as curl sends it, e.g. POST", *method)}
	}
	if err := checkHTTPURL("--url", *target, "http://127.0.0.1:7676/oauth2/token"); err != nil {
		return err
	}
	key, _, err := readKeyFile(*keyFile)
	if err != nil {
		return err
	}
	if key == nil {
		return fmt.Errorf("%s holds a public key only\nhint: --key needs the private JWK", *keyFile)
	}
	tok := ""
	if *athOf != "" {
		if tok, err = readToken(*athOf, c.stdin); err != nil {
			return err
		}
		if tok == "" {
			return fmt.Errorf("--ath-of %s: no access token in it\nhint: pass the mandate, a file holding it, or - to read it from standard input", *athOf)
		}
	}
	fmt.Fprintln(c.stdout, dpop.NewProofMillis(key, *method, *target, tok, time.Now()))
	return nil
}

// checkHTTPURL refuses what a server would not take as an htu or an
// issuer: anything but an absolute http or https URL.
func checkHTTPURL(flag, s, example string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s %q is not an absolute http(s) URL\nhint: give it in full, e.g. %s", flag, s, example)
	}
	return nil
}

// isToken reports whether s is an HTTP method: a token (RFC 9110 §5.6.2)
// in upper case, as methods are case-sensitive and all registered ones are
// upper case.
func isToken(s string) bool {
	return s != "" && strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~") == ""
}
