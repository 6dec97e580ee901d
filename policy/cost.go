package policy

import (
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/cost"
)

// An expression's cost is bounded once, when the policy is compiled, not on
// every evaluation: CEL cost tracking at run time doubles the price of every
// rule. The bound holds because every input is bounded where it enters
// berth; InputBounds states those bounds, and the control plane (Assign
// validation) and the registry (tenant validation) enforce them.

// InputBounds are the largest inputs an expression may see.
const (
	// MaxIDLen bounds device, tenant, group ids and labels, in bytes.
	MaxIDLen = 128
	// MaxSpecField bounds a device's model and firmware, in bytes.
	MaxSpecField = 128
	// MaxAttributes bounds a device's or tenant's attribute count.
	MaxAttributes = 64
	// MaxAttrKey and MaxAttrValue bound one attribute, in bytes.
	MaxAttrKey, MaxAttrValue = 128, 1024
	// MaxRequestedServices bounds the services a device asks for.
	MaxRequestedServices = 32
	// MaxEntitledServices bounds the services a tenant is entitled to.
	MaxEntitledServices = 256
	// MaxServiceName bounds one service name, in bytes.
	MaxServiceName = 64
)

// MaxExprCost is the most an expression may cost on the largest inputs, in
// CEL's cost units (about one unit per operation or per 10 bytes a string
// function scans). A rule list costs at most the sum of its rules.
const MaxExprCost = 100_000

// inputSizes is the size of each input the estimator may ask about, by path
// from the variable.
var inputSizes = map[string]uint64{
	"device.id":                 MaxIDLen,
	"device.model":              MaxSpecField,
	"device.firmware":           MaxSpecField,
	"device.attributes":         MaxAttributes,
	"device.attributes.@keys":   MaxAttrKey,
	"device.attributes.@values": MaxAttrValue,
	"tenant.id":                 MaxIDLen,
	"tenant.attributes":         MaxAttributes,
	"tenant.attributes.@keys":   MaxAttrKey,
	"tenant.attributes.@values": MaxAttrValue,
	"services.requested":        MaxRequestedServices,
	"services.requested.@items": MaxServiceName,
	"services.entitled":         MaxEntitledServices,
	"services.entitled.@items":  MaxServiceName,
	"history.last_group":        MaxIDLen,
	"history.last_label":        MaxIDLen,
}

// sizeEstimator gives the estimator the input bounds.
type sizeEstimator struct{}

// EstimateSize implements cost.Estimator.
func (sizeEstimator) EstimateSize(n cost.AstNode) *cost.SizeEstimate {
	p := n.Path()
	if len(p) == 0 {
		return nil
	}
	if max, ok := inputSizes[strings.Join(p, ".")]; ok {
		return &cost.SizeEstimate{Min: 0, Max: max}
	}
	return nil
}

// EstimateCallCost implements cost.Estimator: CEL's own estimates.
func (sizeEstimator) EstimateCallCost(string, string, *cost.AstNode, []cost.AstNode) *cost.CallEstimate {
	return nil
}

// estimateCost returns the most ast can cost on the largest inputs.
func estimateCost(env *cel.Env, ast *cel.Ast) (uint64, error) {
	est, err := env.EstimateCost(ast, sizeEstimator{})
	if err != nil {
		return 0, err
	}
	return est.Max, nil
}
