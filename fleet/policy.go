package fleet

import (
	"encoding/json"
	"fmt"
	"time"
)

// StoredPolicy is the placement policy document as the registry stores it.
// Neither this package nor the registry interprets the document; package
// policy does.
type StoredPolicy struct {
	// Document is the policy as protojson (berth.policy.v1.Policy).
	Document json.RawMessage `json:"document"`
	// AppliedAt is when it was stored.
	AppliedAt time.Time `json:"applied_at"`
	// AppliedBy says who stored it (user, host), free text.
	AppliedBy string `json:"applied_by,omitempty"`
	// Version is the etcd revision that stored it; set by reads, never
	// stored. Applying a policy is a compare-and-swap on it.
	Version int64 `json:"-"`
}

// Tenant is what operators store about a tenant: attributes the placement
// policy may read, and the services it is entitled to.
type Tenant struct {
	// ID names the tenant.
	ID string `json:"id"`
	// Attributes are free-form (tier, region, contract...).
	Attributes map[string]string `json:"attributes,omitempty"`
	// Services the tenant is entitled to.
	Services []string `json:"services,omitempty"`
}

// Validate checks t before it is written.
func (t Tenant) Validate() error {
	if !ValidID(t.ID) {
		return fmt.Errorf("%w: tenant id %q", ErrInvalid, t.ID)
	}
	if len(t.Attributes) > 64 {
		return fmt.Errorf("%w: tenant %s: %d attributes; at most 64", ErrInvalid, t.ID, len(t.Attributes))
	}
	for k, v := range t.Attributes {
		if k == "" || len(k) > 128 || len(v) > 1024 {
			return fmt.Errorf("%w: tenant %s: attribute %q: keys 1-128 bytes, values at most 1024", ErrInvalid, t.ID, k)
		}
	}
	if len(t.Services) > 256 {
		return fmt.Errorf("%w: tenant %s: %d services; at most 256", ErrInvalid, t.ID, len(t.Services))
	}
	for _, s := range t.Services {
		if s == "" || len(s) > 64 {
			return fmt.Errorf("%w: tenant %s: service %q: want 1-64 bytes", ErrInvalid, t.ID, s)
		}
	}
	return nil
}
