package bench

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/rpcserver"
	"github.com/berthproject/berth/token"
)

// Targets of the streams benchmark (issue 12), checked by the report of a
// plaintext run: berth against the bare grpc-go baseline of the same run.
const (
	// TargetIdleRSSRatio bounds berth's RSS per idle stream over bare's.
	TargetIdleRSSRatio = 1.15
	// TargetExtraGoroutines bounds berth's goroutines per idle stream
	// over bare's.
	TargetExtraGoroutines = 0.25
	// TargetIdleConnectRatio bounds berth's connect time (tokens
	// verified) over bare's.
	TargetIdleConnectRatio = 1.3
	// TargetTrafficGrowth bounds berth's RSS per stream after the traffic
	// phase over its idle figure.
	TargetTrafficGrowth = 1.25
)

// deliverTimeout bounds one message's delivery and Ack in the traffic
// phase.
const deliverTimeout = 30 * time.Second

// pusher is the traffic phase of bench streams: it sends every device
// messages messages through its server's ExecutorInternalService.Deliver,
// one at a time, each returning once the device acked it; at most
// inFlight devices at once.
type pusher struct {
	messages, inFlight int
	conns              int // client connections of the fleet
	payload            []byte
	// auth is the control plane's service token berth's executor wants on
	// Deliver (the bare baseline ignores it).
	auth string
}

// newPusher signs the service token with priv, the key the servers trust.
func newPusher(priv ed25519.PrivateKey, cfg StreamsConfig, plan ConnPlan) (*pusher, error) {
	signer, err := token.NewSigner(priv, nil)
	if err != nil {
		return nil, err
	}
	tok, _, err := signer.SignService("bench-streams", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	return &pusher{
		messages: cfg.Messages, inFlight: cfg.InFlight, conns: plan.Conns,
		payload: make([]byte, cfg.PayloadSize), auth: "Bearer " + tok,
	}, nil
}

// run pushes to the devices of hellos, held as openFleet placed them
// (stream i on connection i%conns, connection j on server j%len(addrs)),
// over creds, and returns how long it took.
func (p *pusher) run(ctx context.Context, addrs []string, hellos []*executorv1.ConnectRequest, creds credentials.TransportCredentials) (time.Duration, error) {
	// Enough connections per server that the servers' limit of concurrent
	// streams per connection does not bound the calls in flight.
	perServer := (p.inFlight + int(rpcserver.DefaultConfig().MaxConcurrentStreams) - 1) / int(rpcserver.DefaultConfig().MaxConcurrentStreams)
	clients := make([][]executorv1.ExecutorInternalServiceClient, len(addrs))
	var ccs []*grpc.ClientConn
	defer func() {
		for _, cc := range ccs {
			cc.Close()
		}
	}()
	for i, addr := range addrs {
		for range perServer {
			cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
			if err != nil {
				return 0, err
			}
			ccs = append(ccs, cc)
			clients[i] = append(clients[i], executorv1.NewExecutorInternalServiceClient(cc))
		}
	}
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", p.auth)
	var (
		next    atomic.Int64
		failed  atomic.Bool
		first   onceErr
		workers sync.WaitGroup
	)
	start := time.Now()
	for w := range min(p.inFlight, len(hellos)) {
		workers.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= len(hellos) {
					return
				}
				server := (i % p.conns) % len(addrs)
				cl := clients[server][w%perServer]
				if err := p.device(ctx, cl, hellos[i].GetHello().GetDeviceId()); err != nil {
					first.set(err)
					failed.Store(true)
					return
				}
			}
		})
	}
	workers.Wait()
	return time.Since(start), first.get()
}

// device sends one device its messages, each after the previous one was
// acked.
func (p *pusher) device(ctx context.Context, cl executorv1.ExecutorInternalServiceClient, id string) error {
	for k := range p.messages {
		dctx, cancel := context.WithTimeout(ctx, deliverTimeout)
		_, err := cl.Deliver(dctx, &executorv1.DeliverRequest{DeviceId: id, Message: &executorv1.Message{
			MessageId: "m" + strconv.Itoa(k), Payload: p.payload, ContentType: "application/octet-stream",
		}})
		cancel()
		if err != nil {
			return fmt.Errorf("device %s, message %d of %d: %w", id, k+1, p.messages, err)
		}
	}
	return nil
}
