package mandate

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
)

// Claims are the claims of a mandate, the JWT payload of DESIGN.md.
//
// Times are [NumericDate]s. exp has millisecond precision, as RFC 7519 §2
// allows ("a JSON numeric value ... non-integer values can be represented"):
// a 30 ms mandate needs it. iat and nbf are whole seconds, rounded down from
// the issuance, because verifiers such as PyJWT floor the current time and
// would refuse a fractional iat until the next second.
type Claims struct {
	Issuer    string        `json:"iss"`
	Subject   string        `json:"sub"`           // the accountable human, user:<email>
	ClientID  string        `json:"client_id"`     // the agent holding this mandate (RFC 9068 §2.2)
	Actor     *Actor        `json:"act,omitempty"` // the chain of actors, current outermost (RFC 8693 §4.1)
	Audience  Audience      `json:"aud,omitempty"`
	IssuedAt  NumericDate   `json:"iat"`
	NotBefore NumericDate   `json:"nbf"`
	Expiry    NumericDate   `json:"exp"`
	ID        string        `json:"jti"`
	Scope     string        `json:"scope,omitempty"` // space-separated scopes (RFC 8693 §4.2)
	Task      string        `json:"task"`
	Parent    string        `json:"par,omitempty"` // the parent mandate's jti; empty for a root mandate
	Confirm   *Confirmation `json:"cnf,omitempty"` // key binding (RFC 9449 §6.1)
}

// Actor is one link of the delegation chain (RFC 8693 §4.1): Subject is the
// actor, and Actor the one before it.
type Actor struct {
	Subject string `json:"sub"`
	Actor   *Actor `json:"act,omitempty"`
}

// Chain returns the actors from the current one (index 0) back to the root.
func (a *Actor) Chain() []string {
	var out []string
	for ; a != nil; a = a.Actor {
		out = append(out, a.Subject)
	}
	return out
}

// Depth is the number of actors in the chain.
func (c *Claims) Depth() int { return len(c.Actor.Chain()) }

// Confirmation is the cnf claim. JKT is the RFC 7638 thumbprint of the
// holder's public key, base64url-encoded (RFC 9449 §6.1).
type Confirmation struct {
	JKT string `json:"jkt"`
}

// Scopes parses the scope claim.
func (c *Claims) Scopes() (ScopeSet, error) { return ParseScopeSet(c.Scope) }

// Audience is the aud claim. It encodes as an array and decodes from either
// a string or an array of strings (RFC 7519 §4.1.3).
type Audience []string

// Contains reports whether aud names s.
func (a Audience) Contains(s string) bool {
	for _, x := range a {
		if x == s {
			return true
		}
	}
	return false
}

func (a *Audience) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = Audience{s}
		return nil
	}
	var ss []string
	if err := json.Unmarshal(b, &ss); err != nil {
		return errors.New("aud must be a string or an array of strings")
	}
	*a = ss
	return nil
}

// NumericDate is a JWT NumericDate with millisecond precision. It encodes as
// seconds since the epoch with a three-digit fraction (1764412800.030), or
// none for a whole second (1764412800: what libraries expect of iat), and
// decodes any JSON number, keeping at most nanosecond precision without a
// round trip through float64.
type NumericDate struct{ time.Time }

// NewNumericDate truncates t to the millisecond.
func NewNumericDate(t time.Time) NumericDate { return NumericDate{t.Truncate(time.Millisecond)} }

func (d NumericDate) MarshalJSON() ([]byte, error) {
	if d.IsZero() {
		return []byte("0"), nil
	}
	ms := d.UnixMilli()
	var b []byte
	if ms < 0 { // before 1970: never in a mandate, but encode it exactly
		b, ms = append(b, '-'), -ms
	}
	sec, frac := ms/1000, ms%1000
	b = strconv.AppendInt(b, sec, 10)
	if frac == 0 {
		return b, nil
	}
	b = append(b, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
	return b, nil
}

// maxNumericDate bounds decoded dates so that arithmetic on them cannot
// overflow: year 9999.
const maxNumericDate = 253402300799

func (d *NumericDate) UnmarshalJSON(b []byte) error {
	t, err := ParseNumericDate(b)
	if err != nil {
		return err
	}
	d.Time = t
	return nil
}

// ParseNumericDate parses the text of a JSON number as seconds since the
// epoch; JSON null gives the zero time. Dates before 1970 are refused: no
// credential of Mandate's has one.
func ParseNumericDate(b []byte) (time.Time, error) {
	s := string(bytes.TrimSpace(b))
	if s == "null" {
		return time.Time{}, nil
	}
	if strings.ContainsAny(s, "eE") {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > maxNumericDate {
			return time.Time{}, errors.New("invalid NumericDate")
		}
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(math.Round(frac*1e9))).UTC(), nil
	}
	intPart, fracPart, _ := strings.Cut(s, ".")
	if intPart == "" || len(intPart) > 12 || !allDigits(intPart) || !allDigits(fracPart) {
		return time.Time{}, errors.New("invalid NumericDate")
	}
	sec, _ := strconv.ParseInt(intPart, 10, 64)
	if sec > maxNumericDate {
		return time.Time{}, errors.New("NumericDate out of range")
	}
	if len(fracPart) > 9 {
		fracPart = fracPart[:9] // beyond nanoseconds: truncate
	}
	var nsec int64
	if fracPart != "" {
		nsec, _ = strconv.ParseInt(fracPart+strings.Repeat("0", 9-len(fracPart)), 10, 64)
	}
	return time.Unix(sec, nsec).UTC(), nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
