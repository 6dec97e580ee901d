package controlplane_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/berthproject/berth/controlplane"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	"github.com/berthproject/berth/internal/rpcserver"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// fakeCache is a Snapshotter over a fixed snapshot.
type fakeCache struct {
	mu      sync.Mutex
	snap    *registry.Snapshot
	records map[string]registry.Assignment
	history map[string]registry.History
}

var _ controlplane.Snapshotter = (*fakeCache)(nil)

func (f *fakeCache) Snapshot() *registry.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap
}

func (f *fakeCache) Assignment(id string) (registry.Assignment, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.records[id]
	return a, ok
}

func (f *fakeCache) History(id string) (registry.History, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, ok := f.history[id]
	return h, ok
}

func (f *fakeCache) OnAssignment(func(registry.Assignment)) {}

// fakeStore records writes into the fake cache, as the watch would; block,
// when set, holds every write until it is closed.
type fakeStore struct {
	cache    *fakeCache
	writes   int
	attempts int // PutAssignment calls, failed ones too
	block    chan struct{}
	entered  chan struct{} // receives when a write starts, if set
	fail     error
}

var _ controlplane.AssignmentStore = (*fakeStore)(nil)

func (s *fakeStore) PutPolicy(context.Context, registry.StoredPolicy, int64) (int64, error) {
	return 0, errors.New("fake store keeps no policy")
}

func (s *fakeStore) PutAssignment(ctx context.Context, a registry.Assignment) error {
	s.attempts++
	if s.entered != nil {
		s.entered <- struct{}{}
	}
	if s.block != nil {
		select {
		case <-s.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.fail != nil {
		return s.fail
	}
	s.cache.mu.Lock()
	defer s.cache.mu.Unlock()
	s.writes++
	s.cache.records[a.DeviceID] = a
	return nil
}

type fixture struct {
	srv      *controlplane.Server
	client   controlplanev1.ControlPlaneServiceClient
	cache    *fakeCache
	store    *fakeStore
	verifier *token.Verifier
}

func start(t testing.TB, cfg controlplane.Config, groups []registry.Group, execs []registry.Executor) *fixture {
	t.Helper()
	priv, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := token.NewSigner(priv, nil)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := token.NewVerifier(nil, priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	cache := &fakeCache{snap: registry.NewSnapshot(1, groups, execs), records: map[string]registry.Assignment{}}
	store := &fakeStore{cache: cache}
	srv, err := controlplane.New(cfg, cache, store, signer, nil)
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	srv.Register(gs)
	done := make(chan error, 1)
	go func() { done <- gs.Serve(lis) }()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		gs.Stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &fixture{srv: srv, client: controlplanev1.NewControlPlaneServiceClient(cc), cache: cache, store: store, verifier: verifier}
}

func twoGroups() ([]registry.Group, []registry.Executor) {
	return []registry.Group{
			{ID: "g1", Capacity: 100, State: registry.GroupActive, Labels: []string{"default"}},
			{ID: "g2", Capacity: 100, State: registry.GroupActive, Labels: []string{"default"}},
		}, []registry.Executor{
			{ID: "g1-a", GroupID: "g1", Address: "10.0.0.1:1", Capacity: 50, Connections: 30},
			{ID: "g1-b", GroupID: "g1", Address: "10.0.0.2:1", Capacity: 50, Connections: 10},
			{ID: "g2-a", GroupID: "g2", Address: "10.0.0.3:1", Capacity: 100, Connections: 60},
		}
}

func TestAssign(t *testing.T) {
	groups, execs := twoGroups()
	f := start(t, controlplane.DefaultConfig(), groups, execs)
	ctx := context.Background()
	resp, err := f.client.Assign(ctx, &controlplanev1.AssignRequest{DeviceId: "dev-1", Spec: &controlplanev1.DeviceSpec{Model: "m"}})
	if err != nil {
		t.Fatal(err)
	}
	d := resp.GetDestination()
	if d.GetGroupId() != "g1" {
		t.Errorf("group = %s, want g1 (40%% used against 60%%)", d.GetGroupId())
	}
	var got []string
	for _, e := range d.GetEndpoints() {
		got = append(got, e.GetExecutorId()+"@"+e.GetAddress())
	}
	if want := "g1-b@10.0.0.2:1,g1-a@10.0.0.1:1"; strings.Join(got, ",") != want {
		t.Errorf("endpoints = %v, want %s (least utilized first)", got, want)
	}
	c, err := f.verifier.Verify(d.GetToken())
	if err != nil {
		t.Fatalf("token does not verify: %v", err)
	}
	if c.DeviceID != "dev-1" || c.GroupID != "g1" {
		t.Errorf("token claims %s/%s, want dev-1/g1", c.DeviceID, c.GroupID)
	}
	if exp := d.GetTokenExpiresAt().AsTime(); !exp.Equal(c.ExpiresAt) || time.Until(exp) < 14*time.Minute {
		t.Errorf("token expiry %v (claims %v), want about 15 minutes ahead", exp, c.ExpiresAt)
	}
	if resp.GetReconnect().GetBaseDelay().AsDuration() != time.Second || resp.GetReason() == "" {
		t.Errorf("reconnect hints %v, reason %q: want gRPC defaults and a reason", resp.GetReconnect(), resp.GetReason())
	}
	if f.store.writes != 1 {
		t.Errorf("writes after first Assign = %d, want 1", f.store.writes)
	}
	// The same decision for the same inputs writes nothing.
	if _, err := f.client.Assign(ctx, &controlplanev1.AssignRequest{DeviceId: "dev-1", Spec: &controlplanev1.DeviceSpec{Model: "m"}}); err != nil {
		t.Fatal(err)
	}
	if f.store.writes != 1 {
		t.Errorf("writes after an unchanged Assign = %d, want 1", f.store.writes)
	}
	// New inputs (a firmware upgrade) are recorded, so dry runs see them.
	if _, err := f.client.Assign(ctx, &controlplanev1.AssignRequest{DeviceId: "dev-1", Spec: &controlplanev1.DeviceSpec{Model: "m", Firmware: "2"}}); err != nil {
		t.Fatal(err)
	}
	if f.store.writes != 2 || f.cache.records["dev-1"].Inputs.Firmware != "2" {
		t.Errorf("writes after new inputs = %d (firmware %q), want 2 and firmware 2", f.store.writes, f.cache.records["dev-1"].Inputs.Firmware)
	}
}

func TestAssignRefusals(t *testing.T) {
	groups, execs := twoGroups()
	long := strings.Repeat("x", 129)
	tests := []struct {
		name     string
		groups   []registry.Group
		execs    []registry.Executor
		req      *controlplanev1.AssignRequest
		wantCode codes.Code
		wantMsg  string
	}{
		{"no device id", groups, execs, &controlplanev1.AssignRequest{}, codes.InvalidArgument, "device_id is required"},
		{"long device id", groups, execs, &controlplanev1.AssignRequest{DeviceId: long}, codes.InvalidArgument, "device_id is 129 bytes"},
		{"slash in device id", groups, execs, &controlplanev1.AssignRequest{DeviceId: "a/b"}, codes.InvalidArgument, "device_id"},
		{"long model", groups, execs, &controlplanev1.AssignRequest{DeviceId: "d", Spec: &controlplanev1.DeviceSpec{Model: long}}, codes.InvalidArgument, "spec.model"},
		{"big attribute", groups, execs, &controlplanev1.AssignRequest{DeviceId: "d", Spec: &controlplanev1.DeviceSpec{Attributes: map[string]string{"k": strings.Repeat("v", 1025)}}}, codes.InvalidArgument, "spec.attributes"},
		{"empty service", groups, execs, &controlplanev1.AssignRequest{DeviceId: "d", Services: []string{""}}, codes.InvalidArgument, "services[0]"},
		{"long tenant", groups, execs, &controlplanev1.AssignRequest{DeviceId: "d", TenantId: long}, codes.InvalidArgument, "tenant_id"},
		{"no groups", nil, nil, &controlplanev1.AssignRequest{DeviceId: "d"}, codes.Unavailable, "no usable group for label default"},
		{"all full", groups[:1], []registry.Executor{{ID: "x", GroupID: "g1", Address: "a:1", Capacity: 10, Connections: 10}},
			&controlplanev1.AssignRequest{DeviceId: "d"}, codes.ResourceExhausted, "full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := start(t, controlplane.DefaultConfig(), tt.groups, tt.execs)
			_, err := f.client.Assign(context.Background(), tt.req)
			st := status.Convert(err)
			if st.Code() != tt.wantCode || !strings.Contains(st.Message(), tt.wantMsg) {
				t.Fatalf("Assign = %v %q, want %v containing %q", st.Code(), st.Message(), tt.wantCode, tt.wantMsg)
			}
			if f.store.writes != 0 {
				t.Errorf("a refused Assign wrote %d records", f.store.writes)
			}
		})
	}
}

func TestAssignRegistryDown(t *testing.T) {
	groups, execs := twoGroups()
	f := start(t, controlplane.DefaultConfig(), groups, execs)
	f.store.fail = errors.New("etcdserver: request timed out")
	_, err := f.client.Assign(context.Background(), &controlplanev1.AssignRequest{DeviceId: "d"})
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || strings.Contains(st.Message(), "etcdserver") {
		t.Fatalf("Assign = %v %q, want UNAVAILABLE without the raw etcd error", st.Code(), st.Message())
	}
}

func TestAssignSheds(t *testing.T) {
	groups, execs := twoGroups()
	cfg := controlplane.DefaultConfig()
	cfg.MaxInFlight = 1
	cfg.RetryAfter = 3 * time.Second
	f := start(t, cfg, groups, execs)
	f.store.block = make(chan struct{})
	f.store.entered = make(chan struct{}, 1)
	first := make(chan error, 1)
	go func() {
		_, err := f.client.Assign(context.Background(), &controlplanev1.AssignRequest{DeviceId: "slow"})
		first <- err
	}()
	select {
	case <-f.store.entered: // the first Assign holds the only slot
	case <-time.After(10 * time.Second):
		t.Fatal("first Assign never reached the store")
	}
	_, err := f.client.Assign(context.Background(), &controlplanev1.AssignRequest{DeviceId: "other"})
	st := status.Convert(err)
	close(f.store.block)
	if err := <-first; err != nil {
		t.Fatalf("first Assign: %v", err)
	}
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("second Assign = %v, want RESOURCE_EXHAUSTED", st.Code())
	}
	var retry time.Duration
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			retry = ri.GetRetryDelay().AsDuration()
		}
	}
	if retry != 3*time.Second {
		t.Errorf("retry hint = %v, want 3s", retry)
	}
}

// TestAssignReusesTokens: an unchanged decision gets the same token back
// without a new signature; a changed one gets a fresh token.
func TestAssignReusesTokens(t *testing.T) {
	groups, execs := twoGroups()
	f := start(t, controlplane.DefaultConfig(), groups, execs)
	ctx := context.Background()
	req := &controlplanev1.AssignRequest{DeviceId: "dev-1"}
	first, err := f.client.Assign(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.client.Assign(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if again.GetDestination().GetToken() != first.GetDestination().GetToken() {
		t.Error("an unchanged decision got a new token")
	}
	// Move the device: make its group the fuller one.
	g := first.GetDestination().GetGroupId()
	moved := make([]registry.Executor, len(execs))
	copy(moved, execs)
	for i := range moved {
		if moved[i].GroupID == g {
			moved[i].Connections = moved[i].Capacity - 1
		}
	}
	f.cache.mu.Lock()
	f.cache.snap = registry.NewSnapshot(2, groups, moved)
	f.cache.mu.Unlock()
	third, err := f.client.Assign(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if third.GetDestination().GetGroupId() == g || third.GetDestination().GetToken() == first.GetDestination().GetToken() {
		t.Errorf("after the move: group %s (was %s), token reused = %v; want another group and a new token",
			third.GetDestination().GetGroupId(), g, third.GetDestination().GetToken() == first.GetDestination().GetToken())
	}
	c, err := f.verifier.Verify(third.GetDestination().GetToken())
	if err != nil || c.GroupID != third.GetDestination().GetGroupId() {
		t.Errorf("new token claims %+v, %v; want group %s", c, err, third.GetDestination().GetGroupId())
	}
}

// TestAssignAdmissionSheds: above AdmitRate (past its burst) Assign answers
// RESOURCE_EXHAUSTED with a retry hint in RetryInfo and in the
// grpc-retry-pushback-ms trailer, agreeing, and at least RetryAfter.
func TestAssignAdmissionSheds(t *testing.T) {
	groups, execs := twoGroups()
	cfg := controlplane.DefaultConfig()
	cfg.AdmitRate, cfg.AdmitBurst = 0.001, 2 // no token comes back during the test
	f := start(t, cfg, groups, execs)
	ctx := context.Background()
	for i := range 2 {
		if _, err := f.client.Assign(ctx, &controlplanev1.AssignRequest{DeviceId: fmt.Sprint("dev-", i), Spec: &controlplanev1.DeviceSpec{Model: "m"}}); err != nil {
			t.Fatalf("Assign %d within the burst: %v", i, err)
		}
	}
	var trailer metadata.MD
	_, err := f.client.Assign(ctx, &controlplanev1.AssignRequest{DeviceId: "dev-2", Spec: &controlplanev1.DeviceSpec{Model: "m"}}, grpc.Trailer(&trailer))
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("Assign past the burst: %v, want RESOURCE_EXHAUSTED", err)
	}
	var hint time.Duration
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			hint = ri.GetRetryDelay().AsDuration()
		}
	}
	if hint < cfg.RetryAfter {
		t.Errorf("RetryInfo hint %v, want at least %v (%v)", hint, cfg.RetryAfter, st.Details())
	}
	if got := trailer.Get(rpcserver.PushbackTrailer); len(got) != 1 || got[0] != strconv.FormatInt(hint.Milliseconds(), 10) {
		t.Errorf("pushback trailer %v, want [%d]", got, hint.Milliseconds())
	}
	if !strings.Contains(st.Message(), "at most 0.001 Assigns a second") {
		t.Errorf("message %q does not name the rate", st.Message())
	}
}

// TestAssignWhileRegistryWritesFail: once a record write failed, Assigns
// that need one are answered at once (not after WriteTimeout each): a known
// device whose recorded group is usable goes back there, which needs no
// write; a new device gets UNAVAILABLE with a retry hint. One probe a
// RetryAfter finds the registry back.
func TestAssignWhileRegistryWritesFail(t *testing.T) {
	groups, execs := twoGroups()
	execs[2].Connections = 90 // g2 at 90%: balance now picks g1
	cfg := controlplane.DefaultConfig()
	cfg.RetryAfter = time.Hour // no probe during the test but the one made below
	f := start(t, cfg, groups, execs)
	f.cache.records["known"] = registry.Assignment{DeviceID: "known", GroupID: "g2", Label: "default"}
	f.store.fail = errors.New("etcdserver: request timed out")
	ctx := context.Background()
	assign := func(id string) (*controlplanev1.AssignResponse, error) {
		return f.client.Assign(ctx, &controlplanev1.AssignRequest{DeviceId: id, Spec: &controlplanev1.DeviceSpec{Model: "m"}})
	}
	if _, err := assign("new-1"); status.Code(err) != codes.Unavailable {
		t.Fatalf("new device, write failing: %v, want UNAVAILABLE", err)
	}
	if f.store.attempts != 1 {
		t.Fatalf("%d write attempts, want 1", f.store.attempts)
	}
	resp, err := assign("known")
	if err != nil {
		t.Fatalf("known device while writes fail: %v", err)
	}
	if g := resp.GetDestination().GetGroupId(); g != "g2" || !strings.Contains(resp.GetReason(), "kept in recorded group g2") {
		t.Errorf("known device sent to %s (%q), want its recorded g2", g, resp.GetReason())
	}
	claims, err := f.verifier.Verify(resp.GetDestination().GetToken())
	if err != nil || claims.GroupID != "g2" {
		t.Errorf("token for %+v (%v), want group g2", claims, err)
	}
	st := status.Convert(func() error { _, err := assign("new-2"); return err }())
	if st.Code() != codes.Unavailable || len(st.Details()) == 0 {
		t.Errorf("second new device: %v, want UNAVAILABLE with a retry hint", st)
	}
	if f.store.attempts != 1 {
		t.Errorf("%d write attempts, want still 1: writes are not tried while they fail", f.store.attempts)
	}
}
