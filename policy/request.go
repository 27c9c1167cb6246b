package policy

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"

	"github.com/mandatehq/mandate"
)

// Entity types of the schema.
const (
	typeUser     types.EntityType = "User"
	typeAgent    types.EntityType = "Agent"
	typeTask     types.EntityType = "Task"
	typeServer   types.EntityType = "Server"
	typeTool     types.EntityType = "Tool"
	typeResource types.EntityType = "Resource"
	typeAction   types.EntityType = "Action"
)

// Attribute names, allocated once.
const (
	attrID         types.String = "id"
	attrName       types.String = "name"
	attrOwner      types.String = "owner"
	attrLabels     types.String = "labels"
	attrEphemeral  types.String = "ephemeral"
	attrRegistered types.String = "registered"
	attrSubject    types.String = "subject"
	attrPurpose    types.String = "purpose"
	attrServer     types.String = "server"
)

// ArgsError says why tool arguments were not evaluated: they break one of
// the MaxArgs* limits, or hold something that is not JSON.
type ArgsError struct{ Reason string }

func (e *ArgsError) Error() string { return "tool arguments refused: " + e.Reason }

// cedarRequest builds the Cedar request for r directly as cedar-go values:
// the entities (from c's cache when it has them: an agent, its task and the
// tools it calls repeat across requests), then the context. c may be nil.
func cedarRequest(r *Request, c *buildCache) (*entities, cedar.Request, error) {
	es := buildEntities(r, c)
	req, err := es.request(r, c, true)
	return es, req, err
}

// entities holds the handful of entities one request needs, looked up by a
// scan (cheaper than a map for four), and what the context needs of them.
type entities struct {
	es        [4]types.Entity
	n         int
	principal types.EntityUID
	resource  types.EntityUID
	subject   types.EntityUID
	task      types.EntityUID
	agent     *agentValues
}

func (s *entities) add(e types.Entity) { s.es[s.n] = e; s.n++ }

func (s *entities) Get(uid types.EntityUID) (types.Entity, bool) {
	for i := range s.n {
		if s.es[i].UID == uid {
			return s.es[i], true
		}
	}
	return types.Entity{}, false
}

// buildEntities builds the entities of r: its agent, task, and the tool,
// resource or server acted on.
func buildEntities(r *Request, c *buildCache) *entities {
	es := &entities{}
	var kb [512]byte
	es.agent = c.agent(r, kb[:0])
	es.add(es.agent.entity)
	es.principal = es.agent.entity.UID
	es.subject = userUID(r.Subject)
	task := c.task(r, es.subject, kb[:0])
	es.add(task)
	es.task = task.UID
	t := c.target(r, kb[:0])
	es.resource = t.resource
	if r.Action == ActionMintRoot || r.Action == ActionDelegate {
		es.resource = task.UID
	}
	for i := range t.n {
		es.add(t.entities[i])
	}
	return es
}

// request builds the context and the Cedar request. If no policy to be
// evaluated reads the tool arguments (withArgs false), they are only
// checked against the limits and context.args is empty.
func (es *entities) request(r *Request, c *buildCache, withArgs bool) (cedar.Request, error) {
	var args types.Record
	var err error
	if withArgs {
		args, err = convertArgs(r.Args)
	} else {
		err = checkArgs(r.Args)
	}
	if err != nil {
		return cedar.Request{}, err
	}
	ctx := types.NewRecord(types.RecordMap{
		"subject": es.subject,
		"task":    es.task,
		"chain":   es.agent.chain,
		"depth":   es.agent.depth,
		"purpose": types.String(r.Purpose),
		"time":    c.time(r.Time),
		"risk":    types.Long(r.Risk),
		"args":    args,
		"dpop":    types.Boolean(r.DPoP),
		"labels":  stringSet(r.Labels),
		"history": c.history(r.History),
		"scopes":  stringSet(r.Scopes),
		"ttl_ms":  types.Long(r.TTL / time.Millisecond),
	})
	return cedar.Request{
		Principal: es.principal,
		Action:    types.NewEntityUID(typeAction, types.String(r.Action)),
		Resource:  es.resource,
		Context:   ctx,
	}, nil
}

// agentValues are the Cedar values built from a request's agent and chain.
type agentValues struct {
	entity types.Entity
	chain  types.Set
	depth  types.Long
}

func buildAgent(r *Request) *agentValues {
	chain := r.Chain
	if len(chain) == 0 && r.Agent.ID != "" {
		chain = []string{r.Agent.ID}
	}
	var parents []types.EntityUID
	if len(chain) > 1 {
		parents = make([]types.EntityUID, len(chain)-1)
		for i, id := range chain[1:] {
			parents[i] = types.NewEntityUID(typeAgent, types.String(id))
		}
	}
	registered := r.Agent.Registered
	if registered == "" {
		registered = mandate.RegisteredAncestor(r.Agent.ID)
	}
	return &agentValues{
		entity: types.Entity{
			UID:     types.NewEntityUID(typeAgent, types.String(r.Agent.ID)),
			Parents: types.NewEntityUIDSet(parents...),
			Attributes: types.NewRecord(types.RecordMap{
				attrID:         types.String(r.Agent.ID),
				attrName:       types.String(r.Agent.Name),
				attrOwner:      userUID(r.Agent.Owner),
				attrLabels:     stringSet(r.Agent.Labels),
				attrEphemeral:  types.Boolean(r.Agent.Ephemeral || mandate.IsEphemeral(r.Agent.ID)),
				attrRegistered: types.String(registered),
			}),
		},
		chain: stringSet(chain),
		depth: types.Long(len(chain)),
	}
}

func buildTask(r *Request, subject types.EntityUID) types.Entity {
	return types.Entity{
		UID: types.NewEntityUID(typeTask, types.String(r.Task)),
		Attributes: types.NewRecord(types.RecordMap{
			attrSubject: subject,
			attrPurpose: types.String(r.Purpose),
		}),
	}
}

// targetValues are the resource of a request and the entities it needs:
// the tool or resource and its server, or the server alone.
type targetValues struct {
	resource types.EntityUID
	entities [2]types.Entity
	n        int
}

func buildTarget(r *Request) *targetValues {
	t := &targetValues{}
	server := types.NewEntityUID(typeServer, types.String(r.Server))
	serverEntity := types.Entity{UID: server, Attributes: types.NewRecord(types.RecordMap{attrName: types.String(r.Server)})}
	var typ types.EntityType
	var name string
	switch r.Action {
	case ActionMintRoot, ActionDelegate:
		return t // the task is the resource
	case ActionListTools:
		t.resource = server
		t.entities[0], t.n = serverEntity, 1
		return t
	case ActionCallTool:
		typ, name = typeTool, r.Tool
	default: // ReadResource, GetPrompt, HttpRequest
		typ, name = typeResource, r.Resource
	}
	t.resource = types.NewEntityUID(typ, types.String(r.Server+":"+name))
	t.entities[0] = types.Entity{
		UID:     t.resource,
		Parents: types.NewEntityUIDSet(server),
		Attributes: types.NewRecord(types.RecordMap{
			attrServer: server,
			attrName:   types.String(name),
			attrLabels: stringSet(r.ToolLabels),
		}),
	}
	t.entities[1], t.n = serverEntity, 2
	return t
}

func buildTime(t time.Time) types.Record {
	return types.NewRecord(types.RecordMap{
		"hour":    types.Long(t.Hour()),
		"minute":  types.Long(t.Minute()),
		"weekday": types.Long(t.Weekday()),
		"unix":    types.Long(t.Unix()),
	})
}

func buildHistory(h map[string]int64) types.Record {
	m := make(types.RecordMap, len(historyCounters))
	for _, k := range historyCounters {
		m[types.String(k)] = types.Long(h[k])
	}
	return types.NewRecord(m)
}

func userUID(s string) types.EntityUID {
	return types.NewEntityUID(typeUser, types.String(strings.TrimPrefix(s, "user:")))
}

func stringSet(ss []string) types.Set {
	if len(ss) == 0 {
		return types.NewSet()
	}
	vs := make([]types.Value, len(ss))
	for i, s := range ss {
		vs[i] = types.String(s)
	}
	return types.NewSet(vs...)
}

// argsConverter turns untrusted tool arguments into Cedar values within the
// MaxArgs* limits.
type argsConverter struct {
	elems, bytes int
}

func convertArgs(args map[string]any) (types.Record, error) {
	if len(args) == 0 {
		return types.NewRecord(nil), nil
	}
	var c argsConverter
	v, err := c.record(args, 0)
	if err != nil {
		return types.Record{}, err
	}
	return v, nil
}

func (c *argsConverter) text(s string) error {
	c.bytes += len(s)
	if c.bytes > MaxArgsBytes {
		return &ArgsError{fmt.Sprintf("more than %d bytes of text", MaxArgsBytes)}
	}
	if !utf8.ValidString(s) {
		return &ArgsError{"a string is not valid UTF-8"}
	}
	return nil
}

func (c *argsConverter) count() error {
	c.elems++
	if c.elems > MaxArgsElements {
		return &ArgsError{fmt.Sprintf("more than %d values", MaxArgsElements)}
	}
	return nil
}

func (c *argsConverter) record(m map[string]any, depth int) (types.Record, error) {
	rm := make(types.RecordMap, min(len(m), MaxArgsElements))
	for k, x := range m {
		if err := c.text(k); err != nil {
			return types.Record{}, err
		}
		v, err := c.value(x, depth+1)
		if err != nil {
			return types.Record{}, err
		}
		if v != nil {
			rm[types.String(k)] = v
		}
	}
	return types.NewRecord(rm), nil
}

// value converts x, found depth levels below Args; nil (JSON null) converts
// to nil, which records and sets leave out.
func (c *argsConverter) value(x any, depth int) (types.Value, error) {
	if depth > MaxArgsDepth {
		return nil, &ArgsError{fmt.Sprintf("nested more than %d levels deep", MaxArgsDepth)}
	}
	if err := c.count(); err != nil {
		return nil, err
	}
	switch x := x.(type) {
	case nil:
		return nil, nil
	case string:
		if err := c.text(x); err != nil {
			return nil, err
		}
		return types.String(x), nil
	case bool:
		return types.Boolean(x), nil
	case float64:
		return c.float(x)
	case float32:
		return c.float(float64(x))
	case int:
		return types.Long(x), nil
	case int8:
		return types.Long(x), nil
	case int16:
		return types.Long(x), nil
	case int32:
		return types.Long(x), nil
	case int64:
		return types.Long(x), nil
	case uint8:
		return types.Long(x), nil
	case uint16:
		return types.Long(x), nil
	case uint32:
		return types.Long(x), nil
	case uint:
		return c.unsigned(uint64(x))
	case uint64:
		return c.unsigned(x)
	case json.Number:
		if err := c.text(string(x)); err != nil {
			return nil, err
		}
		if n, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return types.Long(n), nil
		}
		f, err := parseNumber(string(x))
		if err != nil {
			return nil, err
		}
		if v, ok := longOf(f); ok {
			return v, nil
		}
		return types.String(x), nil
	case []any:
		vs := make([]types.Value, 0, min(len(x), MaxArgsElements))
		for _, y := range x {
			v, err := c.value(y, depth+1)
			if err != nil {
				return nil, err
			}
			if v != nil {
				vs = append(vs, v)
			}
		}
		return types.NewSet(vs...), nil
	case []string:
		vs := make([]types.Value, 0, min(len(x), MaxArgsElements))
		for _, y := range x {
			v, err := c.value(y, depth+1)
			if err != nil {
				return nil, err
			}
			vs = append(vs, v)
		}
		return types.NewSet(vs...), nil
	case map[string]any:
		return c.record(x, depth)
	default:
		return nil, &ArgsError{fmt.Sprintf("a value of Go type %T is not JSON", x)}
	}
}

// parseNumber parses the text of a json.Number: a finite number, or one
// too large for float64.
func parseNumber(s string) (float64, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return f, nil
		}
		return 0, &ArgsError{"a number does not parse"}
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, &ArgsError{"a number is NaN or infinite"}
	}
	return f, nil
}

// checkArgs applies convertArgs's limits and rules without building
// anything: for requests that no policy reads the arguments of. It accepts
// exactly what convertArgs accepts (FuzzArgs checks).
func checkArgs(args map[string]any) error {
	var c argsConverter
	return c.checkRecord(args, 0)
}

func (c *argsConverter) checkRecord(m map[string]any, depth int) error {
	for k, x := range m {
		if err := c.text(k); err != nil {
			return err
		}
		if err := c.check(x, depth+1); err != nil {
			return err
		}
	}
	return nil
}

func (c *argsConverter) check(x any, depth int) error {
	if depth > MaxArgsDepth {
		return &ArgsError{fmt.Sprintf("nested more than %d levels deep", MaxArgsDepth)}
	}
	if err := c.count(); err != nil {
		return err
	}
	switch x := x.(type) {
	case nil, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return nil
	case string:
		return c.text(x)
	case float64:
		return checkFloat(x)
	case float32:
		return checkFloat(float64(x))
	case json.Number:
		if err := c.text(string(x)); err != nil {
			return err
		}
		_, err := parseNumber(string(x))
		return err
	case []any:
		for _, y := range x {
			if err := c.check(y, depth+1); err != nil {
				return err
			}
		}
		return nil
	case []string:
		for _, y := range x {
			if err := c.check(y, depth+1); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		return c.checkRecord(x, depth)
	default:
		return &ArgsError{fmt.Sprintf("a value of Go type %T is not JSON", x)}
	}
}

func checkFloat(f float64) error {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return &ArgsError{"a number is NaN or infinite"}
	}
	return nil
}

// longOf returns f as a Long if it is a whole number that int64 holds.
func longOf(f float64) (types.Value, bool) {
	if f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
		return nil, false
	}
	return types.Long(int64(f)), true
}

// float converts a JSON number: whole numbers are Longs; others (and those
// beyond int64) are Strings in their shortest decimal form, so that a
// policy comparing them as Longs fails to evaluate, which denies.
func (c *argsConverter) float(f float64) (types.Value, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, &ArgsError{"a number is NaN or infinite"}
	}
	if v, ok := longOf(f); ok {
		return v, nil
	}
	return types.String(strconv.FormatFloat(f, 'g', -1, 64)), nil
}

func (c *argsConverter) unsigned(u uint64) (types.Value, error) {
	if u > math.MaxInt64 {
		return types.String(strconv.FormatUint(u, 10)), nil
	}
	return types.Long(int64(u)), nil
}
