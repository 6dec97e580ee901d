package bench

import (
	"fmt"
	"testing"

	"github.com/berthproject/berth/placement"
	"github.com/berthproject/berth/policy"
	"github.com/berthproject/berth/registry"
)

// BenchmarkPolicyLabel measures the benchmark policy's label rules for one
// device: the CEL part of an Assign.
func BenchmarkPolicyLabel(b *testing.B) {
	for _, n := range []int{1, 20} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			pol, err := policy.Compile(benchPolicy(n))
			if err != nil {
				b.Fatal(err)
			}
			snap := registry.NewSnapshot(1, nil, nil).WithPolicy(nil, benchTenantRecords())
			req := deviceRequest("dev-1", 1, nil)
			in := placement.PolicyInput(snap, req.GetDeviceId(), &registry.DeviceInputs{
				Model: req.GetSpec().GetModel(), Firmware: req.GetSpec().GetFirmware(), Attributes: req.GetSpec().GetAttributes(),
				Tenant: req.GetTenantId(), Services: req.GetServices(), Weight: 1,
			}, "", "", registry.History{})
			b.ReportAllocs()
			for b.Loop() {
				if _, err := pol.Label(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
