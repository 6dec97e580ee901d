package policy

import (
	"fmt"
	"strings"
	"testing"

	"cel.dev/cel-go/cel"

	policyv1 "github.com/berthproject/berth/gen/berth/policy/v1"
)

// Expressions evaluated over converted inputs give what they give over the
// protobuf messages, field by field, including presence tests, for full and
// for empty inputs.
func TestConvertedInputsMatchMessages(t *testing.T) {
	env, err := celEnv()
	if err != nil {
		t.Fatal(err)
	}
	full := &policyv1.Input{
		Device:   &policyv1.DeviceInput{Id: "dev-1", Model: "LP-2200", Firmware: "3.4.1", Attributes: map[string]string{"site": "lab-1", "floor": "2"}},
		Tenant:   &policyv1.TenantInput{Id: "acme", Attributes: map[string]string{"tier": "gold"}},
		Services: &policyv1.ServicesInput{Requested: []string{"print", "scan"}, Entitled: []string{"print"}},
		History:  &policyv1.HistoryInput{LastGroup: "g1", LastLabel: "office", ConnectsLastDay: 3, MessagesPerDay: 1200, BytesPerDay: 1 << 20},
	}
	exprs := []string{
		"device.id", "device.model", "device.firmware", "device.attributes", "tenant.id", "tenant.attributes",
		"services.requested", "services.entitled", "history.last_group", "history.last_label",
		"history.connects_last_day", "history.messages_per_day", "history.bytes_per_day",
		`device.attributes["site"]`, `"tier" in tenant.attributes`, `services.requested.exists(s, s in services.entitled)`,
		`device.attributes.all(k, k.size() > 0)`, `device.model.matches("^LP-[0-9]+$")`,
		"device == device", "device.id == tenant.id",
	}
	for _, in := range []*policyv1.Input{full, {}} {
		messages := map[string]any{
			"device": orEmpty(in.GetDevice()), "tenant": orEmpty(in.GetTenant()),
			"services": orEmpty(in.GetServices()), "history": orEmpty(in.GetHistory()),
		}
		var fields []string
		for _, it := range []*inputType{deviceType, tenantType, servicesType, historyType} {
			v := strings.TrimSuffix(strings.ToLower(strings.TrimPrefix(it.typ.TypeName(), "berth.policy.v1.")), "input")
			for f := range it.fields {
				fields = append(fields, fmt.Sprintf("has(%s.%s)", v, f))
			}
		}
		for _, e := range append(exprs, fields...) {
			ast, iss := env.Compile(e)
			if iss.Err() != nil {
				t.Fatalf("%s: %v", e, iss.Err())
			}
			prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
			if err != nil {
				t.Fatal(err)
			}
			want, _, werr := prg.Eval(messages)
			got, _, gerr := prg.Eval(newInputs(in))
			if (werr == nil) != (gerr == nil) {
				t.Errorf("%s: error %v over messages, %v over converted inputs", e, werr, gerr)
				continue
			}
			if werr == nil && want.Equal(got).Value() != true {
				t.Errorf("%s: %v over messages, %v over converted inputs", e, want, got)
			}
		}
	}
}

func orEmpty[T any, P interface{ *T }](p P) P {
	if p == nil {
		return new(T)
	}
	return p
}

// The cost bound refuses expressions that could run long on the largest
// inputs and accepts what operators write.
func TestCostBound(t *testing.T) {
	for _, tc := range []struct {
		expr string
		ok   bool
	}{
		{`device.model.startsWith("LP-") && "print" in services.requested`, true},
		{`"tier" in tenant.attributes && tenant.attributes["tier"] in ["gold", "silver"]`, true},
		{`device.attributes.exists(k, device.attributes[k].matches("^lab-[0-9]+$"))`, true},
		{`services.entitled.exists(s, s in services.requested)`, true},
		{`device.attributes.all(k, tenant.attributes.exists(j, device.attributes[k].contains(tenant.attributes[j])))`, false},
		{`services.entitled.all(a, services.entitled.all(b, services.entitled.exists(c, a + b == c)))`, false},
	} {
		_, reason := compileExpr(tc.expr, cel.BoolType)
		if ok := reason == ""; ok != tc.ok {
			t.Errorf("%s: accepted %v (%s), want %v", tc.expr, ok, reason, tc.ok)
		}
		if !tc.ok && !strings.Contains(reason, "may cost") {
			t.Errorf("%s: refused for %q, want the cost named", tc.expr, reason)
		}
	}
}
