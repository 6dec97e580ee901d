package policy_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	policyv1 "github.com/berthproject/berth/gen/berth/policy/v1"
	"github.com/berthproject/berth/policy"
)

// parse parses doc, failing the test if it does not parse.
func parse(t *testing.T, doc string) *policyv1.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse(%q) = %v", doc, err)
	}
	return p
}

// mustCompile parses and compiles doc, failing the test on any error.
func mustCompile(t *testing.T, doc string) *policy.Compiled {
	t.Helper()
	c, err := policy.Compile(parse(t, doc))
	if err != nil {
		t.Fatalf("Compile(%q) = %v", doc, err)
	}
	return c
}

func TestParseYAMLAndJSONAreEquivalent(t *testing.T) {
	yamlDoc := `
default_label: std
rules:
  - name: gold-tenants
    when: tenant.attributes["tier"] == "gold"
    label: gold
  - name: eu
    when: device.model.startsWith("EU-")
    label: eu
fallbacks:
  gold: {labels: [std]}
  eu:
    labels: [std, gold]
filter: {max_utilization: 0.9}
sticky: {enabled: true, margin: 0.1}
affinity: {key: tenant.id, load_factor: 0.5}
balance: {mode: BALANCE_MODE_LOAD}
`
	jsonDoc := `{
  "default_label": "std",
  "rules": [
    {"name": "gold-tenants", "when": "tenant.attributes[\"tier\"] == \"gold\"", "label": "gold"},
    {"name": "eu", "when": "device.model.startsWith(\"EU-\")", "label": "eu"}
  ],
  "fallbacks": {"gold": {"labels": ["std"]}, "eu": {"labels": ["std", "gold"]}},
  "filter": {"maxUtilization": 0.9},
  "sticky": {"enabled": true, "margin": 0.1},
  "affinity": {"key": "tenant.id", "loadFactor": 0.5},
  "balance": {"mode": "BALANCE_MODE_LOAD"}
}`
	want := &policyv1.Policy{
		DefaultLabel: "std",
		Rules: []*policyv1.Rule{
			{Name: "gold-tenants", When: `tenant.attributes["tier"] == "gold"`, Label: "gold"},
			{Name: "eu", When: `device.model.startsWith("EU-")`, Label: "eu"},
		},
		Fallbacks: map[string]*policyv1.Fallback{
			"gold": {Labels: []string{"std"}},
			"eu":   {Labels: []string{"std", "gold"}},
		},
		Filter:   &policyv1.GroupFilter{MaxUtilization: 0.9},
		Sticky:   &policyv1.Sticky{Enabled: true, Margin: 0.1},
		Affinity: &policyv1.Affinity{Key: "tenant.id", LoadFactor: 0.5},
		Balance:  &policyv1.Balance{Mode: policyv1.BalanceMode_BALANCE_MODE_LOAD},
	}
	for name, doc := range map[string]string{"yaml": yamlDoc, "json": jsonDoc} {
		t.Run(name, func(t *testing.T) {
			got := parse(t, doc)
			if !proto.Equal(got, want) {
				t.Errorf("Parse(%s) = %v, want %v", name, got, want)
			}
			c, err := policy.Compile(got)
			if err != nil {
				t.Fatalf("Compile = %v", err)
			}
			if c.DefaultLabel() != "std" || !c.BalanceByLoad() || !c.HasAffinity() || c.MaxUtilization() != 0.9 || c.LoadFactor() != 0.5 {
				t.Errorf("compiled settings = default %q byLoad %v affinity %v maxUtil %v loadFactor %v",
					c.DefaultLabel(), c.BalanceByLoad(), c.HasAffinity(), c.MaxUtilization(), c.LoadFactor())
			}
			if on, m := c.Sticky(); !on || m != 0.1 {
				t.Errorf("Sticky() = %v, %v, want true, 0.1", on, m)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"unknown top-level field", "default_label: d\nrulez: []\n", `unknown field "rulez"`},
		{"unknown nested field", "default_label: d\nsticky: {enabled: true, margn: 0.1}\n", `unknown field "margn"`},
		{"unknown field in a rule", "default_label: d\nrules: [{name: r, when: 'true', label: x, lable: y}]\n", `unknown field "lable"`},
		{"unknown field in JSON", `{"default_label": "d", "colour": "red"}`, `unknown field "colour"`},
		{"wrong type", "default_label: [a, b]\n", "defaultLabel"},
		{"YAML 1.1 boolean word is refused, not turned into a label", "default_label: d\nrules: [{name: r, when: 'true', label: no}]\n", "invalid value for string field label"},
		{"unknown enum value", "default_label: d\nbalance: {mode: BALANCE_MODE_RANDOM}\n", "BALANCE_MODE_RANDOM"},
		{"not YAML", "default_label: [\n", "not YAML or JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := policy.Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse(%q) = %v, want an error", tt.doc, p)
			}
			if !errors.Is(err, policy.ErrInvalid) {
				t.Errorf("Parse err = %v, want errors.Is ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse err = %q, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestCompileRefuses(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		// want lists the problems in order; a Reason here must be contained
		// in the problem's Reason, a Where must equal it.
		want []policy.Problem
	}{
		{
			name: "missing default label",
			doc:  "rules: [{name: r, when: 'true', label: x}]\n",
			want: []policy.Problem{{Where: "default_label", Reason: "required"}},
		},
		{
			name: "bad default label characters",
			doc:  "default_label: 'has space'\n",
			want: []policy.Problem{{Where: "default_label", Reason: `"has space": want 1-128 of`}},
		},
		{
			name: "default label too long",
			doc:  "default_label: " + strings.Repeat("x", 129) + "\n",
			want: []policy.Problem{{Where: "default_label", Reason: "want 1-128 of"}},
		},
		{
			name: "bad rule label characters",
			doc:  "default_label: d\nrules: [{name: r, when: 'true', label: 'gold/eu'}]\n",
			want: []policy.Problem{{Where: "rules[0] (r).label", Reason: `"gold/eu": want 1-128 of`}},
		},
		{
			name: "empty rule label",
			doc:  "default_label: d\nrules: [{name: r, when: 'true'}]\n",
			want: []policy.Problem{{Where: "rules[0] (r).label", Reason: `"": want 1-128 of`}},
		},
		{
			name: "bad fallback label characters",
			doc:  "default_label: d\nfallbacks: {a: {labels: ['b c']}}\n",
			want: []policy.Problem{{Where: "fallbacks[a]", Reason: `label "b c"`}},
		},
		{
			name: "bad fallback key characters",
			doc:  "default_label: d\nfallbacks: {'a!': {labels: [b]}}\n",
			want: []policy.Problem{{Where: "fallbacks", Reason: `label "a!"`}},
		},
		{
			name: "empty condition",
			doc:  "default_label: d\nrules: [{name: r, when: '  ', label: x}]\n",
			want: []policy.Problem{{Where: "rules[0] (r).when", Reason: "condition required"}},
		},
		{
			name: "empty condition of an unnamed rule",
			doc:  "default_label: d\nrules: [{name: ok, when: 'true', label: x}, {label: x2}]\n",
			want: []policy.Problem{{Where: "rules[1].when", Reason: "condition required"}},
		},
		{
			name: "CEL syntax error",
			doc:  "default_label: d\nrules: [{name: ok, when: 'true', label: x}, {name: broken, when: 'device.model ==', label: x2}]\n",
			want: []policy.Problem{{Where: "rules[1] (broken).when", Reason: "Syntax error: mismatched input '<EOF>'"}},
		},
		{
			name: "CEL syntax error in the affinity key",
			doc:  "default_label: d\naffinity: {key: 'tenant.'}\n",
			want: []policy.Problem{{Where: "affinity.key", Reason: "Syntax error"}},
		},
		{
			name: "condition of type string",
			doc:  "default_label: d\nrules: [{name: r, when: 'device.model', label: x}]\n",
			want: []policy.Problem{{Where: "rules[0] (r).when", Reason: "expression has type string, want bool"}},
		},
		{
			name: "condition of type int",
			doc:  "default_label: d\nrules: [{name: r, when: 'history.messages_per_day', label: x}]\n",
			want: []policy.Problem{{Where: "rules[0] (r).when", Reason: "want bool"}},
		},
		{
			name: "affinity key of type bool",
			doc:  "default_label: d\naffinity: {key: 'tenant.id == \"a\"'}\n",
			want: []policy.Problem{{Where: "affinity.key", Reason: "expression has type bool, want string"}},
		},
		{
			name: "unknown field in a condition",
			doc:  "default_label: d\nrules: [{name: r, when: 'device.colour == \"red\"', label: x}]\n",
			want: []policy.Problem{{Where: "rules[0] (r).when", Reason: "undefined field 'colour'"}},
		},
		{
			name: "unknown variable in a condition",
			doc:  "default_label: d\nrules: [{name: r, when: 'user.id == \"u\"', label: x}]\n",
			want: []policy.Problem{{Where: "rules[0] (r).when", Reason: "undeclared reference to 'user'"}},
		},
		{
			name: "unknown field in the affinity key",
			doc:  "default_label: d\naffinity: {key: device.site}\n",
			want: []policy.Problem{{Where: "affinity.key", Reason: "undefined field 'site'"}},
		},
		{
			name: "expression too long",
			doc:  "default_label: d\nrules: [{name: r, when: '" + strings.Repeat("true && ", 600) + "true', label: x}]\n",
			want: []policy.Problem{{Where: "rules[0] (r).when", Reason: "at most 4096"}},
		},
		{
			name: "duplicate rule names",
			doc:  "default_label: d\nrules: [{name: r, when: 'true', label: x}, {name: s, when: 'true', label: x2}, {name: r, when: 'false', label: z}]\n",
			want: []policy.Problem{{Where: "rules[2] (r).name", Reason: "also used by rules[0]"}},
		},
		{
			name: "fallback cycle",
			doc:  "default_label: d\nfallbacks: {a: {labels: [b]}, b: {labels: [a]}}\n",
			want: []policy.Problem{{Where: "fallbacks", Reason: "cycle a -> b -> a"}},
		},
		{
			name: "longer fallback cycle not through the first label",
			doc:  "default_label: d\nfallbacks: {a: {labels: [b]}, b: {labels: [c]}, c: {labels: [d, b]}}\n",
			want: []policy.Problem{{Where: "fallbacks", Reason: "cycle b -> c -> b"}},
		},
		{
			name: "fallback self cycle",
			doc:  "default_label: d\nfallbacks: {a: {labels: [a]}}\n",
			want: []policy.Problem{{Where: "fallbacks", Reason: "cycle a -> a"}},
		},
		{
			name: "max_utilization above 1",
			doc:  "default_label: d\nfilter: {max_utilization: 1.5}\n",
			want: []policy.Problem{{Where: "filter.max_utilization", Reason: "1.5: want 0 < x <= 1"}},
		},
		{
			name: "max_utilization negative",
			doc:  "default_label: d\nfilter: {max_utilization: -0.5}\n",
			want: []policy.Problem{{Where: "filter.max_utilization", Reason: "want 0 < x <= 1"}},
		},
		{
			name: "max_utilization NaN",
			doc:  "default_label: d\nfilter: {max_utilization: NaN}\n",
			want: []policy.Problem{{Where: "filter.max_utilization", Reason: "NaN: want 0 < x <= 1"}},
		},
		{
			name: "sticky margin negative",
			doc:  "default_label: d\nsticky: {enabled: true, margin: -0.1}\n",
			want: []policy.Problem{{Where: "sticky.margin", Reason: "-0.1: want 0 <= x <= 10"}},
		},
		{
			name: "sticky margin too large",
			doc:  "default_label: d\nsticky: {enabled: true, margin: 11}\n",
			want: []policy.Problem{{Where: "sticky.margin", Reason: "want 0 <= x <= 10"}},
		},
		{
			name: "sticky margin NaN",
			doc:  "default_label: d\nsticky: {enabled: true, margin: NaN}\n",
			want: []policy.Problem{{Where: "sticky.margin", Reason: "NaN: want 0 <= x <= 10"}},
		},
		{
			name: "load factor negative",
			doc:  "default_label: d\naffinity: {key: tenant.id, load_factor: -1}\n",
			want: []policy.Problem{{Where: "affinity.load_factor", Reason: "want 0 < x <= 10"}},
		},
		{
			name: "load factor infinite",
			doc:  "default_label: d\naffinity: {key: tenant.id, load_factor: Infinity}\n",
			want: []policy.Problem{{Where: "affinity.load_factor", Reason: "want 0 < x <= 10"}},
		},
		{
			name: "load factor NaN",
			doc:  "default_label: d\naffinity: {key: tenant.id, load_factor: NaN}\n",
			want: []policy.Problem{{Where: "affinity.load_factor", Reason: "NaN: want 0 < x <= 10"}},
		},
		{
			name: "unknown balance mode",
			doc:  "default_label: d\nbalance: {mode: 7}\n",
			want: []policy.Problem{{Where: "balance.mode", Reason: "unknown mode 7"}},
		},
		{
			name: "several problems at once, in document order",
			doc: `
rules:
  - {name: r, when: 'device.model ==', label: x}
  - {name: r, when: 'device.model', label: 'bad label'}
fallbacks: {a: {labels: [a]}}
filter: {max_utilization: 2}
sticky: {margin: -1}
affinity: {key: 'true', load_factor: 11}
`,
			want: []policy.Problem{
				{Where: "default_label", Reason: "required"},
				{Where: "rules[0] (r).when", Reason: "Syntax error"},
				{Where: "rules[1] (r).name", Reason: "also used by rules[0]"},
				{Where: "rules[1] (r).label", Reason: `"bad label"`},
				{Where: "rules[1] (r).when", Reason: "want bool"},
				{Where: "fallbacks", Reason: "cycle a -> a"},
				{Where: "filter.max_utilization", Reason: "want 0 < x <= 1"},
				{Where: "sticky.margin", Reason: "want 0 <= x <= 10"},
				{Where: "affinity.key", Reason: "want string"},
				{Where: "affinity.load_factor", Reason: "want 0 < x <= 10"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := policy.Compile(parse(t, tt.doc))
			if err == nil {
				t.Fatalf("Compile = %v, want an error", c)
			}
			if c != nil {
				t.Errorf("Compile returned %v alongside its error, want nil", c)
			}
			if !errors.Is(err, policy.ErrInvalid) {
				t.Errorf("Compile err = %v, want errors.Is ErrInvalid", err)
			}
			var ve *policy.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Compile err = %T %v, want *ValidationError", err, err)
			}
			if len(ve.Problems) != len(tt.want) {
				t.Fatalf("problems = %q, want %d like %q", ve.Problems, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				got := ve.Problems[i]
				if got.Where != w.Where || !strings.Contains(got.Reason, w.Reason) {
					t.Errorf("problem %d = %q, want where %q and a reason containing %q", i, got, w.Where, w.Reason)
				}
				if strings.Contains(got.Reason, "\n") {
					t.Errorf("problem %d reason spans lines: %q", i, got.Reason)
				}
				if !strings.Contains(err.Error(), got.String()) {
					t.Errorf("Error() = %q, does not carry problem %q", err, got)
				}
			}
		})
	}
}

func TestCompileNil(t *testing.T) {
	_, err := policy.Compile(nil)
	var ve *policy.ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 1 {
		t.Fatalf("Compile(nil) = %v, want one problem", err)
	}
}

func TestCompileDefaults(t *testing.T) {
	c := mustCompile(t, "default_label: d\n")
	if c.MaxUtilization() != 1 {
		t.Errorf("MaxUtilization() = %v, want 1", c.MaxUtilization())
	}
	if c.LoadFactor() != 0.25 {
		t.Errorf("LoadFactor() = %v, want 0.25", c.LoadFactor())
	}
	if on, m := c.Sticky(); on || m != 0 {
		t.Errorf("Sticky() = %v, %v, want off", on, m)
	}
	if c.HasAffinity() || c.BalanceByLoad() {
		t.Errorf("HasAffinity %v BalanceByLoad %v, want both false", c.HasAffinity(), c.BalanceByLoad())
	}
	if c.Version() != 0 {
		t.Errorf("Version() = %d, want 0", c.Version())
	}
	v := c.WithVersion(7)
	if v.Version() != 7 || c.Version() != 0 {
		t.Errorf("WithVersion(7): copy %d, original %d; want 7 and 0", v.Version(), c.Version())
	}
	if got := c.Source().GetDefaultLabel(); got != "d" {
		t.Errorf("Source().DefaultLabel = %q, want d", got)
	}
}

func TestDefault(t *testing.T) {
	c := policy.Default()
	if c.DefaultLabel() != policy.DefaultLabel || policy.DefaultLabel != "default" {
		t.Errorf("DefaultLabel() = %q, want %q", c.DefaultLabel(), "default")
	}
	m, err := c.Label(&policyv1.Input{Device: &policyv1.DeviceInput{Model: "anything"}})
	if err != nil || m != (policy.Match{Label: "default", Index: -1}) {
		t.Errorf("Label = %+v, %v; want default, nil", m, err)
	}
	if got := c.Chain("default"); !slices.Equal(got, []string{"default"}) {
		t.Errorf("Chain(default) = %v", got)
	}
	if got := c.Labels(); !slices.Equal(got, []string{"default"}) {
		t.Errorf("Labels() = %v", got)
	}
	if c.MaxUtilization() != 1 || c.LoadFactor() != 0.25 || c.HasAffinity() || c.BalanceByLoad() {
		t.Errorf("Default settings: maxUtil %v loadFactor %v affinity %v byLoad %v",
			c.MaxUtilization(), c.LoadFactor(), c.HasAffinity(), c.BalanceByLoad())
	}
	if on, _ := c.Sticky(); on {
		t.Error("Default is sticky")
	}
	if k, err := c.AffinityKey(&policyv1.Input{Tenant: &policyv1.TenantInput{Id: "t"}}); k != "" || err != nil {
		t.Errorf("AffinityKey = %q, %v; want none", k, err)
	}
	// Default behaves like the compiled document it reports as its source.
	fromSrc, err := policy.Compile(c.Source())
	if err != nil {
		t.Fatalf("Compile(Default().Source()) = %v", err)
	}
	if fromSrc.DefaultLabel() != c.DefaultLabel() || fromSrc.MaxUtilization() != c.MaxUtilization() || fromSrc.LoadFactor() != c.LoadFactor() {
		t.Errorf("Default() differs from its compiled source")
	}
}
