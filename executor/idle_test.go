package executor_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/berthproject/berth/executor"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/rpcserver"
	"github.com/berthproject/berth/internal/testutil"
)

// idleProfile, when set, is a directory where TestIdleStreamGoroutines
// writes the heap and goroutine profiles of each kind of server holding
// its idle streams (see docs/performance.md):
//
//	go test -run TestIdleStreamGoroutines -idle.profile=/tmp/idle ./executor/
var idleProfile = flag.String("idle.profile", "", "directory for the heap and goroutine profiles of idle streams")

// idleStreams is how many streams each kind of server holds in
// TestIdleStreamGoroutines: enough that a goroutine per stream shows as
// a whole one, few enough for the race detector.
const idleStreams = 100

// maxExtraGoroutines is how many more goroutines per idle stream than a bare
// grpc-go server the executor may use (the target of issue 12).
const maxExtraGoroutines = 0.25

// bareExecutor is the baseline: the least a grpc-go server does to hold an
// idle device stream (bench's bare mode).
type bareExecutor struct {
	executorv1.UnimplementedExecutorServiceServer
}

func (bareExecutor) Connect(stream executorv1.ExecutorService_ConnectServer) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	if err := stream.Send(&executorv1.ConnectResponse{Frame: &executorv1.ConnectResponse_Welcome{Welcome: &executorv1.Welcome{SessionId: "s"}}}); err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// idleFleet is the client side of idle streams: one connection per stream,
// as devices have, and one goroutine per stream reading it.
type idleFleet struct {
	conns  []*grpc.ClientConn
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// openIdle opens one stream per hello to addr and waits for every Welcome.
func openIdle(t *testing.T, addr string, hellos []*executorv1.ConnectRequest) *idleFleet {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	fl := &idleFleet{cancel: cancel}
	t.Cleanup(fl.close)
	for _, hello := range hellos {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		fl.conns = append(fl.conns, cc)
		st, err := executorv1.NewExecutorServiceClient(cc).Connect(ctx)
		if err != nil {
			t.Fatalf("Connect: %v", err)
		}
		if err := st.Send(hello); err != nil {
			t.Fatalf("send Hello: %v", err)
		}
		f, err := st.Recv()
		if err != nil || f.GetWelcome() == nil {
			t.Fatalf("first frame = %v, %v; want a Welcome", f, err)
		}
		fl.wg.Go(func() {
			for {
				if _, err := st.Recv(); err != nil {
					return
				}
			}
		})
	}
	return fl
}

func (fl *idleFleet) close() {
	fl.cancel()
	for _, cc := range fl.conns {
		cc.Close()
	}
	fl.conns = nil
	fl.wg.Wait()
}

// idleCost is what a kind of server and its clients hold per idle stream.
type idleCost struct {
	goroutines, heap, stack float64
}

func (c idleCost) String() string {
	return fmt.Sprintf("%.2f goroutines, %.0f B heap, %.0f B stack per stream", c.goroutines, c.heap, c.stack)
}

// processState is the process's goroutines and memory after a GC.
type processState struct {
	goroutines        int
	heapAlloc, stacks uint64
}

func readState() processState {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return processState{goroutines: runtime.NumGoroutine(), heapAlloc: ms.HeapAlloc, stacks: ms.StackInuse}
}

// measureIdle opens idleStreams streams with open, then waits until the
// goroutines per stream are at most limit (transient goroutines of the
// connects end) or the wait times out, and returns the cost per stream.
// With -idle.profile it writes the profiles as name-heap.pb.gz and
// name-goroutine.txt.
func measureIdle(t *testing.T, name string, limit float64, open func() *idleFleet) idleCost {
	t.Helper()
	before := readState()
	fl := open()
	perStream := func(after, before float64) float64 { return (after - before) / idleStreams }
	var cost idleCost
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_ = testutil.Poll(ctx, 5*time.Millisecond, func() bool {
		after := readState()
		cost = idleCost{
			goroutines: perStream(float64(after.goroutines), float64(before.goroutines)),
			heap:       perStream(float64(after.heapAlloc), float64(before.heapAlloc)),
			stack:      perStream(float64(after.stacks), float64(before.stacks)),
		}
		return cost.goroutines <= limit
	})
	if *idleProfile != "" {
		writeProfiles(t, name)
	}
	fl.close()
	return cost
}

// writeProfiles writes the heap and goroutine profiles under -idle.profile.
func writeProfiles(t *testing.T, name string) {
	t.Helper()
	if err := os.MkdirAll(*idleProfile, 0o755); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	for _, p := range []struct {
		profile, file string
		debug         int
	}{{"heap", name + "-heap.pb.gz", 0}, {"goroutine", name + "-goroutine.txt", 1}} {
		f, err := os.Create(filepath.Join(*idleProfile, p.file))
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.Lookup(p.profile).WriteTo(f, p.debug); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestIdleStreamGoroutines guards the goroutines an idle stream costs:
// the executor may use at most maxExtraGoroutines per stream more than a
// bare grpc-go server holding as many streams the same way (one TCP
// connection each, same server stack, same clients).
func TestIdleStreamGoroutines(t *testing.T) {
	if *idleProfile != "" {
		runtime.MemProfileRate = 1
	}
	// The bare baseline.
	bareLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rpc := rpcserver.New(rpcserver.DefaultConfig(), nil)
	executorv1.RegisterExecutorServiceServer(rpc.GRPC, bareExecutor{})
	served := make(chan error, 1)
	go func() { served <- rpc.GRPC.Serve(bareLis) }()
	hellos := make([]*executorv1.ConnectRequest, idleStreams)
	for i := range hellos {
		hellos[i] = helloFrame(fmt.Sprintf("idle-%03d", i), "")
	}
	bare := measureIdle(t, "bare", 0, func() *idleFleet { return openIdle(t, bareLis.Addr().String(), hellos) })
	rpc.Stop(waitTimeout)
	if err := <-served; err != nil {
		t.Fatalf("bare Serve: %v", err)
	}

	// The executor, with real tokens.
	_, signer, verifier := testKeys(t)
	for i := range hellos {
		id := hellos[i].GetHello().GetDeviceId()
		tok, _, err := signer.Sign(id, testGroup, "default", waitTimeout)
		if err != nil {
			t.Fatal(err)
		}
		hellos[i] = helloFrame(id, tok)
	}
	cfg := testConfig()
	cfg.Capacity = idleStreams
	srv, err := executor.New(cfg, verifier, newFakeRegistrar(), nil)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, lis) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	berth := measureIdle(t, "berth", bare.goroutines+maxExtraGoroutines, func() *idleFleet {
		fl := openIdle(t, lis.Addr().String(), hellos)
		if n := srv.Sessions(); n != idleStreams {
			t.Fatalf("Sessions() = %d after %d Welcomes; want %d", n, idleStreams, idleStreams)
		}
		return fl
	})
	t.Logf("bare:  %v", bare)
	t.Logf("berth: %v", berth)
	if berth.goroutines > bare.goroutines+maxExtraGoroutines {
		t.Errorf("executor: %.2f goroutines per idle stream (with its client's); bare grpc-go: %.2f; want at most %.2f more",
			berth.goroutines, bare.goroutines, maxExtraGoroutines)
	}
}
