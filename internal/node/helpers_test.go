package node_test

import (
	"context"
	"crypto/ed25519"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/berthproject/berth/access"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/node"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// keys are a signing key and its verifier.
type keys struct {
	signer   *token.Signer
	verifier *token.Verifier
}

func newKeys(t *testing.T) keys {
	t.Helper()
	priv, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := token.NewSigner(priv, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := token.NewVerifier(nil, priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return keys{s, v}
}

// newRegistry starts an embedded etcd with one active group g1.
func newRegistry(t *testing.T) *registry.Registry {
	t.Helper()
	reg := registry.New(testutil.EtcdClient(t, testutil.StartEtcd(t)), "/node-test")
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()
	if err := reg.PutGroup(ctx, registry.Group{ID: "g1", Labels: []string{"default"}, Capacity: 100, State: registry.GroupActive}); err != nil {
		t.Fatal(err)
	}
	return reg
}

// listen opens a loopback listener.
func listen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// executorConfig is an executor of g1 at addr that writes its record
// quickly and drains briefly.
func executorConfig(addr string, recordUsage bool) node.ExecutorConfig {
	c := node.DefaultExecutorConfig()
	c.RecordUsage = recordUsage
	c.Executor.ID, c.Executor.GroupID, c.Executor.Address, c.Executor.Capacity = "e1", "g1", addr, 10
	c.Executor.DrainTimeout = 100 * time.Millisecond
	c.Executor.Registration = registry.RegistrationConfig{TTL: 2 * time.Second, Refresh: time.Second, MinInterval: 20 * time.Millisecond, RetryDelay: 100 * time.Millisecond}
	return c
}

// running is a server's Run in the background.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func start(run func(context.Context, net.Listener) error, lis net.Listener) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- run(ctx, lis) }()
	return r
}

// stop cancels Run and returns its error.
func (r *running) stop() error {
	r.cancel()
	return <-r.done
}

// dial opens a client connection closed at cleanup.
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// connect opens a device stream with tok and waits for its Welcome.
func connect(ctx context.Context, t *testing.T, cc *grpc.ClientConn, device, tok string) grpc.BidiStreamingClient[executorv1.ConnectRequest, executorv1.ConnectResponse] {
	t.Helper()
	st, err := executorv1.NewExecutorServiceClient(cc).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Hello{Hello: &executorv1.Hello{Token: tok, DeviceId: device}}}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil || resp.GetWelcome() == nil {
		t.Fatalf("first frame = %v, %v; want Welcome", resp, err)
	}
	return st
}

// ackNext reads frames until a Message comes, acks it and returns it.
func ackNext(st grpc.BidiStreamingClient[executorv1.ConnectRequest, executorv1.ConnectResponse]) (*executorv1.Message, error) {
	for {
		resp, err := st.Recv()
		if err != nil {
			return nil, err
		}
		if m := resp.GetMessage(); m != nil {
			return m, st.Send(&executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Ack{Ack: &executorv1.Ack{MessageId: m.GetMessageId()}}})
		}
	}
}

// apiKey stores a new API key with roles (and tenants) and returns its
// secret.
func apiKey(t *testing.T, reg *registry.Registry, name string, roles []string, tenants ...string) string {
	t.Helper()
	k, secret, err := access.NewAPIKey(name, roles, tenants, nil, "test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
	defer cancel()
	if err := reg.CreateAPIKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	return secret
}

// dialKey opens a client connection presenting an API key, closed at
// cleanup.
func dialKey(t *testing.T, addr, key string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(access.APIKeyCredentials(key)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}
