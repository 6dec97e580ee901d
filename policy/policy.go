package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"cel.dev/cel-go/cel"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	policyv1 "github.com/berthproject/berth/gen/berth/policy/v1"
)

// ErrInvalid wraps every validation failure of a policy document.
var ErrInvalid = errors.New("policy: invalid")

// Problem is one thing wrong with a policy document.
type Problem struct {
	// Where names the part of the document: "rules[2] (gold-tenants).when".
	Where string
	// Reason says what is wrong.
	Reason string
}

func (p Problem) String() string { return p.Where + ": " + p.Reason }

// ValidationError lists every problem found in a document.
type ValidationError struct {
	// Problems in document order.
	Problems []Problem
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return "policy: invalid: " + strings.Join(parts, "; ")
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// Defaults applied to zero fields.
const (
	defaultMaxUtilization = 1.0
	defaultLoadFactor     = 0.25
)

// Compiled is a validated policy, ready to evaluate. It is immutable and safe
// for concurrent use.
type Compiled struct {
	src          *policyv1.Policy
	version      int64
	rules        []rule
	defaultLabel string
	chains       map[string][]string
	affinity     cel.Program
	maxUtil      float64
	sticky       bool
	stickyMargin float64
	loadFactor   float64
	byLoad       bool
}

type rule struct {
	name, label string
	prg         cel.Program
}

// Source returns the document the policy was compiled from. Do not modify it.
func (c *Compiled) Source() *policyv1.Policy { return c.src }

// Version is the stored version (the etcd revision of the policy key; 0 for
// a policy that was never stored).
func (c *Compiled) Version() int64 { return c.version }

// WithVersion returns a copy of c stamped with version v.
func (c *Compiled) WithVersion(v int64) *Compiled {
	cp := *c
	cp.version = v
	return &cp
}

// MaxUtilization is the filter's bound: groups at or above it take no device.
func (c *Compiled) MaxUtilization() float64 { return c.maxUtil }

// Sticky reports whether sticky placement is on, and its margin above the
// fair share.
func (c *Compiled) Sticky() (bool, float64) { return c.sticky, c.stickyMargin }

// HasAffinity reports whether the policy declares an affinity key.
func (c *Compiled) HasAffinity() bool { return c.affinity != nil }

// LoadFactor is the bound of bounded-load affinity hashing.
func (c *Compiled) LoadFactor() float64 { return c.loadFactor }

// BalanceByLoad reports whether balance compares load rather than
// connections.
func (c *Compiled) BalanceByLoad() bool { return c.byLoad }

// DefaultLabel is the label of devices no rule matched.
func (c *Compiled) DefaultLabel() string { return c.defaultLabel }

// Chain returns label followed by its fallbacks, depth first, each label once.
func (c *Compiled) Chain(label string) []string {
	if ch, ok := c.chains[label]; ok {
		return ch
	}
	return []string{label}
}

// Labels returns every label the policy can assign or fall back to, sorted.
func (c *Compiled) Labels() []string {
	set := map[string]bool{c.defaultLabel: true}
	for _, r := range c.rules {
		set[r.label] = true
	}
	for l, ch := range c.chains {
		set[l] = true
		for _, x := range ch {
			set[x] = true
		}
	}
	out := make([]string, 0, len(set))
	for l := range set {
		out = append(out, l)
	}
	slices.Sort(out)
	return out
}

// Match is the outcome of the label rules for one device.
type Match struct {
	// Label is the assigned label.
	Label string
	// Rule names the rule that matched ("" for the default label).
	Rule string
	// Index of the matched rule, -1 for the default.
	Index int
}

// Label runs the rules in order and returns the first match, or the
// default label. A rule whose evaluation fails (a missing map key, say) does
// not match; its error is returned alongside the eventual match so callers
// can log it.
func (c *Compiled) Label(in *policyv1.Input) (Match, error) {
	act := newInputs(in)
	var errs []error
	for i, r := range c.rules {
		out, _, err := r.prg.Eval(act)
		if err != nil {
			errs = append(errs, fmt.Errorf("rule %s: %w", r.name, err))
			continue
		}
		if b, ok := out.Value().(bool); ok && b {
			return Match{Label: r.label, Rule: r.name, Index: i}, errors.Join(errs...)
		}
	}
	return Match{Label: c.defaultLabel, Index: -1}, errors.Join(errs...)
}

// AffinityKey evaluates the affinity key ("" when none is declared or the
// expression yields nothing).
func (c *Compiled) AffinityKey(in *policyv1.Input) (string, error) {
	if c.affinity == nil {
		return "", nil
	}
	out, _, err := c.affinity.Eval(newInputs(in))
	if err != nil {
		return "", fmt.Errorf("affinity key: %w", err)
	}
	s, _ := out.Value().(string)
	return s, nil
}

// celEnv is the CEL environment shared by every compilation, built once.
var celEnv = sync.OnceValues(func() (*cel.Env, error) {
	p, err := newInputProvider()
	if err != nil {
		return nil, err
	}
	return cel.NewEnv(
		cel.CustomTypeProvider(p),
		cel.CustomTypeAdapter(p.Registry),
		cel.Variable("device", cel.ObjectType("berth.policy.v1.DeviceInput")),
		cel.Variable("tenant", cel.ObjectType("berth.policy.v1.TenantInput")),
		cel.Variable("services", cel.ObjectType("berth.policy.v1.ServicesInput")),
		cel.Variable("history", cel.ObjectType("berth.policy.v1.HistoryInput")),
	)
})

// maxExprLen bounds each CEL expression; maxRules bounds the rule list.
const (
	maxExprLen = 4096
	maxRules   = 1000
)

// compileExpr compiles one expression and checks its result type.
func compileExpr(expr string, want *cel.Type) (cel.Program, string) {
	if len(expr) > maxExprLen {
		return nil, fmt.Sprintf("expression is %d bytes; at most %d", len(expr), maxExprLen)
	}
	env, err := celEnv()
	if err != nil {
		return nil, "CEL environment: " + err.Error()
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, strings.ReplaceAll(iss.Err().Error(), "\n", " ")
	}
	if !ast.OutputType().IsExactType(want) {
		return nil, fmt.Sprintf("expression has type %s, want %s", ast.OutputType(), want)
	}
	if c, err := estimateCost(env, ast); err != nil {
		return nil, "estimating its cost: " + err.Error()
	} else if c > MaxExprCost {
		return nil, fmt.Sprintf("expression may cost %d on the largest inputs; at most %d (nested loops over attributes or services, or regular expressions over long strings, cost most)", c, MaxExprCost)
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, err.Error()
	}
	return prg, ""
}

// Compile validates p completely and compiles it. Every problem is reported
// at once in a *ValidationError.
func Compile(p *policyv1.Policy) (*Compiled, error) {
	if p == nil {
		return nil, &ValidationError{Problems: []Problem{{"policy", "empty document"}}}
	}
	var probs []Problem
	add := func(where, format string, args ...any) {
		probs = append(probs, Problem{Where: where, Reason: fmt.Sprintf(format, args...)})
	}
	c := &Compiled{src: p, defaultLabel: p.GetDefaultLabel()}
	if c.defaultLabel == "" {
		add("default_label", "required")
	} else if !validLabel(c.defaultLabel) {
		add("default_label", "%q: want 1-128 of [A-Za-z0-9._:@-]", c.defaultLabel)
	}
	if len(p.GetRules()) > maxRules {
		add("rules", "%d rules; at most %d", len(p.GetRules()), maxRules)
	}
	names := map[string]int{}
	for i, r := range p.GetRules() {
		where := fmt.Sprintf("rules[%d]", i)
		if r.GetName() != "" {
			where += " (" + r.GetName() + ")"
			if j, dup := names[r.GetName()]; dup {
				add(where+".name", "also used by rules[%d]", j)
			}
			names[r.GetName()] = i
		}
		if !validLabel(r.GetLabel()) {
			add(where+".label", "%q: want 1-128 of [A-Za-z0-9._:@-]", r.GetLabel())
		}
		if strings.TrimSpace(r.GetWhen()) == "" {
			add(where+".when", "condition required")
			continue
		}
		prg, why := compileExpr(r.GetWhen(), cel.BoolType)
		if why != "" {
			add(where+".when", "%s", why)
			continue
		}
		name := r.GetName()
		if name == "" {
			name = fmt.Sprintf("rules[%d]", i)
		}
		c.rules = append(c.rules, rule{name: name, label: r.GetLabel(), prg: prg})
	}
	fb := map[string][]string{}
	for label, f := range p.GetFallbacks() {
		if !validLabel(label) {
			add("fallbacks", "label %q: want 1-128 of [A-Za-z0-9._:@-]", label)
		}
		for _, l := range f.GetLabels() {
			if !validLabel(l) {
				add("fallbacks["+label+"]", "label %q: want 1-128 of [A-Za-z0-9._:@-]", l)
			}
		}
		fb[label] = f.GetLabels()
	}
	if cyc := findCycle(fb); cyc != nil {
		add("fallbacks", "cycle %s", strings.Join(cyc, " -> "))
	} else {
		c.chains = map[string][]string{}
		for label := range fb {
			c.chains[label] = chain(label, fb)
		}
	}
	c.maxUtil = p.GetFilter().GetMaxUtilization()
	switch {
	case c.maxUtil == 0:
		c.maxUtil = defaultMaxUtilization
	case !(c.maxUtil > 0 && c.maxUtil <= 1): // also refuses NaN
		add("filter.max_utilization", "%v: want 0 < x <= 1", c.maxUtil)
	}
	c.sticky = p.GetSticky().GetEnabled()
	c.stickyMargin = p.GetSticky().GetMargin()
	if !(c.stickyMargin >= 0 && c.stickyMargin <= 10) { // also refuses NaN
		add("sticky.margin", "%v: want 0 <= x <= 10", c.stickyMargin)
	}
	if k := p.GetAffinity().GetKey(); strings.TrimSpace(k) != "" {
		prg, why := compileExpr(k, cel.StringType)
		if why != "" {
			add("affinity.key", "%s", why)
		}
		c.affinity = prg
	}
	c.loadFactor = p.GetAffinity().GetLoadFactor()
	switch {
	case c.loadFactor == 0:
		c.loadFactor = defaultLoadFactor
	case !(c.loadFactor > 0 && c.loadFactor <= 10): // also refuses NaN
		add("affinity.load_factor", "%v: want 0 < x <= 10", c.loadFactor)
	}
	switch m := p.GetBalance().GetMode(); m {
	case policyv1.BalanceMode_BALANCE_MODE_UNSPECIFIED, policyv1.BalanceMode_BALANCE_MODE_CONNECTIONS:
	case policyv1.BalanceMode_BALANCE_MODE_LOAD:
		c.byLoad = true
	default:
		add("balance.mode", "unknown mode %d", m)
	}
	if len(probs) > 0 {
		return nil, &ValidationError{Problems: probs}
	}
	return c, nil
}

// chain is label followed by its fallbacks, depth first, each once.
func chain(label string, fb map[string][]string) []string {
	seen := map[string]bool{}
	var out []string
	var walk func(string)
	walk = func(l string) {
		if seen[l] {
			return
		}
		seen[l] = true
		out = append(out, l)
		for _, f := range fb[l] {
			walk(f)
		}
	}
	walk(label)
	return out
}

// findCycle returns a fallback cycle, or nil.
func findCycle(fb map[string][]string) []string {
	const (
		unvisited = iota
		active
		done
	)
	state := map[string]int{}
	var stack []string
	var found []string
	var visit func(string) bool
	visit = func(l string) bool {
		switch state[l] {
		case active:
			i := slices.Index(stack, l)
			found = append(slices.Clone(stack[i:]), l)
			return true
		case done:
			return false
		}
		state[l] = active
		stack = append(stack, l)
		for _, f := range fb[l] {
			if visit(f) {
				return true
			}
		}
		stack = stack[:len(stack)-1]
		state[l] = done
		return false
	}
	keys := make([]string, 0, len(fb))
	for k := range fb {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if visit(k) {
			return found
		}
	}
	return nil
}

func validLabel(l string) bool {
	if l == "" || len(l) > 128 {
		return false
	}
	for _, r := range l {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._:@-", r)) {
			return false
		}
	}
	return true
}

// Parse reads a policy document written as YAML or JSON (JSON is YAML).
// Unknown fields are errors, so a typo is not silently ignored.
func Parse(data []byte) (*policyv1.Policy, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%w: not YAML or JSON: %v", ErrInvalid, err)
	}
	p := &policyv1.Policy{}
	if err := protojson.Unmarshal(js, p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return p, nil
}

// DefaultLabel is the label of the default policy.
const DefaultLabel = "default"

// Default is the policy in force when none was applied: every device gets
// label "default", balanced by connections.
func Default() *Compiled {
	return &Compiled{
		src:          &policyv1.Policy{DefaultLabel: DefaultLabel},
		defaultLabel: DefaultLabel,
		chains:       map[string][]string{},
		maxUtil:      defaultMaxUtilization,
		loadFactor:   defaultLoadFactor,
	}
}

// UnknownLabels returns the labels the policy can assign that no group in
// known carries: worth a warning, not an error (the group may come later).
func (c *Compiled) UnknownLabels(known map[string]bool) []string {
	var out []string
	for _, l := range c.Labels() {
		if !known[l] {
			out = append(out, l)
		}
	}
	return out
}
