package simulate_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/berthproject/berth/executor"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/simulate"
	"github.com/berthproject/berth/token"
)

// nopRegistrar is an executor.Registrar that keeps nothing.
type nopRegistrar struct{}

func (nopRegistrar) Run(ctx context.Context) error         { <-ctx.Done(); return nil }
func (nopRegistrar) Update(func(*registry.Executor))       {}
func (nopRegistrar) Registered() bool                      { return true }
func (nopRegistrar) SetPresence(registry.Presence)         {}
func (nopRegistrar) ClearPresence(deviceID, sess string)   {}
func (nopRegistrar) OnReplaced(func(registry.Replacement)) {}

// assignTo is a ControlPlaneService that sends every device to one
// executor, with a token for its group.
type assignTo struct {
	controlplanev1.UnimplementedControlPlaneServiceServer
	signer         *token.Signer
	group, address string
}

func (a assignTo) Assign(_ context.Context, req *controlplanev1.AssignRequest) (*controlplanev1.AssignResponse, error) {
	tok, _, err := a.signer.Sign(req.GetDeviceId(), a.group, "default", time.Minute)
	if err != nil {
		return nil, err
	}
	return &controlplanev1.AssignResponse{Destination: &controlplanev1.Destination{
		GroupId: a.group, Label: "default", Token: tok,
		Endpoints: []*controlplanev1.Endpoint{{ExecutorId: "e1", Address: a.address}},
	}}, nil
}

// TestDevicesEchoCallsAndAckMessages runs a small fleet against a real
// executor and a stand-in control plane: a request gets its own payload
// back, a plain message is acked, and the summary counts both.
func TestDevicesEchoCallsAndAckMessages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := token.NewSigner(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := token.NewVerifier(nil, key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}

	// The executor.
	elis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ec := executor.DefaultConfig()
	ec.ID, ec.GroupID, ec.Address = "e1", "g1", elis.Addr().String()
	ec.DrainTimeout = 0
	srv, err := executor.New(ec, verifier, nopRegistrar{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	execCtx, stopExec := context.WithCancel(ctx)
	execDone := make(chan error, 1)
	go func() { execDone <- srv.Run(execCtx, elis) }()
	defer func() {
		stopExec()
		if err := <-execDone; err != nil {
			t.Errorf("executor: %v", err)
		}
	}()

	// The control plane stand-in.
	clis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp := grpc.NewServer()
	controlplanev1.RegisterControlPlaneServiceServer(cp, assignTo{signer: signer, group: "g1", address: ec.Address})
	cpDone := make(chan struct{})
	go func() { defer close(cpDone); _ = cp.Serve(clis) }()
	defer func() { cp.Stop(); <-cpDone }()

	sc := simulate.DefaultConfig()
	sc.ControlPlane = clis.Addr().String()
	sc.Devices = 2
	sc.Every = 10 * time.Millisecond
	w := &testutil.SyncBuffer{}
	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan error, 1)
	go func() { simDone <- simulate.Run(simCtx, sc, w, nil) }()
	defer func() {
		stopSim()
		if err := <-simDone; err != nil {
			t.Errorf("simulate: %v", err)
		}
	}()
	testutil.WaitFor(t, 30*time.Second, "both devices connected", func() bool { return srv.Sessions() == 2 })

	conn, err := grpc.NewClient(ec.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tok, _, err := signer.SignService("cp-test", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	callCtx, cancelCall := context.WithTimeout(ctx, 30*time.Second)
	defer cancelCall()
	callCtx = metadata.AppendToOutgoingContext(callCtx, "authorization", "Bearer "+tok)
	internal := executorv1.NewExecutorInternalServiceClient(conn)
	device := fmt.Sprintf("%s%06d", sc.IDPrefix, 1)

	resp, err := internal.Deliver(callCtx, &executorv1.DeliverRequest{DeviceId: device, Message: &executorv1.Message{
		MessageId: "call-1", Payload: []byte(`{"q":"status"}`), ContentType: "application/json", ExpectsReply: true,
	}})
	if err != nil {
		t.Fatalf("call: %v", err)
	}
	want := &executorv1.Reply{MessageId: "call-1", Payload: []byte(`{"q":"status"}`), ContentType: "application/json"}
	if !proto.Equal(resp.GetReply(), want) {
		t.Errorf("reply = %v; want the echo %v", resp.GetReply(), want)
	}
	if _, err := internal.Deliver(callCtx, &executorv1.DeliverRequest{DeviceId: device, Message: &executorv1.Message{MessageId: "msg-1", Payload: []byte("x")}}); err != nil {
		t.Fatalf("message: %v", err)
	}
	testutil.WaitFor(t, 30*time.Second, "a summary counting the call and the message", func() bool {
		return strings.Contains(w.String(), "messages=1 calls=1 ")
	})
}
