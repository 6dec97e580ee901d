package executor_test

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/executor"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/testutil"
	"github.com/berthproject/berth/registry"
)

// fuzzDevice is the device every fuzzed stream speaks for.
const fuzzDevice = "dev-1"

// FuzzConnectFrames plays an arbitrary sequence of client frames on one
// Connect stream of an in-process executor (the package's harness, on
// bufconn), with messages delivered to the device meanwhile, then ends the
// stream. Whatever the sequence, the executor does not panic, the stream
// ends with a status a client can act on (never INTERNAL or UNKNOWN), the
// session is gone with its presence, the executor still serves a valid
// device, and no goroutine is left behind.
//
// Each byte of ops is one step (its value modulo 12):
//
//	0 Hello with a valid token     1 Hello with token a, device b
//	2 Hello, another device's token 3 Hello, another group's token
//	4 Ack of message a              5 Ack of the last delivered message
//	6 Pong                          7 Publish topic a, payload, content type b
//	8 Reply to the last delivered message, payload, error b
//	9 a frame with nothing set      10 a control plane delivers a message
//	11 the device half-closes (later frames fail to send)
func FuzzConnectFrames(f *testing.F) {
	h := startWith(f, func(c *executor.Config) { c.HelloTimeout = 2 * time.Second })
	svc := metadata.Pairs("authorization", "Bearer "+h.serviceToken(f))
	// The client connection is lazy: one call sets up its transport, whose
	// goroutines then belong to the baseline every run is compared with.
	if _, err := h.health.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		f.Fatal(err)
	}
	leaks := []goleak.Option{goleak.IgnoreCurrent(),
		// Under -fuzz, the fuzzing worker watches for interrupts from the
		// first run on.
		goleak.IgnoreTopFunction("os/signal.NotifyContext.func1")}
	f.Fuzz(func(t *testing.T, ops []byte, a, b string, payload []byte) {
		if len(ops) > 64 || len(payload) > 1<<18 {
			return // keep each run short; bounds are tested elsewhere
		}
		// A gRPC client cannot send invalid UTF-8 in a string field (it
		// fails to marshal), and a server refuses to unmarshal it before
		// the executor sees it.
		a, b = strings.ToValidUTF8(a, "\uFFFD"), strings.ToValidUTF8(b, "\uFFFD")
		d := h.open(t, fuzzDevice, nil)
		var delivers sync.WaitGroup
		last := ""
		halfClosed := false
		for i, op := range ops {
			var fr *executorv1.ConnectRequest
			switch op % 12 {
			case 0:
				fr = helloFrame(fuzzDevice, h.token(t, fuzzDevice))
			case 1:
				fr = helloFrame(b, a)
			case 2:
				fr = helloFrame(fuzzDevice, h.token(t, "dev-2"))
			case 3:
				fr = helloFrame(fuzzDevice, h.tokenFor(t, fuzzDevice, "other-group"))
			case 4:
				fr = &executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Ack{Ack: &executorv1.Ack{MessageId: a}}}
			case 5:
				fr = &executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Ack{Ack: &executorv1.Ack{MessageId: last}}}
			case 6:
				fr = &executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Pong{Pong: &executorv1.Pong{Nonce: uint64(i)}}}
			case 7:
				fr = &executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Publish{Publish: &executorv1.Publish{Topic: a, Payload: payload, ContentType: b}}}
			case 8:
				fr = &executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Reply{Reply: &executorv1.Reply{MessageId: last, Payload: payload, Error: b}}}
			case 9:
				fr = &executorv1.ConnectRequest{}
			case 10:
				last = "m-" + strconv.Itoa(i)
				m := &executorv1.Message{MessageId: last, Payload: payload}
				delivers.Go(func() {
					// As a control plane delivers: the call waits for the
					// Ack or Reply. Any outcome will do (not connected, not
					// acknowledged in time, stream ended); only its end is
					// waited for.
					ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), svc), 100*time.Millisecond)
					defer cancel()
					_, _ = h.internal.Deliver(ctx, &executorv1.DeliverRequest{DeviceId: fuzzDevice, Message: m})
				})
			case 11:
				if !halfClosed {
					halfClosed = true
					_ = d.stream.CloseSend()
				}
			}
			if fr != nil && !halfClosed {
				// A send fails once the executor ended the stream; the
				// rest of the sequence is then moot.
				if d.send(fr) != nil {
					break
				}
			}
		}
		if !halfClosed {
			_ = d.stream.CloseSend()
		}
		var end error
		select {
		case end = <-d.end:
		case <-time.After(waitTimeout):
			t.Fatalf("the stream did not end within %v of the device's half-close", waitTimeout)
		}
		// io.EOF: the executor ended the stream with OK (the device
		// half-closed).
		if c := status.Code(end); !errors.Is(end, io.EOF) && (c == codes.Internal || c == codes.Unknown) {
			t.Fatalf("stream ended with %v", end)
		}
		d.cancel()
		delivers.Wait()
		testutil.WaitFor(t, waitTimeout, "no session left", func() bool { return h.srv.Sessions() == 0 })
		h.reg.waitPresence(t, "no presence left", func(p map[string]registry.Presence) bool { return len(p) == 0 })
		if err := goleak.Find(leaks...); err != nil {
			t.Fatalf("goroutines left after the stream ended: %v", err)
		}
	})
}
