package bench

import (
	"context"
	"crypto/tls"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
)

// probeDevice is the device id waitPolicy asks for.
const probeDevice = "bench-probe"

// mtlsDevices names the devices of a TLS run's n connections.
func mtlsDevices(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("bench-dev-%06d", i)
	}
	return ids
}

// deviceCreds returns a client TLS configuration per id, presenting a
// certificate of pk's device CA for that device; nil without pk
// (plaintext).
func deviceCreds(pk *benchTLS, ids []string) ([]*tls.Config, error) {
	if pk == nil {
		return nil, nil
	}
	out := make([]*tls.Config, len(ids))
	for i, id := range ids {
		cert, _, err := pk.device(id)
		if err != nil {
			return nil, err
		}
		out[i] = pk.client(cert)
	}
	return out, nil
}

// runMTLS is the TLS run's measurement: each connection's device (its
// certificate's) is assigned once, unmeasured, then noop and assign-mtls
// take turns round by round. Worker w calls on connection w%Conns and asks
// for that connection's device, so every Assign is authenticated by the
// certificate the connection presented and checked against the device id
// it asks for.
func (r *AssignReport) runMTLS(ctx context.Context, cl *clients, cp *controlPlaneUnderTest, noop func(ctx context.Context, w int) error) error {
	ids := mtlsDevices(len(cl.conns))
	known := make([]*controlplanev1.AssignRequest, len(ids))
	byRule := map[string]int{}
	for i, id := range ids {
		resp, err := controlplanev1.NewControlPlaneServiceClient(cl.conns[i]).Assign(ctx, deviceRequest(id, i, nil))
		if err != nil {
			return fmt.Errorf("bench: assigning known device %s over its certificate's connection: %w", id, err)
		}
		d := resp.GetDestination()
		known[i] = deviceRequest(id, i, &controlplanev1.PreviousAssignment{GroupId: d.GetGroupId(), Label: d.GetLabel()})
		byRule[ruleOf(resp.GetReason())]++
	}
	r.KnownByRule = byRule
	// The control plane must refuse a device id the connection's
	// certificate does not name, or the case would not measure identity.
	_, err := cl.assigns[0].Assign(ctx, probeRequest(probeDevice))
	if c := status.Code(err); c != codes.Unauthenticated && c != codes.PermissionDenied {
		return fmt.Errorf("bench: Assign of %s over %s's certificate answered %v, want UNAUTHENTICATED or PERMISSION_DENIED: device identity is not checked", probeDevice, ids[0], err)
	}
	if err := waitAssignments(ctx, cp, len(ids)); err != nil {
		return err
	}
	assignMTLS := func(ctx context.Context, w int) error {
		_, err := cl.assigns[w%len(cl.assigns)].Assign(ctx, known[w%len(known)])
		return err
	}
	return r.rounds(ctx, r.Config.Rounds, []closedCase{
		{name: CaseNoop, op: noop, cpu: cpuOf(cp)},
		{name: CaseAssignMTLS, op: assignMTLS, cp: cp, cpu: cpuOf(cp)},
	})
}
