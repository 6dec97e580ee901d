package executor_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/berthproject/berth/executor"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

// TestRegistrationInEtcd runs an executor with a real Registration and a
// real queue on an embedded etcd: its record appears with the connection
// count, each device's presence appears with its session and goes when the
// device leaves, a device's queued message is delivered on connect and
// removed once acked, and the record is gone as soon as Run returns.
func TestRegistrationInEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded etcd")
	}
	etcd := testutil.StartEtcd(t)
	cli := testutil.EtcdClient(t, etcd)
	reg := registry.New(cli, "/executor-test")

	cfg := testConfig()
	cfg.Registration = registry.RegistrationConfig{TTL: 2 * time.Second, Refresh: time.Second, MinInterval: 20 * time.Millisecond, RetryDelay: 100 * time.Millisecond}
	rr, err := reg.NewRegistration(registry.Executor{ID: cfg.ID, GroupID: cfg.GroupID, Address: cfg.Address, Capacity: cfg.Capacity}, cfg.Registration, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, signer, verifier := testKeys(t)
	// Queued before d2 connects.
	queued, _, err := reg.Enqueue(context.Background(), registry.QueuedMessage{
		DeviceID: "d2", Payload: []byte("hello"), ContentType: "text/plain",
		EnqueuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour),
	}, registry.QueueLimits{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := executor.New(cfg, verifier, rr, nil, executor.WithQueue(reg))
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, lis) }()

	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := executorv1.NewExecutorServiceClient(conn)

	record := func() (registry.Executor, bool) {
		es, err := reg.Executors(context.Background())
		if err != nil || len(es) != 1 {
			return registry.Executor{}, false
		}
		return es[0], true
	}
	sessions := map[string]string{}
	streams := map[string]executorv1.ExecutorService_ConnectClient{}
	cancels := map[string]context.CancelFunc{}
	for _, id := range []string{"d1", "d2"} {
		sctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cancels[id] = cancel
		s, err := client.Connect(sctx)
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := signer.Sign(id, cfg.GroupID, "default", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(helloFrame(id, tok)); err != nil {
			t.Fatal(err)
		}
		f, err := s.Recv()
		if err != nil || f.GetWelcome() == nil {
			t.Fatalf("device %s: first frame %v, %v; want Welcome", id, f, err)
		}
		sessions[id], streams[id] = f.GetWelcome().GetSessionId(), s
	}
	for id, session := range sessions {
		testutil.WaitFor(t, waitTimeout, "the presence of "+id+" in etcd", func() bool {
			p, err := reg.Presence(context.Background(), id)
			return err == nil && p.SessionID == session && p.ExecutorID == cfg.ID && p.GroupID == cfg.GroupID && p.Address == cfg.Address && !p.Since.IsZero()
		})
	}

	testutil.WaitFor(t, waitTimeout, "the record with 2 connections in etcd", func() bool {
		e, ok := record()
		return ok && e.Connections == 2 && e.Address == cfg.Address && e.GroupID == cfg.GroupID && !e.Draining
	})

	// d2's queued message comes after its Welcome, and goes once acked.
	f, err := streams["d2"].Recv()
	if err != nil || f.GetMessage().GetMessageId() != queued.ID || string(f.GetMessage().GetPayload()) != "hello" {
		t.Fatalf("d2: frame after Welcome %v, %v; want queued message %s", f, err, queued.ID)
	}
	if err := streams["d2"].Send(&executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Ack{Ack: &executorv1.Ack{MessageId: queued.ID}}}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, waitTimeout, "d2's queue empty in etcd", func() bool {
		n, err := reg.QueueLen(context.Background(), "d2")
		return err == nil && n == 0
	})

	// d1 goes: its presence goes too.
	cancels["d1"]()
	testutil.WaitFor(t, waitTimeout, "d1's presence gone from etcd", func() bool {
		_, err := reg.Presence(context.Background(), "d1")
		return errors.Is(err, registry.ErrNotFound)
	})
	testutil.WaitFor(t, waitTimeout, "the record with 1 connection in etcd", func() bool {
		e, ok := record()
		return ok && e.Connections == 1
	})
	testutil.WaitFor(t, waitTimeout, "Stats().Registered", func() bool { return srv.Stats().Registered })

	// Shut down. While the devices are still connected the record says
	// Draining; then they go (here: their connection closes).
	stop()
	testutil.WaitFor(t, waitTimeout, "the record marked draining", func() bool {
		e, ok := record()
		return ok && e.Draining
	})
	conn.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v; want nil", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return")
	}
	es, err := reg.Executors(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 0 {
		t.Errorf("executors in etcd after Run returned: %+v; want none (lease revoked)", es)
	}
}
