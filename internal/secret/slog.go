package secret

import (
	"context"
	"encoding"
	"fmt"
	"log/slog"
)

// Handler returns a slog.Handler that masks, before h writes them, the
// secrets in a record's message and in its attributes' values: strings,
// errors, and whatever else h would print as text (a Stringer, a
// TextMarshaler, any value fmt prints). What it masks is written as a
// string; numbers, times and values that hold no secret are passed on as
// they are. It is the server's last line: a log line that quotes what a
// caller sent, in whatever package, writes no credential.
func Handler(h slog.Handler) slog.Handler { return &handler{h: h} }

type handler struct{ h slog.Handler }

func (m *handler) Enabled(ctx context.Context, l slog.Level) bool { return m.h.Enabled(ctx, l) }

func (m *handler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, Mask(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(maskAttr(a))
		return true
	})
	return m.h.Handle(ctx, out)
}

func (m *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	masked := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		masked[i] = maskAttr(a)
	}
	return &handler{h: m.h.WithAttrs(masked)}
}

func (m *handler) WithGroup(name string) slog.Handler {
	return &handler{h: m.h.WithGroup(Mask(name))}
}

// maskAttr masks the key and the value of a (a group's, member by member).
func maskAttr(a slog.Attr) slog.Attr {
	a.Key = Mask(a.Key)
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		a.Value = slog.StringValue(Mask(v.String()))
	case slog.KindGroup:
		members := v.Group()
		masked := make([]slog.Attr, len(members))
		for i, g := range members {
			masked[i] = maskAttr(g)
		}
		a.Value = slog.GroupValue(masked...)
	case slog.KindAny:
		var text string
		switch x := v.Any().(type) {
		case error:
			text = x.Error()
		case []byte:
			text = string(x)
		case encoding.TextMarshaler:
			b, err := x.MarshalText()
			if err != nil {
				return a
			}
			text = string(b)
		default:
			text = fmt.Sprintf("%+v", x)
		}
		if masked := Mask(text); masked != text {
			a.Value = slog.StringValue(masked)
		} else {
			a.Value = v
		}
	default:
		a.Value = v
	}
	return a
}
