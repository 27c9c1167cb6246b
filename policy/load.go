package policy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"

	"github.com/mandatehq/mandate"
)

// Limits on a policy directory.
const (
	MaxFileSize = 1 << 20 // bytes in one *.cedar file
	MaxFiles    = 1000    // *.cedar files in the directory
	MaxPolicies = 10000   // policies in the set
)

// Annotations that Mandate reads. Any other annotation is refused, so that
// a misspelt @aproval cannot silently drop an obligation, except those
// whose key starts with x_, which are the policy author's own.
const (
	AnnotationID       = "id"         // the policy's ID in decisions and the audit log
	AnnotationReason   = "reason"     // the line a decision gives as its reason
	AnnotationApproval = "approval"   // "required": allow only after approval (permits)
	AnnotationMaxTTL   = "max_ttl_ms" // a lifetime cap in milliseconds (permits)
)

// Diagnostic is one problem in a policy directory.
type Diagnostic struct {
	File    string // the file's path
	Line    int    // from 1; 0 when the problem is not in one place
	Col     int    // from 1
	Policy  string // the policy's ID, when the problem is in one policy
	Message string
}

func (d Diagnostic) String() string {
	var b strings.Builder
	b.WriteString(d.File)
	if d.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", d.Line, d.Col)
	}
	b.WriteString(": ")
	if d.Policy != "" {
		b.WriteString("policy " + d.Policy + ": ")
	}
	b.WriteString(d.Message)
	return b.String()
}

// InvalidSetError is the error for a policy set that does not load: it
// lists every problem found. The set is never used.
type InvalidSetError struct {
	Dir         string
	Hash        string // of the files as read
	Diagnostics []Diagnostic
}

func (e *InvalidSetError) Error() string {
	msg := fmt.Sprintf("policy set %s is invalid", e.Dir)
	switch n := len(e.Diagnostics); n {
	case 0:
	case 1:
		msg += ": " + e.Diagnostics[0].String()
	default:
		msg += fmt.Sprintf(": %s (and %d more problems)", e.Diagnostics[0], n-1)
	}
	return msg
}

// entry is one compiled policy of a set.
type entry struct {
	id       string
	index    int    // in the set
	path     string // the file's path, for diagnostics
	pos      types.Position
	policy   *cedar.Policy
	ast      *xast.Policy
	approval bool
	maxTTL   time.Duration
	reason   string
	actions  []string // the actions its scope can match; nil: any
	usesArgs bool     // reads context.args
	label    string   // a label the resource must carry to match (index.go)
}

func (e *entry) diag(msg string) Diagnostic {
	return Diagnostic{File: e.path, Line: e.pos.Line, Col: e.pos.Column, Policy: e.id, Message: msg}
}

// policyList is an ordered list of policies, as cedar.Authorize takes them.
type policyList []*entry

func (l policyList) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		for _, e := range l {
			if !yield(cedar.PolicyID(e.id), e.policy) {
				return
			}
		}
	}
}

// Set is a parsed and validated policy set: immutable, safe for concurrent
// use. Obtain one from [LoadDir], [NewSet] or [Engine.Set].
type Set struct {
	hash     string
	dir      string
	files    []string
	entries  policyList
	byID     map[string]*entry
	byAction map[string]*actionIndex // the policies whose scope can match each action
	cache    *buildCache
}

// Hash is the SHA-256 (hex) of the set's files: for each file in name order,
// its name, a NUL byte, its length as 8 bytes big-endian, and its bytes.
func (s *Set) Hash() string { return s.hash }

// Files are the names of the set's files, sorted.
func (s *Set) Files() []string { return slices.Clone(s.files) }

// Len is the number of policies in the set.
func (s *Set) Len() int { return len(s.entries) }

// PolicyIDs lists the IDs of the set's policies, in file and then source
// order.
func (s *Set) PolicyIDs() []string {
	ids := make([]string, len(s.entries))
	for i, e := range s.entries {
		ids[i] = e.id
	}
	return ids
}

// LoadDir reads, parses and validates the policy set in dir: every regular
// file named *.cedar directly in it, except names starting with ".". An
// invalid set is an [*InvalidSetError] (wrapped in an EINVALID
// *mandate.Error) listing every problem. A directory without policies is a
// valid, empty set, which denies everything.
func LoadDir(dir string) (*Set, error) {
	files, diags := readDir(dir)
	if len(diags) > 0 {
		return nil, invalid(dir, hashFiles(files), diags)
	}
	return compile(dir, files)
}

// NewSet parses and validates a policy set held in memory: file name to
// Cedar text. It is LoadDir without the directory.
func NewSet(files map[string][]byte) (*Set, error) {
	fs := make([]file, 0, len(files))
	for name, data := range files {
		fs = append(fs, file{name: name, path: name, data: data})
	}
	slices.SortFunc(fs, func(a, b file) int { return strings.Compare(a.name, b.name) })
	return compile("", fs)
}

// Check parses and validates the policy set in dir as [LoadDir] does, and
// returns every problem found; none means the set would load.
func Check(dir string) []Diagnostic {
	files, diags := readDir(dir)
	_, more := build(dir, files)
	return append(diags, more...)
}

func invalid(dir, hash string, diags []Diagnostic) error {
	ie := &InvalidSetError{Dir: dir, Hash: hash, Diagnostics: diags}
	return &mandate.Error{Code: mandate.EINVALID, Message: ie.Error(), Err: ie}
}

func compile(dir string, files []file) (*Set, error) {
	s, diags := build(dir, files)
	if len(diags) > 0 {
		return nil, invalid(dir, s.hash, diags)
	}
	return s, nil
}

type file struct {
	name, path string
	data       []byte
}

func isPolicyFile(name string) bool {
	return strings.HasSuffix(name, ".cedar") && !strings.HasPrefix(name, ".")
}

func readDir(dir string) ([]file, []Diagnostic) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, []Diagnostic{{File: dir, Message: fmt.Sprintf("cannot read the policy directory: %v", unwrapPath(err))}}
	}
	var files []file
	var diags []Diagnostic
	for _, de := range des {
		if !isPolicyFile(de.Name()) {
			continue
		}
		path := filepath.Join(dir, de.Name())
		if len(files) == MaxFiles {
			diags = append(diags, Diagnostic{File: dir, Message: fmt.Sprintf("more than %d policy files", MaxFiles)})
			break
		}
		data, err := readFile(path)
		if err != nil {
			diags = append(diags, Diagnostic{File: path, Message: err.Error()})
			continue
		}
		files = append(files, file{name: de.Name(), path: path, data: data})
	}
	return files, diags
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %v", unwrapPath(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot read: %v", unwrapPath(err))
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read: %v", unwrapPath(err))
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxFileSize)
	}
	return data, nil
}

func hashFiles(files []file) string {
	h := sha256.New()
	var n [8]byte
	for _, f := range files {
		h.Write([]byte(f.name))
		h.Write([]byte{0})
		binary.BigEndian.PutUint64(n[:], uint64(len(f.data)))
		h.Write(n[:])
		h.Write(f.data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// build parses and validates files; the set it returns is usable only if
// there are no diagnostics (its hash always is).
func build(dir string, files []file) (s *Set, diags []Diagnostic) {
	defer func() {
		// A bug in the parser or validator must not take the server down
		// on a bad file: the set is refused instead.
		if p := recover(); p != nil {
			diags = append(diags, Diagnostic{File: dir, Message: fmt.Sprintf("internal error while loading the set: %v; hint: report this with the policy files", p)})
		}
	}()
	s = &Set{hash: hashFiles(files), dir: dir, byID: map[string]*entry{}, cache: newBuildCache()}
	for _, f := range files {
		s.files = append(s.files, f.name)
		es, ds := parseFile(f)
		diags = append(diags, ds...)
		for _, e := range es {
			if prev, dup := s.byID[e.id]; dup {
				diags = append(diags, e.diag(fmt.Sprintf("the ID is used twice: also %s:%d:%d; hint: give each policy its own @id", prev.path, prev.pos.Line, prev.pos.Column)))
				continue
			}
			e.index = len(s.entries)
			s.byID[e.id] = e
			s.entries = append(s.entries, e)
		}
	}
	if len(s.entries) > MaxPolicies {
		diags = append(diags, Diagnostic{File: dir, Message: fmt.Sprintf("%d policies, more than %d", len(s.entries), MaxPolicies)})
	}
	if len(s.entries) > MaxPolicies {
		return s, diags
	}
	// Validate what parsed even if something else did not, so that Check
	// reports every problem at once.
	if diags = append(diags, validatePolicies(s.entries)...); len(diags) > 0 {
		return s, diags
	}
	s.byAction = buildIndex(s.entries)
	return s, nil
}

// parseErrorRE picks the position out of cedar-go's parse errors, which
// name the input <input> whatever the file.
var parseErrorRE = regexp.MustCompile(`^(?:parser error: )?parse error at [^:]*:(\d+):(\d+) (.*)$`)

func parseFile(f file) ([]*entry, []Diagnostic) {
	if !utf8.Valid(f.data) {
		return nil, []Diagnostic{{File: f.path, Message: "not valid UTF-8"}}
	}
	list, err := cedar.NewPolicyListFromBytes(f.name, f.data)
	if err != nil {
		d := Diagnostic{File: f.path, Message: err.Error()}
		if m := parseErrorRE.FindStringSubmatch(err.Error()); m != nil {
			d.Line, _ = strconv.Atoi(m[1])
			d.Col, _ = strconv.Atoi(m[2])
			d.Message = "syntax error at " + m[3]
		}
		return nil, []Diagnostic{d}
	}
	var es []*entry
	var diags []Diagnostic
	for i, p := range list {
		e := &entry{
			id:     fmt.Sprintf("%s#%d", f.name, i+1),
			path:   f.path,
			pos:    p.Position(),
			policy: p,
			ast:    (*xast.Policy)(p.AST()),
		}
		diags = append(diags, e.annotations()...)
		e.actions = scopeActions(e.ast.Action)
		es = append(es, e)
	}
	return es, diags
}

func (e *entry) annotations() []Diagnostic {
	var diags []Diagnostic
	permit := e.ast.Effect == xast.EffectPermit
	for _, a := range e.ast.Annotations {
		v := string(a.Value)
		switch k := string(a.Key); {
		case k == AnnotationID:
			if v == "" || len(v) > 128 || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				diags = append(diags, e.diag("@id must be 1-128 printable characters"))
				continue
			}
			e.id = v
		case k == AnnotationReason:
			if len(v) > 512 {
				diags = append(diags, e.diag("@reason is longer than 512 bytes"))
			}
			e.reason = v
		case k == AnnotationApproval:
			switch {
			case !permit:
				diags = append(diags, e.diag(`@approval applies to permit policies only: a forbid denies outright`))
			case v != "required":
				diags = append(diags, e.diag(fmt.Sprintf(`@approval(%q) is not understood; hint: write @approval("required")`, v)))
			default:
				e.approval = true
			}
		case k == AnnotationMaxTTL:
			ms, err := strconv.ParseInt(v, 10, 64)
			switch {
			case !permit:
				diags = append(diags, e.diag(`@max_ttl_ms applies to permit policies only`))
			case err != nil || ms <= 0 || ms > int64(time.Duration(1<<63-1)/time.Millisecond):
				diags = append(diags, e.diag(fmt.Sprintf(`@max_ttl_ms(%q) must be a positive number of milliseconds, e.g. @max_ttl_ms("60000")`, v)))
			default:
				e.maxTTL = time.Duration(ms) * time.Millisecond
			}
		case strings.HasPrefix(k, "x_"):
		default:
			hint := fmt.Sprintf("Mandate reads @id, @reason, @approval and @max_ttl_ms; name your own annotations x_…, e.g. @x_%s", k)
			for _, known := range []string{AnnotationID, AnnotationReason, AnnotationApproval, AnnotationMaxTTL} {
				if editDistance(k, known) <= 2 {
					hint = "did you mean @" + known + "?"
				}
			}
			diags = append(diags, e.diag(fmt.Sprintf("unknown annotation @%s; hint: %s", k, hint)))
		}
	}
	return diags
}

// scopeActions returns the actions a policy's action scope can match, nil
// for any. Mandate's schema has no action groups, so action in A is
// action == A.
func scopeActions(s xast.IsActionScopeNode) []string {
	var uids []types.EntityUID
	switch x := s.(type) {
	case xast.ScopeTypeEq:
		uids = []types.EntityUID{x.Entity}
	case xast.ScopeTypeIn:
		uids = []types.EntityUID{x.Entity}
	case xast.ScopeTypeInSet:
		uids = x.Entities
	default:
		return nil
	}
	out := []string{}
	for _, u := range uids {
		if u.Type == "Action" {
			out = append(out, string(u.ID))
		}
	}
	return out
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
