package ratelimit

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/berthproject/berth/internal/rpcserver"
)

// Rule is one method's limit per identity: Rate calls a second on average,
// with bursts of up to Burst. A Rate of 0 turns the limit off.
type Rule struct {
	Rate  float64
	Burst int
}

// Config says which methods are limited and how many buckets are kept.
type Config struct {
	// Rules are the limits by full method name
	// ("/berth.messaging.v1.MessagingService/Send"); other methods are not
	// limited.
	Rules map[string]Rule
	// MaxIdentities bounds the buckets kept, over all methods; the least
	// recently used one goes first (its identity starts again with a full
	// bucket).
	MaxIdentities int
	// InHandler are methods the interceptors leave alone: their handlers
	// call Check once they know who calls (Assign, after authentication).
	InHandler []string
}

// Validate checks c.
func (c Config) Validate() error {
	var errs []error
	for m, r := range c.Rules {
		if r.Rate < 0 || (r.Rate > 0 && r.Burst < 1) {
			errs = append(errs, fmt.Errorf("%s: rate %g, burst %d: want rate 0 (off), or rate > 0 and burst >= 1", m, r.Rate, r.Burst))
		}
	}
	if c.MaxIdentities < 1 {
		errs = append(errs, fmt.Errorf("max identities %d: want >= 1", c.MaxIdentities))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ratelimit: invalid config: %w", err)
	}
	return nil
}

// IdentityFunc names the caller a call counts against; req is the request
// of a unary call and nil for a stream. An empty name counts against a
// shared bucket "".
type IdentityFunc func(ctx context.Context, req any) string

// PushbackTrailer is the trailer that tells gRPC clients (and their retry
// policies) how long to wait, in milliseconds (rpcserver's).
const PushbackTrailer = rpcserver.PushbackTrailer

// Limiter holds the buckets. It is safe for concurrent use.
type Limiter struct {
	cfg      Config
	identity IdentityFunc
	now      func() time.Time

	mu      sync.Mutex
	lru     *list.List // of *bucket, most recently used first
	buckets map[key]*list.Element
	refused map[string]uint64 // by method
}

type key struct{ method, id string }

type bucket struct {
	key key
	lim *rate.Limiter
}

// New returns a Limiter for cfg. now is the clock (nil: time.Now).
func New(cfg Config, identity IdentityFunc, now func() time.Time) (*Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if identity == nil {
		return nil, errors.New("ratelimit: an identity function is required")
	}
	if now == nil {
		now = time.Now
	}
	rules := make(map[string]Rule, len(cfg.Rules))
	for m, r := range cfg.Rules {
		if r.Rate > 0 {
			rules[m] = r
		}
	}
	cfg.Rules = rules
	return &Limiter{cfg: cfg, identity: identity, now: now, lru: list.New(), buckets: map[key]*list.Element{}, refused: map[string]uint64{}}, nil
}

// Enabled reports whether any method is limited.
func (l *Limiter) Enabled() bool { return len(l.cfg.Rules) > 0 }

// allow takes a token from the bucket of (method, id), or returns how long
// until one is there.
func (l *Limiter) allow(method, id string) (Rule, time.Duration, bool) {
	r, ok := l.cfg.Rules[method]
	if !ok {
		return r, 0, true
	}
	now := l.now()
	k := key{method, id}
	l.mu.Lock()
	defer l.mu.Unlock()
	var b *bucket
	if e, ok := l.buckets[k]; ok {
		l.lru.MoveToFront(e)
		b = e.Value.(*bucket)
	} else {
		if l.lru.Len() >= l.cfg.MaxIdentities {
			old := l.lru.Back()
			l.lru.Remove(old)
			delete(l.buckets, old.Value.(*bucket).key)
		}
		b = &bucket{key: k, lim: rate.NewLimiter(rate.Limit(r.Rate), r.Burst)}
		l.buckets[k] = l.lru.PushFront(b)
	}
	if b.lim.AllowN(now, 1) {
		return r, 0, true
	}
	res := b.lim.ReserveN(now, 1)
	wait := res.DelayFrom(now)
	res.CancelAt(now)
	l.refused[method]++
	return r, wait, false
}

// Refused returns the calls refused so far, by method.
func (l *Limiter) Refused() map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.refused)
}

// Tracked returns how many buckets are kept now.
func (l *Limiter) Tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}

// refusal is the status of a refused call; the wait is rounded up to a
// millisecond.
func refusal(method string, r Rule, wait time.Duration) (metadata.MD, error) {
	wait = max(wait.Round(time.Millisecond), time.Millisecond)
	msg := fmt.Sprintf("rate limit: at most %g calls a second (bursts of %d) to %s per caller; retry in %v", r.Rate, r.Burst, method, wait)
	return rpcserver.Pushback(wait), rpcserver.WithRetry(codes.ResourceExhausted, msg, wait)
}

// Check takes a token for (method, id) and returns nil, or the refusal
// (RESOURCE_EXHAUSTED with RetryInfo), after setting the pushback trailer
// on ctx's call. It is for handlers that limit a call after they
// authenticated its caller (Config.InHandler); a method without a rule is
// never refused.
func (l *Limiter) Check(ctx context.Context, method, id string) error {
	r, wait, ok := l.allow(method, id)
	if ok {
		return nil
	}
	tr, err := refusal(method, r, wait)
	_ = grpc.SetTrailer(ctx, tr)
	return err
}

// inInterceptor reports whether the interceptors limit method.
func (l *Limiter) inInterceptor(method string) bool {
	_, ok := l.cfg.Rules[method]
	return ok && !slices.Contains(l.cfg.InHandler, method)
}

// UnaryServerInterceptor refuses unary calls over their method's limit.
func (l *Limiter) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !l.inInterceptor(info.FullMethod) {
			return handler(ctx, req)
		}
		r, wait, ok := l.allow(info.FullMethod, l.identity(ctx, req))
		if !ok {
			tr, err := refusal(info.FullMethod, r, wait)
			_ = grpc.SetTrailer(ctx, tr)
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor refuses streams over their method's limit, when
// they open.
func (l *Limiter) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !l.inInterceptor(info.FullMethod) {
			return handler(srv, ss)
		}
		r, wait, ok := l.allow(info.FullMethod, l.identity(ss.Context(), nil))
		if !ok {
			tr, err := refusal(info.FullMethod, r, wait)
			ss.SetTrailer(tr)
			return err
		}
		return handler(srv, ss)
	}
}
