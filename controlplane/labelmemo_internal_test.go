package controlplane

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	policyv1 "github.com/berthproject/berth/gen/berth/policy/v1"
	"github.com/berthproject/berth/policy"
)

func memoInput() *policyv1.Input {
	return &policyv1.Input{
		Device:   &policyv1.DeviceInput{Id: "d1", Model: "m", Firmware: "1.0", Attributes: map[string]string{"site": "a"}},
		Tenant:   &policyv1.TenantInput{Id: "t1", Attributes: map[string]string{"tier": "gold"}},
		Services: &policyv1.ServicesInput{Requested: []string{"print"}, Entitled: []string{"print", "scan"}},
		History:  &policyv1.HistoryInput{LastGroup: "g1", LastLabel: "l1", ConnectsLastDay: 3, MessagesPerDay: 4, BytesPerDay: 5},
	}
}

// Every field the rules can read, changed alone, makes the inputs differ:
// a field added to the Input messages fails this test until sameInput
// compares it.
func TestSameInputCoversEveryField(t *testing.T) {
	base := memoInput()
	if !sameInput(base, memoInput()) {
		t.Fatal("equal inputs compare different")
	}
	top := base.ProtoReflect()
	fields := top.Descriptor().Fields()
	for i := range fields.Len() {
		part := fields.Get(i)
		sub := top.Get(part).Message().Descriptor().Fields()
		for j := range sub.Len() {
			f := sub.Get(j)
			changed := memoInput()
			msg := changed.ProtoReflect().Mutable(part).Message()
			switch {
			case f.IsMap():
				msg.Mutable(f).Map().Set(protoreflect.ValueOfString("new").MapKey(), protoreflect.ValueOfString("x"))
			case f.IsList():
				msg.Mutable(f).List().Append(protoreflect.ValueOfString("new"))
			case f.Kind() == protoreflect.StringKind:
				msg.Set(f, protoreflect.ValueOfString("changed"))
			case f.Kind() == protoreflect.Int64Kind:
				msg.Set(f, protoreflect.ValueOfInt64(msg.Get(f).Int()+1))
			default:
				t.Fatalf("field %s: kind %v not handled by this test (nor, probably, by sameInput)", f.FullName(), f.Kind())
			}
			if proto.Equal(changed, base) {
				t.Fatalf("field %s: the change did not change the input", f.FullName())
			}
			if sameInput(base, changed) || sameInput(changed, base) {
				t.Errorf("field %s changed, but sameInput reports the inputs equal", f.FullName())
			}
		}
	}
}

func TestLabelMemo(t *testing.T) {
	c := newLabelMemo(2)
	m := policy.Match{Label: "gold", Rule: "r", Index: 0}
	in := memoInput()
	if _, ok := c.get("d1", 7, in); ok {
		t.Fatal("hit on an empty memo")
	}
	c.put("d1", 7, in, m)
	if got, ok := c.get("d1", 7, memoInput()); !ok || got != m {
		t.Errorf("get with equal inputs = %v, %v; want %v", got, ok, m)
	}
	if _, ok := c.get("d1", 8, memoInput()); ok {
		t.Error("hit under another policy version")
	}
	other := memoInput()
	other.History.MessagesPerDay++
	if _, ok := c.get("d1", 7, other); ok {
		t.Error("hit with other inputs")
	}
	// Bounded: a third device evicts one of the first two.
	c.put("d2", 7, memoInput(), m)
	c.put("d3", 7, memoInput(), m)
	if n := c.m.len(); n != 2 {
		t.Errorf("%d entries, want at most 2", n)
	}
	var disabled *labelMemo = newLabelMemo(0)
	disabled.put("d1", 7, in, m)
	if _, ok := disabled.get("d1", 7, in); ok {
		t.Error("a disabled memo hit")
	}
}
