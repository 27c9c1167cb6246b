package policy

import (
	"bytes"
	_ "embed"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
	"github.com/cedar-policy/cedar-go/x/exp/schema"
	"github.com/cedar-policy/cedar-go/x/exp/schema/resolved"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"
)

//go:embed schema.cedarschema
var schemaText []byte

// Schema returns the Cedar schema that every policy set is validated
// against, in the human-readable schema format (docs/policy.md explains it).
// Its context.args is an empty record: the engine types the tool arguments
// from the policies' own use of them when it loads a set (see docs/policy.md,
// "Tool arguments").
func Schema() []byte { return bytes.Clone(schemaText) }

// baseSchema is the embedded schema, parsed and resolved once.
var baseSchema = sync.OnceValues(func() (*resolved.Schema, error) {
	var s schema.Schema
	s.SetFilename("schema.cedarschema")
	if err := s.UnmarshalCedar(schemaText); err != nil {
		return nil, err
	}
	return s.Resolve()
})

// validatePolicies checks ps against the schema: it types context.args from
// the policies' use of it, then runs cedar-go's strict validator over each
// policy. It returns one diagnostic per problem.
func validatePolicies(ps []*entry) []Diagnostic {
	base, err := baseSchema()
	if err != nil {
		// The schema is embedded and tested: this is a bug.
		return []Diagnostic{{File: "schema.cedarschema", Line: 1, Col: 1, Message: "the built-in schema does not load: " + err.Error()}}
	}
	var diags []Diagnostic
	inf := newArgsInference()
	for _, e := range ps {
		for _, c := range e.ast.Conditions {
			inf.walk(e, c.Body, anyArg)
		}
	}
	for _, c := range inf.conflicts {
		diags = append(diags, c.e.diag(c.msg))
	}
	v := validate.New(withArgs(base, inf.root.cedarType().(resolved.RecordType)))
	for _, e := range ps {
		err := v.Policy(e.id, e.ast)
		for _, msg := range flatten(err) {
			msg = strings.TrimPrefix(msg, "for policy `"+e.id+"`, ")
			diags = append(diags, e.diag(msg))
		}
	}
	return diags
}

func flatten(err error) []string {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []string{err.Error()}
}

// withArgs returns a copy of s in which every action's context.args has type
// args. s itself is shared and left alone.
func withArgs(s *resolved.Schema, args resolved.RecordType) *resolved.Schema {
	out := *s
	out.Actions = make(map[types.EntityUID]resolved.Action, len(s.Actions))
	for uid, a := range s.Actions {
		if a.AppliesTo != nil {
			at := *a.AppliesTo
			at.Context = maps.Clone(at.Context)
			at.Context["args"] = resolved.Attribute{Type: args}
			a.AppliesTo = &at
		}
		out.Actions[uid] = a
	}
	return &out
}

// Tool arguments are untyped JSON, but Cedar's validator types every
// attribute. So the engine infers, for each path under context.args that
// the policies use, the type that use implies: the operand of like is a
// String, of < or + a Long, of && a Bool, the receiver of contains a Set, an
// attribute compared with a literal has the literal's type, and so on. Every
// inferred attribute is optional, so the validator requires a has test
// before each use, as it must be for untrusted input. A path used as two
// different types is an error; a path whose type nothing implies is a
// String.

type argKind int

const (
	argAny argKind = iota // nothing implies a type yet
	argString
	argLong
	argBool
	argSet
	argRecord
	argEntity // only to report: tool arguments never hold entities
)

var argKindNames = [...]string{"anything", "String", "Long", "Bool", "Set", "Record", "entity"}

type argType struct {
	kind  argKind
	elem  *argType            // argSet
	attrs map[string]*argType // argRecord
	by    *entry              // the first policy that implied the type
}

var anyArg = &argType{}

func (t *argType) String() string {
	switch t.kind {
	case argSet:
		return "Set<" + t.elem.String() + ">"
	default:
		return argKindNames[t.kind]
	}
}

func (t *argType) cedarType() resolved.IsType {
	switch t.kind {
	case argLong:
		return resolved.LongType{}
	case argBool:
		return resolved.BoolType{}
	case argSet:
		return resolved.SetType{Element: t.elem.cedarType()}
	case argRecord:
		r := make(resolved.RecordType, len(t.attrs))
		for k, a := range t.attrs {
			r[types.String(k)] = resolved.Attribute{Type: a.cedarType(), Optional: true}
		}
		return r
	default:
		return resolved.StringType{}
	}
}

type argConflict struct {
	e   *entry
	msg string
}

type argsInference struct {
	root      *argType
	conflicts []argConflict
}

func newArgsInference() *argsInference {
	return &argsInference{root: &argType{kind: argRecord, attrs: map[string]*argType{}}}
}

// note records that policy e uses context.args.<path> as type t.
func (in *argsInference) note(e *entry, path []string, t *argType) {
	e.usesArgs = true
	cur := in.root
	for i, name := range path {
		if cur.kind != argRecord {
			in.conflict(e, path[:i], cur, &argType{kind: argRecord})
			return
		}
		next := cur.attrs[name]
		if next == nil {
			next = &argType{by: e}
			cur.attrs[name] = next
		}
		if i < len(path)-1 && next.kind == argAny {
			next.kind, next.attrs = argRecord, map[string]*argType{}
		}
		cur = next
	}
	in.merge(e, path, cur, t)
}

func (in *argsInference) merge(e *entry, path []string, dst, t *argType) {
	switch {
	case t.kind == argAny:
	case t.kind == argEntity:
		in.conflicts = append(in.conflicts, argConflict{e, fmt.Sprintf("%s is used as an entity, but tool arguments hold only strings, numbers, booleans, sets and records", argPath(path))})
	case dst.kind == argAny:
		dst.kind, dst.by = t.kind, e
		if t.kind == argSet {
			dst.elem = &argType{by: e}
			in.merge(e, append(path, "[]"), dst.elem, t.elem)
		}
		if t.kind == argRecord && dst.attrs == nil {
			dst.attrs = map[string]*argType{}
		}
	case dst.kind != t.kind:
		in.conflict(e, path, dst, t)
	case t.kind == argSet:
		in.merge(e, append(path, "[]"), dst.elem, t.elem)
	}
}

func (in *argsInference) conflict(e *entry, path []string, had, t *argType) {
	where := "here"
	if had.by != nil && had.by != e {
		where = "in policy " + had.by.id
	}
	in.conflicts = append(in.conflicts, argConflict{e, fmt.Sprintf("%s is used as a %s here but as a %s %s: a tool argument has one type; hint: compare it with values of one type, or use two arguments", argPath(path), t, had, where)})
}

func argPath(path []string) string {
	var b strings.Builder
	b.WriteString("context.args")
	for _, p := range path {
		if p == "[]" {
			b.WriteString("[element]")
		} else if isIdent(p) {
			b.WriteString("." + p)
		} else {
			fmt.Fprintf(&b, "[%q]", p)
		}
	}
	return b.String()
}

func isIdent(s string) bool {
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return s != ""
}

// argsPathOf returns the path below context.args that n accesses, and
// whether n is such an access (context.args itself is the empty path).
func argsPathOf(n xast.IsNode) ([]string, bool) {
	var rev []string
	for {
		a, ok := n.(xast.NodeTypeAccess)
		if !ok {
			return nil, false
		}
		if v, ok := a.Arg.(xast.NodeTypeVariable); ok {
			if v.Name != "context" || a.Value != "args" {
				return nil, false
			}
			slices.Reverse(rev)
			return rev, true
		}
		rev = append(rev, string(a.Value))
		n = a.Arg
	}
}

// typeOfLiteral is the argument type a literal value implies for what it is
// compared with.
func typeOfLiteral(n xast.IsNode) *argType {
	v, ok := n.(xast.NodeValue)
	if !ok {
		if s, ok := n.(xast.NodeTypeSet); ok {
			elem := anyArg
			for _, x := range s.Elements {
				if t := typeOfLiteral(x); t.kind != argAny {
					elem = t
					break
				}
			}
			return &argType{kind: argSet, elem: elem}
		}
		return anyArg
	}
	switch x := v.Value.(type) {
	case types.String:
		return &argType{kind: argString}
	case types.Long:
		return &argType{kind: argLong}
	case types.Boolean:
		return &argType{kind: argBool}
	case types.EntityUID:
		return &argType{kind: argEntity}
	case types.Set:
		elem := anyArg
		for y := range x.All() {
			if t := typeOfLiteral(xast.NodeValue{Value: y}); t.kind != argAny {
				elem = t
				break
			}
		}
		return &argType{kind: argSet, elem: elem}
	}
	return anyArg
}

func setOf(elem *argType) *argType { return &argType{kind: argSet, elem: elem} }

var (
	stringArg = &argType{kind: argString}
	longArg   = &argType{kind: argLong}
	boolArg   = &argType{kind: argBool}
	entityArg = &argType{kind: argEntity}
)

// walk visits n, which its parent uses as type want.
func (in *argsInference) walk(e *entry, n xast.IsNode, want *argType) {
	if p, ok := argsPathOf(n); ok {
		in.note(e, p, want)
		return
	}
	switch x := n.(type) {
	case xast.NodeTypeAccess:
		if _, ok := x.Arg.(xast.NodeTypeVariable); !ok {
			in.walk(e, x.Arg, anyArg)
		}
	case xast.NodeTypeHas:
		if p, ok := argsPathOf(x.Arg); ok {
			in.note(e, append(p, string(x.Value)), anyArg)
			return
		}
		if _, ok := x.Arg.(xast.NodeTypeVariable); !ok {
			in.walk(e, x.Arg, anyArg)
		}
	case xast.NodeTypeAnd:
		in.walk(e, x.Left, boolArg)
		in.walk(e, x.Right, boolArg)
	case xast.NodeTypeOr:
		in.walk(e, x.Left, boolArg)
		in.walk(e, x.Right, boolArg)
	case xast.NodeTypeNot:
		in.walk(e, x.Arg, boolArg)
	case xast.NodeTypeIfThenElse:
		in.walk(e, x.If, boolArg)
		in.walk(e, x.Then, want)
		in.walk(e, x.Else, want)
	case xast.NodeTypeEquals:
		in.walk(e, x.Left, typeOfLiteral(x.Right))
		in.walk(e, x.Right, typeOfLiteral(x.Left))
	case xast.NodeTypeNotEquals:
		in.walk(e, x.Left, typeOfLiteral(x.Right))
		in.walk(e, x.Right, typeOfLiteral(x.Left))
	case xast.NodeTypeLessThan:
		in.walk(e, x.Left, longArg)
		in.walk(e, x.Right, longArg)
	case xast.NodeTypeLessThanOrEqual:
		in.walk(e, x.Left, longArg)
		in.walk(e, x.Right, longArg)
	case xast.NodeTypeGreaterThan:
		in.walk(e, x.Left, longArg)
		in.walk(e, x.Right, longArg)
	case xast.NodeTypeGreaterThanOrEqual:
		in.walk(e, x.Left, longArg)
		in.walk(e, x.Right, longArg)
	case xast.NodeTypeAdd:
		in.walk(e, x.Left, longArg)
		in.walk(e, x.Right, longArg)
	case xast.NodeTypeSub:
		in.walk(e, x.Left, longArg)
		in.walk(e, x.Right, longArg)
	case xast.NodeTypeMult:
		in.walk(e, x.Left, longArg)
		in.walk(e, x.Right, longArg)
	case xast.NodeTypeNegate:
		in.walk(e, x.Arg, longArg)
	case xast.NodeTypeLike:
		in.walk(e, x.Arg, stringArg)
	case xast.NodeTypeIn:
		in.walk(e, x.Left, entityArg)
		in.walk(e, x.Right, entityArg)
	case xast.NodeTypeIs:
		in.walk(e, x.Left, entityArg)
	case xast.NodeTypeIsIn:
		in.walk(e, x.Left, entityArg)
		in.walk(e, x.Entity, entityArg)
	case xast.NodeTypeContains:
		in.walk(e, x.Left, setOf(typeOfLiteral(x.Right)))
		in.walk(e, x.Right, anyArg)
	case xast.NodeTypeContainsAll:
		in.walk(e, x.Left, setOf(elemOf(typeOfLiteral(x.Right))))
		in.walk(e, x.Right, setOf(elemOf(typeOfLiteral(x.Left))))
	case xast.NodeTypeContainsAny:
		in.walk(e, x.Left, setOf(elemOf(typeOfLiteral(x.Right))))
		in.walk(e, x.Right, setOf(elemOf(typeOfLiteral(x.Left))))
	case xast.NodeTypeIsEmpty:
		in.walk(e, x.Arg, setOf(anyArg))
	case xast.NodeTypeHasTag:
		in.walk(e, x.Left, entityArg)
		in.walk(e, x.Right, stringArg)
	case xast.NodeTypeGetTag:
		in.walk(e, x.Left, entityArg)
		in.walk(e, x.Right, stringArg)
	case xast.NodeTypeExtensionCall:
		for _, a := range x.Args {
			in.walk(e, a, anyArg)
		}
	case xast.NodeTypeRecord:
		for _, el := range x.Elements {
			in.walk(e, el.Value, anyArg)
		}
	case xast.NodeTypeSet:
		for _, el := range x.Elements {
			in.walk(e, el, anyArg)
		}
	case xast.NodeTypeVariable:
		if x.Name == "context" {
			e.usesArgs = true // the whole context, arguments included
		}
	case xast.NodeValue:
	default:
		// A node type this walk does not know (a newer cedar-go): say so
		// rather than guess.
		in.conflicts = append(in.conflicts, argConflict{e, fmt.Sprintf("internal: unknown expression %T; hint: report this", n)})
	}
}

func elemOf(t *argType) *argType {
	if t.kind == argSet {
		return t.elem
	}
	return anyArg
}
