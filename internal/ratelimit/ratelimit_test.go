package ratelimit_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/berthproject/berth/internal/ratelimit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	check = "/grpc.health.v1.Health/Check"
	watch = "/grpc.health.v1.Health/Watch"
)

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// identityMD names the caller by its "caller" metadata.
func identityMD(ctx context.Context, _ any) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("caller"); len(v) > 0 {
		return v[0]
	}
	return ""
}

// serve runs a health server behind l on bufconn and returns its client.
func serve(t *testing.T, l *ratelimit.Limiter) healthpb.HealthClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer(grpc.UnaryInterceptor(l.UnaryServerInterceptor()), grpc.StreamInterceptor(l.StreamServerInterceptor()))
	healthpb.RegisterHealthServer(s, &healthSrv{})
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(lis) }()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); s.Stop(); <-done })
	return healthpb.NewHealthClient(cc)
}

// healthSrv answers Check, and Watch with one answer.
type healthSrv struct {
	healthpb.UnimplementedHealthServer
}

func (healthSrv) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (healthSrv) Watch(_ *healthpb.HealthCheckRequest, s grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	return s.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING})
}

func ctxT(t *testing.T, caller string) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "caller", caller)
}

// Each caller has its own bucket: a burst, then refusals with a retry hint
// in RetryInfo and in the pushback trailer, then a token per 1/rate.
func TestUnaryPerIdentity(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l, err := ratelimit.New(ratelimit.Config{Rules: map[string]ratelimit.Rule{check: {Rate: 2, Burst: 3}}, MaxIdentities: 10}, identityMD, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	c := serve(t, l)
	call := func(caller string) (metadata.MD, error) {
		var tr metadata.MD
		_, err := c.Check(ctxT(t, caller), &healthpb.HealthCheckRequest{}, grpc.Trailer(&tr))
		return tr, err
	}
	for i := range 3 {
		if _, err := call("a"); err != nil {
			t.Fatalf("call %d of a's burst: %v", i, err)
		}
	}
	tr, err := call("a")
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "rate limit: at most 2 calls a second (bursts of 3)") {
		t.Fatalf("call past the burst = %v; want RESOURCE_EXHAUSTED naming the limit", err)
	}
	var retry time.Duration
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			retry = ri.GetRetryDelay().AsDuration()
		}
	}
	if retry != 500*time.Millisecond {
		t.Errorf("RetryInfo %v; want 500ms", retry)
	}
	if got := tr.Get(ratelimit.PushbackTrailer); len(got) != 1 || got[0] != "500" {
		t.Errorf("trailer %s = %v; want [500]", ratelimit.PushbackTrailer, got)
	}
	// Another caller is not concerned.
	if _, err := call("b"); err != nil {
		t.Errorf("b's first call: %v", err)
	}
	// Half a second later a has one token again.
	clk.add(500 * time.Millisecond)
	if _, err := call("a"); err != nil {
		t.Errorf("a after 500ms: %v", err)
	}
	if _, err := call("a"); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a again at once: %v; want RESOURCE_EXHAUSTED", err)
	}
	if got := l.Refused()[check]; got != 2 {
		t.Errorf("Refused()[Check] = %d; want 2", got)
	}
}

// Streams are limited when they open; methods without a rule, and rules
// of rate 0, are not limited.
func TestStreamsAndUnlimited(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l, err := ratelimit.New(ratelimit.Config{Rules: map[string]ratelimit.Rule{watch: {Rate: 1, Burst: 1}, "/x/Off": {}}, MaxIdentities: 10}, identityMD, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	c := serve(t, l)
	open := func() error {
		s, err := c.Watch(ctxT(t, "a"), &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	}
	if err := open(); err != nil {
		t.Fatalf("first Watch: %v", err)
	}
	err = open()
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("second Watch at once: %v; want RESOURCE_EXHAUSTED", err)
	}
	for i := range 10 {
		if _, err := c.Check(ctxT(t, "a"), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("unlimited Check %d: %v", i, err)
		}
	}
}

// The buckets are bounded: the least recently used goes first.
func TestBounded(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l, err := ratelimit.New(ratelimit.Config{Rules: map[string]ratelimit.Rule{check: {Rate: 1, Burst: 1}}, MaxIdentities: 2}, identityMD, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	c := serve(t, l)
	call := func(caller string) error {
		_, err := c.Check(ctxT(t, caller), &healthpb.HealthCheckRequest{})
		return err
	}
	for _, caller := range []string{"a", "b", "c", "d"} {
		if err := call(caller); err != nil {
			t.Fatalf("%s: %v", caller, err)
		}
	}
	if got := l.Tracked(); got != 2 {
		t.Errorf("Tracked() = %d; want 2", got)
	}
	if err := call("d"); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("d again: %v; want refused (still tracked)", err)
	}
	if err := call("a"); err != nil {
		t.Errorf("a again, forgotten: %v; want a fresh bucket", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  ratelimit.Config
		want string // "" for valid
	}{
		{name: "valid", cfg: ratelimit.Config{Rules: map[string]ratelimit.Rule{check: {Rate: 1, Burst: 1}, watch: {}}, MaxIdentities: 1}},
		{name: "negative rate", cfg: ratelimit.Config{Rules: map[string]ratelimit.Rule{check: {Rate: -1}}, MaxIdentities: 1}, want: "rate -1, burst 0"},
		{name: "no burst", cfg: ratelimit.Config{Rules: map[string]ratelimit.Rule{check: {Rate: 1}}, MaxIdentities: 1}, want: "rate 1, burst 0"},
		{name: "no identities", cfg: ratelimit.Config{}, want: "max identities 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			got := ""
			if err != nil {
				got = err.Error()
			}
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("Validate() = %q; want %q", got, tt.want)
			}
		})
	}
}
