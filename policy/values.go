package policy

import (
	"fmt"
	"reflect"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/interpreter"

	policyv1 "github.com/berthproject/berth/gen/berth/policy/v1"
)

// Expressions are type-checked against the berth.policy.v1 input messages,
// but evaluated against inputs converted once per decision into CEL values:
// reading a protobuf field through reflection and converting it costs
// allocations on every access, and a 20-rule policy reads dozens of fields.
// inputProvider answers the field lookups of the four input types with
// getters over these values (and still over the messages, so both work).

// object is an input message as CEL values, field by field in the order of
// its type's fields.
type object struct {
	typ    *types.Type
	fields [maxInputFields]ref.Val
	set    [maxInputFields]bool
}

// maxInputFields is the most fields an input type has.
const maxInputFields = 5

// ConvertToNative implements ref.Val; inputs only flow into expressions.
func (o *object) ConvertToNative(reflect.Type) (any, error) {
	return nil, fmt.Errorf("policy: %s cannot leave an expression", o.typ.TypeName())
}

// ConvertToType implements ref.Val.
func (o *object) ConvertToType(t ref.Type) ref.Val {
	if t == types.TypeType {
		return o.typ
	}
	if t.TypeName() == o.typ.TypeName() {
		return o
	}
	return types.NewErr("type conversion error from '%s' to '%s'", o.typ.TypeName(), t.TypeName())
}

// Equal implements ref.Val: inputs of the same type with equal fields.
func (o *object) Equal(other ref.Val) ref.Val {
	p, ok := other.(*object)
	if !ok || p.typ != o.typ {
		return types.False
	}
	for i := range o.fields {
		if o.fields[i] == nil {
			break
		}
		if o.fields[i].Equal(p.fields[i]) != types.True {
			return types.False
		}
	}
	return types.True
}

// Type implements ref.Val.
func (o *object) Type() ref.Type { return o.typ }

// Value implements ref.Val; field getters receive the object itself.
func (o *object) Value() any { return o }

// inputType describes one input message: its CEL type and field names.
type inputType struct {
	typ    *types.Type
	fields map[string]int
}

// The four input types, with fields in the order objects hold them.
var (
	deviceType   = newInputType("berth.policy.v1.DeviceInput", "id", "model", "firmware", "attributes")
	tenantType   = newInputType("berth.policy.v1.TenantInput", "id", "attributes")
	servicesType = newInputType("berth.policy.v1.ServicesInput", "requested", "entitled")
	historyType  = newInputType("berth.policy.v1.HistoryInput", "last_group", "last_label", "connects_last_day", "messages_per_day", "bytes_per_day")
	inputTypes   = map[string]*inputType{}
)

func init() {
	for _, t := range []*inputType{deviceType, tenantType, servicesType, historyType} {
		inputTypes[t.typ.TypeName()] = t
	}
}

func newInputType(name string, fields ...string) *inputType {
	t := &inputType{typ: types.NewObjectType(name), fields: make(map[string]int, len(fields))}
	for i, f := range fields {
		t.fields[f] = i
	}
	return t
}

// inputProvider is the protobuf type registry with the input types' fields
// read from objects.
type inputProvider struct {
	*types.Registry
}

// FindStructFieldType implements types.Provider.
func (p inputProvider) FindStructFieldType(structType, fieldName string) (*types.FieldType, bool) {
	ft, ok := p.Registry.FindStructFieldType(structType, fieldName)
	t, known := inputTypes[structType]
	if !ok || !known {
		return ft, ok
	}
	i, ok := t.fields[fieldName]
	if !ok {
		return nil, false
	}
	protoGet, protoSet := ft.GetFrom, ft.IsSet
	return &types.FieldType{
		Type: ft.Type,
		IsSet: func(target any) bool {
			if o, ok := target.(*object); ok {
				return o.set[i]
			}
			return protoSet(target)
		},
		GetFrom: func(target any) (any, error) {
			if o, ok := target.(*object); ok {
				return o.fields[i], nil
			}
			return protoGet(target)
		},
		IsJSONField: ft.IsJSONField,
	}, true
}

// newInputProvider registers the input messages.
func newInputProvider() (inputProvider, error) {
	reg, err := types.NewRegistry(&policyv1.DeviceInput{}, &policyv1.TenantInput{}, &policyv1.ServicesInput{}, &policyv1.HistoryInput{})
	if err != nil {
		return inputProvider{}, err
	}
	for name, t := range inputTypes {
		n, ok := reg.FindStructFieldNames(name)
		if !ok || len(n) != len(t.fields) {
			return inputProvider{}, fmt.Errorf("policy: input type %s has fields %v, the evaluator knows %d", name, n, len(t.fields))
		}
		for _, f := range n {
			if _, ok := t.fields[f]; !ok {
				return inputProvider{}, fmt.Errorf("policy: input type %s field %s unknown to the evaluator", name, f)
			}
		}
	}
	return inputProvider{Registry: reg}, nil
}

// inputs is one decision's input as an activation: the four variables.
type inputs struct {
	device, tenant, services, history object
}

var _ interpreter.Activation = (*inputs)(nil)

// ResolveName implements interpreter.Activation.
func (a *inputs) ResolveName(name string) (any, bool) {
	switch name {
	case "device":
		return &a.device, true
	case "tenant":
		return &a.tenant, true
	case "services":
		return &a.services, true
	case "history":
		return &a.history, true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (a *inputs) Parent() interpreter.Activation { return nil }

// newInputs converts in. A nil part is an empty message.
func newInputs(in *policyv1.Input) *inputs {
	d, t, s, h := in.GetDevice(), in.GetTenant(), in.GetServices(), in.GetHistory()
	a := &inputs{}
	a.device.fill(deviceType, str(d.GetId()), str(d.GetModel()), str(d.GetFirmware()), strMap(d.GetAttributes()))
	a.tenant.fill(tenantType, str(t.GetId()), strMap(t.GetAttributes()))
	a.services.fill(servicesType, strList(s.GetRequested()), strList(s.GetEntitled()))
	a.history.fill(historyType, str(h.GetLastGroup()), str(h.GetLastLabel()),
		num(h.GetConnectsLastDay()), num(h.GetMessagesPerDay()), num(h.GetBytesPerDay()))
	return a
}

// field is a converted value and whether proto3 would call it set.
type field struct {
	v   ref.Val
	set bool
}

// fill sets o to an input of type t with the given fields, in order.
func (o *object) fill(t *inputType, fs ...field) {
	o.typ = t.typ
	for i, f := range fs {
		o.fields[i], o.set[i] = f.v, f.set
	}
}

var emptyString = types.String("")

func str(s string) field {
	if s == "" {
		return field{v: emptyString}
	}
	return field{v: types.String(s), set: true}
}

func num(n int64) field { return field{v: types.Int(n), set: n != 0} }

var emptyStrings = []string{}

func strMap(m map[string]string) field {
	if m == nil {
		m = map[string]string{}
	}
	return field{v: types.NewStringStringMap(types.DefaultTypeAdapter, m), set: len(m) > 0}
}

func strList(l []string) field {
	if l == nil {
		l = emptyStrings
	}
	return field{v: types.NewStringList(types.DefaultTypeAdapter, l), set: len(l) > 0}
}
