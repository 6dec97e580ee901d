package bench

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/encoding/protojson"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	policyv1 "github.com/berthproject/berth/gen/berth/policy/v1"
	"github.com/berthproject/berth/registry"
)

// The benchmark's fleet: tenants with and without attributes, and devices
// that declare what real ones do (model, firmware, attributes, tenant, user,
// services). The policy's rules are written so that all but the last never
// match these devices, so every Assign evaluates every rule; the last rule
// matches some of them and the others get the default label.

// benchTenants is the number of tenants devices belong to.
const benchTenants = 16

// officeRule and officeLabel are the last rule of the benchmark policy, the
// one that matches some devices.
const (
	officeRule  = "office-printers"
	officeLabel = "office"
)

var (
	benchModels    = []string{"LP-2200", "MFC-7460DN", "LP-4400"}
	benchFirmwares = []string{"3.4.1", "3.6.0", "4.1.2", "3.4.1", "4.0.7"}
	benchRegions   = []string{"eu-west-1", "us-east-1", "eu-central-1", "us-west-2"}
)

// tenantIDs name the tenants.
var tenantIDs = sync.OnceValue(func() []string {
	ids := make([]string, benchTenants)
	for t := range ids {
		ids[t] = fmt.Sprintf("tenant-%02d", t)
	}
	return ids
})

// tenantID names tenant t.
func tenantID(t int) string { return tenantIDs()[t] }

// benchTenantRecords are the tenants stored before the run: a quarter gold,
// a quarter silver, a quarter with a region but no tier, and a quarter with
// no attributes at all (so that rules must guard their lookups).
func benchTenantRecords() []registry.Tenant {
	ts := make([]registry.Tenant, benchTenants)
	for t := range ts {
		ts[t] = registry.Tenant{ID: tenantID(t), Services: []string{"print", "scan"}}
		region := benchRegions[t%len(benchRegions)]
		switch t % 4 {
		case 0:
			ts[t].Attributes = map[string]string{"tier": "gold", "region": region, "contract": "enterprise"}
			ts[t].Services = append(ts[t].Services, "scan-to-cloud")
		case 1:
			ts[t].Attributes = map[string]string{"tier": "silver", "region": region, "contract": "standard"}
		case 2:
			ts[t].Attributes = map[string]string{"region": region}
		}
	}
	return ts
}

// benchSpecs are the distinct specs of benchmark devices: device i has
// benchSpecs()[i%len], shared by every request (only read once built).
var benchSpecs = sync.OnceValue(func() []*controlplanev1.DeviceSpec {
	const sites, floors = 25, 4
	n := len(benchModels) * len(benchFirmwares) * sites * floors
	specs := make([]*controlplanev1.DeviceSpec, n)
	for i := range specs {
		specs[i] = &controlplanev1.DeviceSpec{
			Model:    benchModels[i%len(benchModels)],
			Firmware: benchFirmwares[i%len(benchFirmwares)],
			Attributes: map[string]string{
				"site":     fmt.Sprintf("site-%02d", i%sites),
				"location": fmt.Sprintf("floor-%d", i%floors+1),
			},
		}
	}
	return specs
})

// benchUsers are the users devices are registered to.
var benchUsers = sync.OnceValue(func() []string {
	users := make([]string, 1000)
	for i := range users {
		users[i] = fmt.Sprintf("user-%04d", i)
	}
	return users
})

var (
	printScan = []string{"print", "scan"}
	scanOnly  = []string{"scan"}
)

// deviceRequest is what benchmark device i, named id, sends.
func deviceRequest(id string, i int, prev *controlplanev1.PreviousAssignment) *controlplanev1.AssignRequest {
	services := printScan
	if i%5 == 0 {
		services = scanOnly
	}
	specs, users := benchSpecs(), benchUsers()
	return &controlplanev1.AssignRequest{
		DeviceId: id,
		Spec:     specs[i%len(specs)],
		TenantId: tenantID(i % benchTenants),
		UserId:   users[i%len(users)],
		Services: services,
		Previous: prev,
	}
}

// probeRequest is a device the last rule of the benchmark policy matches:
// its Assign names that rule once the policy is in force.
func probeRequest(id string) *controlplanev1.AssignRequest {
	return &controlplanev1.AssignRequest{
		DeviceId: id,
		Spec:     &controlplanev1.DeviceSpec{Model: benchModels[0], Firmware: benchFirmwares[0], Attributes: map[string]string{"site": "site-00"}},
		TenantId: tenantID(0), // gold
		Services: printScan,
	}
}

// ruleTemplates are conditions real operators write, none of which matches
// a benchmark device. v is "" the first time a template is used and a
// suffix after, so that repeated templates are distinct rules (other
// models, tiers, regions...) that still do not match.
var ruleTemplates = []func(v string, k int) (name, when, label string){
	func(v string, _ int) (string, string, string) {
		return "fax-machines", fmt.Sprintf(`device.model.startsWith("FAX%s-") && "fax" in services.requested`, v), "fax"
	},
	func(v string, _ int) (string, string, string) {
		return "platinum-tenants", fmt.Sprintf(`"tier" in tenant.attributes && tenant.attributes["tier"] == "platinum%s"`, v), "premium"
	},
	func(_ string, k int) (string, string, string) {
		return "legacy-firmware", fmt.Sprintf(`device.firmware < "2.%d.0" || device.firmware.startsWith("1.")`, k), "legacy"
	},
	func(v string, _ int) (string, string, string) {
		return "quarantined", fmt.Sprintf(`history.last_label == "quarantine%s"`, v), "quarantine"
	},
	func(_ string, k int) (string, string, string) {
		regions := []string{"ap-south-1", "ap-northeast-1", "sa-east-1", "me-central-1", "af-south-1"}
		return "apac-lp", fmt.Sprintf(`"region" in tenant.attributes && tenant.attributes["region"] == "%s" && device.model.startsWith("LP-")`, regions[k%len(regions)]), "apac"
	},
	func(_ string, k int) (string, string, string) {
		return "cloud-scan", fmt.Sprintf(`"scan-to-cloud" in services.requested && device.firmware >= "%d.0.0"`, 5+k), "cloud-scan"
	},
	func(v string, _ int) (string, string, string) {
		return "lab-sites", fmt.Sprintf(`"site" in device.attributes && device.attributes["site"].startsWith("lab%s-")`, v), "lab"
	},
	func(v string, _ int) (string, string, string) {
		return "qa-fleet", fmt.Sprintf(`device.id.startsWith("qa%s-") || device.model == "SIMULATOR%s"`, v, v), "test"
	},
	func(_ string, k int) (string, string, string) {
		return "chatty", fmt.Sprintf(`history.messages_per_day > %d || history.connects_last_day > %d`, 100000*(k+1), 200*(k+1)), "chatty"
	},
	func(_ string, k int) (string, string, string) {
		return "trial-old-firmware", fmt.Sprintf(`"contract" in tenant.attributes && tenant.attributes["contract"] == "trial" && device.firmware < "3.%d.0"`, 2+k), "trial"
	},
	func(v string, _ int) (string, string, string) {
		return "dcp-wifi", fmt.Sprintf(`device.model.matches("^DCP%s-[0-9]{4}W$")`, v), "wifi"
	},
	func(v string, _ int) (string, string, string) {
		return "mfc-beta", fmt.Sprintf(`device.model.startsWith("MFC-") && device.firmware.startsWith("5.") && "beta%s" in tenant.attributes`, v), "beta"
	},
	func(v string, _ int) (string, string, string) {
		return "dedicated", fmt.Sprintf(`history.last_label == "dedicated%s" && "dedicated" in tenant.attributes`, v), "dedicated"
	},
}

// benchPolicy returns the benchmark policy with n label rules (n >= 1):
// n-1 that no benchmark device matches, then officeRule, which matches
// devices of a gold or silver tenant, of an LP- model, that ask for print.
// Sticky placement, tenant affinity and a utilization filter are on, as an
// operator would have them.
func benchPolicy(n int) *policyv1.Policy {
	p := &policyv1.Policy{
		DefaultLabel: "default",
		Fallbacks: map[string]*policyv1.Fallback{
			"premium":    {Labels: []string{officeLabel, "default"}},
			officeLabel:  {Labels: []string{"default"}},
			"cloud-scan": {Labels: []string{"default"}},
		},
		Filter:   &policyv1.GroupFilter{MaxUtilization: 0.9},
		Sticky:   &policyv1.Sticky{Enabled: true, Margin: 0.2},
		Affinity: &policyv1.Affinity{Key: "tenant.id", LoadFactor: 0.25},
		Balance:  &policyv1.Balance{Mode: policyv1.BalanceMode_BALANCE_MODE_CONNECTIONS},
	}
	for i := range n - 1 {
		k := i / len(ruleTemplates)
		v := ""
		if k > 0 {
			v = fmt.Sprintf("-v%d", k+1)
		}
		name, when, label := ruleTemplates[i%len(ruleTemplates)](v, k)
		if k > 0 {
			name += v
		}
		p.Rules = append(p.Rules, &policyv1.Rule{Name: name, When: when, Label: label})
	}
	p.Rules = append(p.Rules, &policyv1.Rule{
		Name:  officeRule,
		When:  `device.model.startsWith("LP-") && "tier" in tenant.attributes && tenant.attributes["tier"] in ["gold", "silver"] && "print" in services.requested`,
		Label: officeLabel,
	})
	return p
}

// benchPolicyDoc is benchPolicy(n) as a JSON document.
func benchPolicyDoc(n int) ([]byte, error) {
	return protojson.Marshal(benchPolicy(n))
}

// benchLabels are the labels the benchmark groups carry: every label the
// policy of n rules can assign, so that every rule's label has groups.
func benchLabels(n int) []string {
	labels := []string{"default"}
	if n > 0 {
		for _, r := range benchPolicy(n).GetRules() {
			labels = append(labels, r.GetLabel())
		}
	}
	slices.Sort(labels)
	return slices.Compact(labels)
}

// ruleOf returns the rule an Assign's reason names ("" for the default
// label): reasons start "rule NAME: label ..." or "default label ...".
func ruleOf(reason string) string {
	rest, ok := strings.CutPrefix(reason, "rule ")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, ":")
	return name
}
