package controlplane

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	"github.com/berthproject/berth/internal/rpcserver"
	"github.com/berthproject/berth/placement"
	"github.com/berthproject/berth/policy"
	"github.com/berthproject/berth/registry"
)

// Input limits of Assign: the policy's input bounds, on which the cost bound
// of its expressions rests.
const (
	maxSpecField     = policy.MaxSpecField
	maxAttributes    = policy.MaxAttributes
	maxAttrKey       = policy.MaxAttrKey
	maxAttrValue     = policy.MaxAttrValue
	maxServices      = policy.MaxRequestedServices
	maxServiceName   = policy.MaxServiceName
	maxTenantOrUser  = policy.MaxIDLen
	maxPreviousField = policy.MaxIDLen
)

// validateAssign checks an AssignRequest and says what is wrong.
func validateAssign(r *controlplanev1.AssignRequest) error {
	if err := registry.CheckID("device_id", r.GetDeviceId()); err != nil {
		return err
	}
	if n := len(r.GetSpec().GetModel()); n > maxSpecField {
		return fmt.Errorf("spec.model is %d bytes; at most %d", n, maxSpecField)
	}
	if n := len(r.GetSpec().GetFirmware()); n > maxSpecField {
		return fmt.Errorf("spec.firmware is %d bytes; at most %d", n, maxSpecField)
	}
	attrs := r.GetSpec().GetAttributes()
	if len(attrs) > maxAttributes {
		return fmt.Errorf("spec.attributes has %d entries; at most %d", len(attrs), maxAttributes)
	}
	for k, v := range attrs {
		if len(k) == 0 || len(k) > maxAttrKey {
			return fmt.Errorf("spec.attributes key of %d bytes: want 1 to %d", len(k), maxAttrKey)
		}
		if len(v) > maxAttrValue {
			return fmt.Errorf("spec.attributes[%q] is %d bytes; at most %d", k, len(v), maxAttrValue)
		}
	}
	if n := len(r.GetTenantId()); n > maxTenantOrUser {
		return fmt.Errorf("tenant_id is %d bytes; at most %d", n, maxTenantOrUser)
	}
	if n := len(r.GetUserId()); n > maxTenantOrUser {
		return fmt.Errorf("user_id is %d bytes; at most %d", n, maxTenantOrUser)
	}
	if n := len(r.GetServices()); n > maxServices {
		return fmt.Errorf("services has %d entries; at most %d", n, maxServices)
	}
	for i, s := range r.GetServices() {
		if s == "" || len(s) > maxServiceName {
			return fmt.Errorf("services[%d] is %d bytes: want 1 to %d", i, len(s), maxServiceName)
		}
	}
	if n := len(r.GetPrevious().GetGroupId()); n > maxPreviousField {
		return fmt.Errorf("previous.group_id is %d bytes; at most %d", n, maxPreviousField)
	}
	if n := len(r.GetPrevious().GetLabel()); n > maxPreviousField {
		return fmt.Errorf("previous.label is %d bytes; at most %d", n, maxPreviousField)
	}
	return nil
}

// toStatus maps the control plane's errors to gRPC statuses; it is the only
// place that does.
func toStatus(err error, retry time.Duration) error {
	switch {
	case errors.Is(err, placement.ErrNoCapacity):
		return rpcserver.WithRetry(codes.ResourceExhausted, strings.TrimPrefix(err.Error(), "placement: ")+"; retry later", retry)
	case errors.Is(err, placement.ErrNoGroup):
		return rpcserver.WithRetry(codes.Unavailable, strings.TrimPrefix(err.Error(), "placement: ")+" (usable: active, with a live executor that is not draining)", retry)
	case errors.Is(err, errRegistryWrite):
		return rpcserver.WithRetry(codes.Unavailable, "registry unavailable: the assignment could not be recorded", retry)
	default:
		return status.Error(codes.Internal, "internal error")
	}
}
