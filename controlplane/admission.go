package controlplane

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/berthproject/berth/internal/rpcserver"
)

// maxAdmitHint bounds the retry hint of a shed Assign.
const maxAdmitHint = time.Minute

// admission sheds Assigns above a rate per replica (Config.AdmitRate), for
// reconnect storms: every executor restarting at once sends its whole fleet
// to Assign. Each refusal gets the next free slot of a virtual queue
// drained at the admitted rate as its retry hint (after Config.RetryAfter,
// with a jitter of one slot), so that refused devices come back spread out
// at about the rate admitted rather than all together. Devices whose token
// is still valid reconnect without Assign and are not affected.
type admission struct {
	lim  *rate.Limiter
	slot time.Duration // 1/rate
	base time.Duration
	now  func() time.Time

	mu sync.Mutex
	// next is the next free slot of the virtual queue.
	next time.Time
	rnd  *rand.Rand
}

// newAdmission returns nil when r is 0 (no bound).
func newAdmission(r float64, burst int, base time.Duration, now func() time.Time) *admission {
	if r <= 0 {
		return nil
	}
	return &admission{lim: rate.NewLimiter(rate.Limit(r), max(burst, 1)), slot: time.Duration(float64(time.Second) / r),
		base: base, now: now, rnd: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
}

// admit takes a token, or returns the retry hint of a refusal.
func (a *admission) admit() (time.Duration, bool) {
	now := a.now()
	if a.lim.AllowN(now, 1) {
		return 0, true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.next.Before(now) {
		a.next = now
	}
	wait := a.next.Sub(now) + time.Duration(a.rnd.Int64N(int64(a.slot)+1))
	if wait < maxAdmitHint {
		a.next = a.next.Add(a.slot)
	}
	return min(a.base+wait, maxAdmitHint), false
}

// shed answers an Assign the replica will not take now: RESOURCE_EXHAUSTED
// with the retry hint in a RetryInfo detail and the pushback trailer.
func shed(ctx context.Context, msg string, hint time.Duration) error {
	_ = grpc.SetTrailer(ctx, rpcserver.Pushback(hint))
	return rpcserver.WithRetry(codes.ResourceExhausted, msg, hint)
}
