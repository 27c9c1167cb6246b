package mandate

import (
	"encoding/json"
	"testing"
	"time"
)

func TestNumericDate(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"1764412800.030", time.Unix(1764412800, 30e6), true},
		{"1764412800", time.Unix(1764412800, 0), true},
		{"1764412800.1", time.Unix(1764412800, 100e6), true},
		{"1764412800.123456789123", time.Unix(1764412800, 123456789), true},
		{"1.7644128e9", time.Unix(1764412800, 0), true},
		{"-1.5", time.Time{}, false},
		{"-1e3", time.Time{}, false},
		{"1e400", time.Time{}, false},
		{"99999999999999", time.Time{}, false},
		{"\"1764412800\"", time.Time{}, false},
		{"1764412800.", time.Time{}, false}, // not JSON
		{".5", time.Time{}, false},
		{"0x10", time.Time{}, false},
	}
	for _, tt := range tests {
		var d NumericDate
		err := json.Unmarshal([]byte(tt.in), &d)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if tt.ok && !d.Equal(tt.want) {
			t.Errorf("%s: got %v, want %v", tt.in, d.Time, tt.want)
		}
	}
	for _, tc := range []struct {
		t    time.Time
		want string
	}{
		{time.Unix(1764412800, 30e6), "1764412800.030"},
		{time.Unix(1764412800, 30999999), "1764412800.030"},
		{time.Unix(0, 5e6), "0.005"},
		{time.Unix(0, -1500e6), "-1.500"},
		{time.Unix(1764412800, 999999), "1764412800"},
	} {
		b, _ := json.Marshal(NewNumericDate(tc.t))
		if string(b) != tc.want {
			t.Errorf("marshal %v: %s, want %s", tc.t, b, tc.want)
		}
	}
}

func TestClaimsRoundTrip(t *testing.T) {
	iat := NewNumericDate(time.Unix(1764412800, 0))
	c := Claims{Issuer: "https://m", Subject: "user:a@b.c", ClientID: "spiffe://x/agent/a",
		Actor:    &Actor{Subject: "spiffe://x/agent/b", Actor: &Actor{Subject: "spiffe://x/agent/a"}},
		Audience: Audience{"mcp:crm"}, IssuedAt: iat, NotBefore: iat, Expiry: NumericDate{iat.Add(30 * time.Millisecond)},
		ID: "m_1", Scope: "mcp:crm:x", Task: "t_1", Parent: "m_0", Confirm: &Confirmation{JKT: "j"}}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"iss":"https://m","sub":"user:a@b.c","client_id":"spiffe://x/agent/a","act":{"sub":"spiffe://x/agent/b","act":{"sub":"spiffe://x/agent/a"}},"aud":["mcp:crm"],"iat":1764412800,"nbf":1764412800,"exp":1764412800.030,"jti":"m_1","scope":"mcp:crm:x","task":"t_1","par":"m_0","cnf":{"jkt":"j"}}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	var back Claims
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !back.Expiry.Equal(c.Expiry.Time) || back.Depth() != 2 || back.Actor.Chain()[1] != "spiffe://x/agent/a" {
		t.Errorf("round trip: %+v", back)
	}
	var aud Audience
	if err := json.Unmarshal([]byte(`"mcp:crm"`), &aud); err != nil || len(aud) != 1 {
		t.Errorf("aud as a string: %v %v", aud, err)
	}
}

func FuzzNumericDate(f *testing.F) {
	for _, s := range []string{"1764412800.030", "1e9", "-0.5", "null", "1.7644128e9", "0.0000000001"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tm, err := ParseNumericDate([]byte(s))
		if err != nil || tm.IsZero() {
			return
		}
		// Whatever parses, encodes and parses back to the same millisecond.
		b, err := NewNumericDate(tm).MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseNumericDate(b)
		if err != nil || !back.Equal(tm.Truncate(time.Millisecond)) {
			t.Fatalf("%q -> %v -> %s -> %v (%v)", s, tm, b, back, err)
		}
	})
}

func TestNewID(t *testing.T) {
	now := time.Now()
	a, b := NewID("m_", now), NewID("m_", now.Add(time.Millisecond))
	if len(a) != 28 || a[:2] != "m_" || a >= b {
		t.Errorf("ids %s %s: want 26 characters after the prefix, sorted by time", a, b)
	}
}
