package node

import (
	"context"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc/peer"

	"github.com/berthproject/berth/access"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/ratelimit"
)

// RateLimits are a replica's limits per caller (see CallerIdentity): a
// token bucket per caller and method. A zero Rule leaves its method
// unlimited; the zero RateLimits limits nothing.
type RateLimits struct {
	// Assign, Send, Call and Subscribe are the limits of those RPCs
	// (Subscribe: streams opened).
	Assign, Send, Call, Subscribe ratelimit.Rule
	// MaxCallers bounds the buckets kept over all four (the least recently
	// used caller is forgotten first and starts again with a full bucket).
	MaxCallers int
}

// DefaultRateLimits are the limits of `berth controlplane`: a device may
// Assign once a second with bursts of 10 (its SDK backs off far slower);
// a caller may Send 1,000 times a second (bursts of 2,000), Call 200 times
// (bursts of 400) and open a subscription once a second (bursts of 10);
// 100,000 callers are tracked (about 20 MB).
func DefaultRateLimits() RateLimits {
	return RateLimits{
		Assign:     ratelimit.Rule{Rate: 1, Burst: 10},
		Send:       ratelimit.Rule{Rate: 1000, Burst: 2000},
		Call:       ratelimit.Rule{Rate: 200, Burst: 400},
		Subscribe:  ratelimit.Rule{Rate: 1, Burst: 10},
		MaxCallers: 100_000,
	}
}

// config is l as a ratelimit.Config.
func (l RateLimits) config() ratelimit.Config {
	return ratelimit.Config{
		Rules: map[string]ratelimit.Rule{
			controlplanev1.ControlPlaneService_Assign_FullMethodName: l.Assign,
			messagingv1.MessagingService_Send_FullMethodName:         l.Send,
			messagingv1.MessagingService_Call_FullMethodName:         l.Call,
			messagingv1.MessagingService_Subscribe_FullMethodName:    l.Subscribe,
		},
		MaxIdentities: max(l.MaxCallers, 1),
		// Assign counts against the authenticated device: the control
		// plane checks it once it knows who calls.
		InHandler: []string{controlplanev1.ControlPlaneService_Assign_FullMethodName},
	}
}

// Validate checks l.
func (l RateLimits) Validate() error {
	if l.MaxCallers < 0 {
		return errors.New("node: rate limits: max callers must be >= 0")
	}
	if err := l.config().Validate(); err != nil {
		return fmt.Errorf("node: rate limits: %w", err)
	}
	return nil
}

// CallerIdentity is who a rate limit counts a call against; it is the one
// place that says so for the interceptors. A call of an authenticated
// service or operator (access.Guard runs before the limits) counts against
// its credential; anything else against the peer's address (its host:
// behind a proxy or NAT, all its callers share a bucket). Assign is not
// limited here: the control plane counts it against the device id it
// authenticated (controlplane.WithLimiter), so a caller naming another
// device cannot spend that device's allowance.
func CallerIdentity(ctx context.Context, req any) string {
	// Services and operators authenticated (access.Guard runs first):
	// their credential is the caller, wherever it calls from.
	if id := access.FromContext(ctx); id != nil {
		return "caller:" + id.Name
	}
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	addr := p.Addr.String()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	return "peer:" + addr
}
