package secret

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

type stringer string

func (s stringer) String() string { return string(s) }

type text string

func (s text) MarshalText() ([]byte, error) { return []byte(s), nil }

// The log handler masks every text a line holds: the message, strings,
// errors, Stringers, TextMarshalers, byte slices, groups, and attributes
// given to With; and leaves the rest of the line as it was.
func TestHandler(t *testing.T) {
	const key = "AKIAIOSFODNN7EXAMPLE"
	var buf bytes.Buffer
	log := slog.New(Handler(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	log = log.With("with", "w "+key, slog.Group("g0", "x", key))
	log.Info("refused "+key, "s", "s "+key, "err", fmt.Errorf("wrapped: %w", errors.New("e "+key)),
		"stringer", stringer("st "+key), "text", text("tm "+key), "bytes", []byte("b "+key),
		slog.Group("g", "inner", "i "+key, "n", 7), "any", []string{"a " + key}, key, "as a key",
		"n", 42, "plain", "ada")
	got := buf.String()
	if strings.Contains(got, "AKIA") {
		t.Errorf("the line holds the key:\n%s", got)
	}
	for _, want := range []string{`msg="refused [secret:aws_access_key_id]"`, `with="w [secret:aws_access_key_id]"`,
		`g0.x=[secret:aws_access_key_id]`, `err="wrapped: e [secret:aws_access_key_id]"`, `g.inner="i [secret:aws_access_key_id]"`,
		`g.n=7`, `any="[a [secret:aws_access_key_id]]"`, " n=42 ", "plain=ada"} {
		if !strings.Contains(got, want) {
			t.Errorf("the line lacks %s:\n%s", want, got)
		}
	}
}
