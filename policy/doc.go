// Package policy compiles berth's placement policy (berth.policy.v1.Policy):
// it parses the YAML or JSON operators write, validates the whole document
// (every CEL expression compiles and type-checks, fallbacks have no cycle),
// and evaluates the label rules and the affinity key for one device. The
// placement engine in package controlplane uses the compiled form.
package policy
