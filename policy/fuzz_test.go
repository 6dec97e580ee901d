package policy_test

import (
	"errors"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	policyv1 "github.com/berthproject/berth/gen/berth/policy/v1"
	"github.com/berthproject/berth/policy"
)

// fuzzInputs are the devices a compiled policy is run on in FuzzPolicy.
var fuzzInputs = []*policyv1.Input{
	{},
	{
		Device:   &policyv1.DeviceInput{Id: "dev-1", Model: "EU-100", Firmware: "2.1.0", Attributes: map[string]string{"site": "lyon", "": ""}},
		Tenant:   &policyv1.TenantInput{Id: "acme", Attributes: map[string]string{"tier": "gold"}},
		Services: &policyv1.ServicesInput{Requested: []string{"print", "scan"}, Entitled: []string{"print"}},
		History:  &policyv1.HistoryInput{LastGroup: "g1", LastLabel: "gold", ConnectsLastDay: 3, MessagesPerDay: 1 << 40, BytesPerDay: -1},
	},
}

// FuzzPolicy: parsing, validating and compiling any document never panics;
// a refusal wraps ErrInvalid; a document that compiles runs on any input
// without panicking, labels devices only with labels it declares, and,
// stored as admin.ApplyPolicy stores it (protojson of its source), parses
// and compiles again to the same policy on every replica.
//
// Its seeds are in testdata/fuzz/FuzzPolicy.
func FuzzPolicy(f *testing.F) {
	f.Fuzz(func(t *testing.T, doc []byte) {
		p, err := policy.Parse(doc)
		if err != nil {
			if !errors.Is(err, policy.ErrInvalid) {
				t.Fatalf("Parse = %v: does not wrap ErrInvalid", err)
			}
			return
		}
		c, err := policy.Compile(p)
		if err != nil {
			var ve *policy.ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 || !errors.Is(err, policy.ErrInvalid) {
				t.Fatalf("Compile = %v: want a *ValidationError naming its problems", err)
			}
			return
		}
		labels := c.Labels()
		for _, in := range fuzzInputs {
			m, _ := c.Label(in)
			if !slices.Contains(labels, m.Label) {
				t.Fatalf("Label gave %q, not one of the policy's labels %v", m.Label, labels)
			}
			_, _ = c.AffinityKey(in)
		}
		for _, l := range labels {
			_ = c.Chain(l)
		}
		stored, err := protojson.Marshal(c.Source())
		if err != nil {
			t.Fatalf("encode the compiled policy: %v", err)
		}
		p2, err := policy.Parse(stored)
		if err != nil {
			t.Fatalf("the stored form %s does not parse: %v", stored, err)
		}
		if !proto.Equal(p, p2) {
			t.Fatalf("the stored form %s parses to another policy", stored)
		}
		if _, err := policy.Compile(p2); err != nil {
			t.Fatalf("the stored form %s does not compile: %v", stored, err)
		}
	})
}
