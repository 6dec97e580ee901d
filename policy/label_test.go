package policy_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	policyv1 "github.com/berthproject/berth/gen/berth/policy/v1"
	"github.com/berthproject/berth/policy"
)

// input builds what expressions see; nil maps stay empty, not nil.
type input struct {
	id, model, firmware string
	attrs               map[string]string
	tenant              string
	tenantAttrs         map[string]string
	requested, entitled []string
	lastGroup           string
	messagesPerDay      int64
	bytesPerDay         int64
	connectsLastDay     int64
}

func (in input) proto() *policyv1.Input {
	orEmpty := func(m map[string]string) map[string]string {
		if m == nil {
			return map[string]string{}
		}
		return m
	}
	return &policyv1.Input{
		Device:   &policyv1.DeviceInput{Id: in.id, Model: in.model, Firmware: in.firmware, Attributes: orEmpty(in.attrs)},
		Tenant:   &policyv1.TenantInput{Id: in.tenant, Attributes: orEmpty(in.tenantAttrs)},
		Services: &policyv1.ServicesInput{Requested: in.requested, Entitled: in.entitled},
		History: &policyv1.HistoryInput{LastGroup: in.lastGroup, MessagesPerDay: in.messagesPerDay,
			BytesPerDay: in.bytesPerDay, ConnectsLastDay: in.connectsLastDay},
	}
}

const labelDoc = `
default_label: std
rules:
  - name: gold-tenants
    when: tenant.attributes["tier"] == "gold"
    label: gold
  - name: eu-models
    when: device.model.startsWith("EU-")
    label: eu
  - name: printing
    when: '"print" in services.requested && "print" in services.entitled'
    label: print
  - name: heavy
    when: history.messages_per_day > 1000 || history.bytes_per_day >= 1000000
    label: heavy
  - name: returning
    when: history.last_group == "g-7" && history.connects_last_day > 3
    label: returning
  - name: new-firmware
    when: device.firmware >= "2.0" && device.attributes["site"] == "lab"
    label: lab
`

func TestLabel(t *testing.T) {
	c := mustCompile(t, labelDoc)
	tests := []struct {
		name      string
		in        input
		wantLabel string
		wantRule  string
		wantIndex int
	}{
		{"default when nothing matches", input{model: "X", tenantAttrs: map[string]string{"tier": "silver"}}, "std", "", -1},
		{"tenant attribute", input{tenantAttrs: map[string]string{"tier": "gold"}}, "gold", "gold-tenants", 0},
		{"device model", input{model: "EU-200"}, "eu", "eu-models", 1},
		{"first match wins", input{model: "EU-200", tenantAttrs: map[string]string{"tier": "gold"}}, "gold", "gold-tenants", 0},
		{"services requested and entitled", input{requested: []string{"scan", "print"}, entitled: []string{"print"}}, "print", "printing", 2},
		{"service requested but not entitled", input{requested: []string{"print"}, entitled: []string{"scan"}}, "std", "", -1},
		{"history messages per day", input{messagesPerDay: 1001}, "heavy", "heavy", 3},
		{"history messages per day at the bound", input{messagesPerDay: 1000}, "std", "", -1},
		{"history bytes per day", input{bytesPerDay: 1000000}, "heavy", "heavy", 3},
		{"history last group and connects", input{lastGroup: "g-7", connectsLastDay: 4}, "returning", "returning", 4},
		{"device firmware and attributes", input{firmware: "2.1", attrs: map[string]string{"site": "lab"}}, "lab", "new-firmware", 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := c.Label(tt.in.proto())
			want := policy.Match{Label: tt.wantLabel, Rule: tt.wantRule, Index: tt.wantIndex}
			if m != want {
				t.Errorf("Label = %+v, want %+v", m, want)
			}
			// Only rules reading a missing map key can fail; every input
			// that sets no tier fails gold-tenants and reports it.
			_, hasTier := tt.in.tenantAttrs["tier"]
			if hasTier && err != nil {
				t.Errorf("Label err = %v, want nil", err)
			}
		})
	}
}

func TestLabelEvaluationErrors(t *testing.T) {
	c := mustCompile(t, `
default_label: std
rules:
  - name: needs-x
    when: tenant.attributes["x"] == "y"
    label: x
  - name: model
    when: device.model == "M"
    label: m
`)
	t.Run("failing rule is skipped, later rule matches", func(t *testing.T) {
		m, err := c.Label(input{model: "M"}.proto())
		if m != (policy.Match{Label: "m", Rule: "model", Index: 1}) {
			t.Errorf("Label = %+v, want rule model", m)
		}
		if err == nil || !strings.Contains(err.Error(), "rule needs-x") || !strings.Contains(err.Error(), "no such key") {
			t.Errorf("Label err = %v, want the needs-x rule's missing key", err)
		}
	})
	t.Run("failing rule is skipped, default", func(t *testing.T) {
		m, err := c.Label(input{model: "N"}.proto())
		if m != (policy.Match{Label: "std", Index: -1}) {
			t.Errorf("Label = %+v, want the default", m)
		}
		if err == nil || !strings.Contains(err.Error(), "rule needs-x") {
			t.Errorf("Label err = %v, want the needs-x rule's error", err)
		}
	})
	t.Run("no error once the key is there", func(t *testing.T) {
		m, err := c.Label(input{tenantAttrs: map[string]string{"x": "y"}}.proto())
		if err != nil || m.Rule != "needs-x" {
			t.Errorf("Label = %+v, %v; want needs-x, nil", m, err)
		}
	})
	t.Run("nil input parts read as empty", func(t *testing.T) {
		for _, in := range []*policyv1.Input{nil, {}, {Device: &policyv1.DeviceInput{Model: "M"}}} {
			m, err := c.Label(in)
			if err == nil {
				t.Errorf("Label(%v) err = nil, want the missing key of needs-x", in)
			}
			if in.GetDevice().GetModel() == "M" && m.Rule != "model" || in.GetDevice().GetModel() != "M" && m.Index != -1 {
				t.Errorf("Label(%v) = %+v", in, m)
			}
		}
	})
}

func TestUnnamedRuleIsNamedByIndex(t *testing.T) {
	c := mustCompile(t, "default_label: d\nrules: [{when: 'tenant.attributes[\"k\"] == \"v\"', label: x}]\n")
	m, err := c.Label(input{}.proto())
	if m.Index != -1 || err == nil || !strings.Contains(err.Error(), "rule rules[0]") {
		t.Errorf("Label = %+v, %v; want the default and an error naming rules[0]", m, err)
	}
	m, err = c.Label(input{tenantAttrs: map[string]string{"k": "v"}}.proto())
	if err != nil || m != (policy.Match{Label: "x", Rule: "rules[0]", Index: 0}) {
		t.Errorf("Label = %+v, %v; want rules[0]", m, err)
	}
}

func TestAffinityKey(t *testing.T) {
	tests := []struct {
		name, doc string
		in        input
		want      string
		wantErr   string
	}{
		{"none declared", "default_label: d\n", input{tenant: "acme"}, "", ""},
		{"blank key is none", "default_label: d\naffinity: {key: '  '}\n", input{tenant: "acme"}, "", ""},
		{"tenant id", "default_label: d\naffinity: {key: tenant.id}\n", input{tenant: "acme"}, "acme", ""},
		{"empty tenant", "default_label: d\naffinity: {key: tenant.id}\n", input{}, "", ""},
		{"composite", "default_label: d\naffinity: {key: 'tenant.id + \"/\" + device.attributes[\"site\"]'}\n",
			input{tenant: "acme", attrs: map[string]string{"site": "lyon"}}, "acme/lyon", ""},
		{"missing key errors", "default_label: d\naffinity: {key: 'device.attributes[\"site\"]'}\n", input{}, "", "affinity key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustCompile(t, tt.doc)
			got, err := c.AffinityKey(tt.in.proto())
			if got != tt.want {
				t.Errorf("AffinityKey = %q, want %q", got, tt.want)
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("AffinityKey err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestChain(t *testing.T) {
	c := mustCompile(t, `
default_label: a
rules:
  - {name: r, when: 'device.model == "z"', label: z}
fallbacks:
  a: {labels: [b, c]}
  b: {labels: [d, c]}
  c: {labels: [e]}
  d: {labels: [a2]}
  x: {labels: [a]}
`)
	tests := []struct {
		label string
		want  []string
	}{
		// Depth first: a, then b and all of b's (d, a2, c, e), then c again
		// is skipped.
		{"a", []string{"a", "b", "d", "a2", "c", "e"}},
		{"b", []string{"b", "d", "a2", "c", "e"}},
		{"c", []string{"c", "e"}},
		{"x", []string{"x", "a", "b", "d", "a2", "c", "e"}},
		{"e", []string{"e"}},
		{"unknown", []string{"unknown"}},
	}
	for _, tt := range tests {
		if got := c.Chain(tt.label); !slices.Equal(got, tt.want) {
			t.Errorf("Chain(%s) = %v, want %v", tt.label, got, tt.want)
		}
	}
	wantLabels := []string{"a", "a2", "b", "c", "d", "e", "x", "z"}
	if got := c.Labels(); !slices.Equal(got, wantLabels) {
		t.Errorf("Labels() = %v, want %v", got, wantLabels)
	}
}

func TestUnknownLabels(t *testing.T) {
	c := mustCompile(t, `
default_label: std
rules:
  - {name: g, when: 'tenant.id == "g"', label: gold}
  - {name: e, when: 'tenant.id == "e"', label: eu}
fallbacks:
  gold: {labels: [silver, std]}
`)
	tests := []struct {
		name  string
		known map[string]bool
		want  []string
	}{
		{"no groups", nil, []string{"eu", "gold", "silver", "std"}},
		{"some carried", map[string]bool{"std": true, "gold": true, "other": true}, []string{"eu", "silver"}},
		{"all carried", map[string]bool{"std": true, "gold": true, "eu": true, "silver": true}, nil},
		{"false is not known", map[string]bool{"std": true, "gold": true, "eu": true, "silver": false}, []string{"silver"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.UnknownLabels(tt.known); !slices.Equal(got, tt.want) {
				t.Errorf("UnknownLabels(%v) = %v, want %v", tt.known, got, tt.want)
			}
		})
	}
	if got := policy.Default().UnknownLabels(map[string]bool{"default": true}); len(got) != 0 {
		t.Errorf("Default().UnknownLabels = %v, want none", got)
	}
}

// TestLabelConcurrent runs Label and AffinityKey from 8 goroutines on one
// Compiled; run with -race.
func TestLabelConcurrent(t *testing.T) {
	c := mustCompile(t, labelDoc+"affinity: {key: 'tenant.id + \"/\" + device.model'}\n")
	ins := []struct {
		in   input
		want string
	}{
		{input{tenant: "t", tenantAttrs: map[string]string{"tier": "gold"}}, "gold"},
		{input{tenant: "t", model: "EU-1", tenantAttrs: map[string]string{"tier": "x"}}, "eu"},
		{input{tenant: "t", messagesPerDay: 5000}, "heavy"},
		{input{tenant: "t", requested: []string{"print"}, entitled: []string{"print"}}, "print"},
		{input{tenant: "t"}, "std"},
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				x := ins[(g+i)%len(ins)]
				m, _ := c.Label(x.in.proto())
				if m.Label != x.want {
					errs <- fmt.Errorf("goroutine %d: Label = %s, want %s", g, m.Label, x.want)
					return
				}
				k, err := c.AffinityKey(x.in.proto())
				if want := "t/" + x.in.model; err != nil || k != want {
					errs <- fmt.Errorf("goroutine %d: AffinityKey = %q, %v; want %q", g, k, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
