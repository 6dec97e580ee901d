package device_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/devcluster"
)

// exampleTimeout bounds the start of an example's cluster and every wait in
// an example.
const exampleTimeout = 30 * time.Second

// cluster is a berth cluster running in this process for one example: an
// embedded etcd, a control plane and one group of one executor
// ("group-1-exec-1"), on loopback ports. It starts in well under a second.
type cluster struct {
	// ControlPlane is the control plane's address, for device.Config.
	ControlPlane string
	// Messaging is the service side: the control plane's
	// MessagingService, through which services reach devices.
	Messaging messagingv1.MessagingServiceClient

	conn   *grpc.ClientConn
	apiKey string
	cancel context.CancelFunc
	done   chan error
}

// startCluster starts a cluster and returns once it serves.
func startCluster() (*cluster, error) {
	dir, err := os.MkdirTemp("", "berth-device-example-")
	if err != nil {
		return nil, err
	}
	cfg := devcluster.DefaultConfig()
	cfg.DataDir = dir
	cfg.Listen = "127.0.0.1:0"
	cfg.Groups, cfg.ExecutorsPerGroup, cfg.GroupCapacity = 1, 1, 100
	cfg.Replica.Rebalance = nil

	ctx, cancel := context.WithCancel(context.Background())
	c := &cluster{cancel: cancel, done: make(chan error, 1)}
	ready := make(chan devcluster.Info, 1)
	go func() {
		err := devcluster.Run(ctx, cfg, nil, func(i devcluster.Info) { ready <- i })
		c.done <- errors.Join(err, os.RemoveAll(dir))
	}()
	timer := time.NewTimer(exampleTimeout)
	defer timer.Stop()
	select {
	case info := <-ready:
		c.ControlPlane, c.apiKey = info.ControlPlane, info.AdminAPIKey
	case err := <-c.done:
		cancel()
		return nil, fmt.Errorf("cluster stopped before it was ready: %w", err)
	case <-timer.C:
		cancel()
		return nil, errors.Join(errors.New("cluster not ready in time"), <-c.done)
	}
	c.conn, err = grpc.NewClient(c.ControlPlane, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(apiKey(c.apiKey)))
	if err != nil {
		cancel()
		return nil, errors.Join(err, <-c.done)
	}
	c.Messaging = messagingv1.NewMessagingServiceClient(c.conn)
	return c, nil
}

// stop closes the service connection and stops the cluster, waiting for
// every goroutine of it. It prints what went wrong, if anything, so that
// the example's output shows it.
func (c *cluster) stop() {
	err := c.conn.Close()
	c.cancel()
	if err := errors.Join(err, <-c.done); err != nil {
		fmt.Println("stopping the cluster:", err)
	}
}

// waitCtx is a context for one example's waits.
func waitCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), exampleTimeout)
}

// online waits until the control plane sees device id connected: a device
// is reachable once its executor has recorded its presence, moments after
// the stream was welcomed.
func (c *cluster) online(ctx context.Context, id string) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := c.Messaging.GetDevice(ctx, &messagingv1.GetDeviceRequest{DeviceId: id})
		if err == nil && resp.GetOnline() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("device %s not online: %w", id, errors.Join(ctx.Err(), err))
		case <-tick.C:
		}
	}
}

// send sends payload to device id as a service does (MessagingService.Send,
// ONLINE_ONLY: it returns once the device acknowledged the message) and
// reports the outcome on the channel it returns.
func (c *cluster) send(ctx context.Context, id, payload string) <-chan string {
	out := make(chan string, 1)
	go func() {
		if err := c.online(ctx, id); err != nil {
			out <- err.Error()
			return
		}
		resp, err := c.Messaging.Send(ctx, &messagingv1.SendRequest{
			DeviceId: id, Payload: []byte(payload), ContentType: "text/plain",
			Mode: messagingv1.DeliveryMode_DELIVERY_MODE_ONLINE_ONLY,
		})
		switch {
		case err != nil:
			out <- fmt.Sprintf("send failed: %s: %s", status.Code(err), status.Convert(err).Message())
		case resp.GetStatus() == messagingv1.SendStatus_SEND_STATUS_DELIVERED:
			out <- "delivered and acknowledged"
		default:
			out <- resp.GetStatus().String()
		}
	}()
	return out
}

// call sends payload to device id as a request (MessagingService.Call,
// which waits for the device's answer) and reports the answer, or the
// error, on the channel it returns.
func (c *cluster) call(ctx context.Context, id, payload string) <-chan string {
	out := make(chan string, 1)
	go func() {
		if err := c.online(ctx, id); err != nil {
			out <- err.Error()
			return
		}
		resp, err := c.Messaging.Call(ctx, &messagingv1.CallRequest{DeviceId: id, Payload: []byte(payload), ContentType: "text/plain"})
		if err != nil {
			out <- fmt.Sprintf("call failed: %s: %s", status.Code(err), status.Convert(err).Message())
			return
		}
		out <- fmt.Sprintf("answer %q (%s)", resp.GetPayload(), resp.GetContentType())
	}()
	return out
}

// subscription is a service's MessagingService.Subscribe to one topic.
type subscription struct {
	// C gets "device: payload" for every publish on the topic.
	C      <-chan string
	cancel context.CancelFunc
	done   chan struct{}
}

// subscribe subscribes to what devices publish on topic. The control plane
// starts forwarding a moment after the call is answered, so a publish made
// right away may be missed.
func (c *cluster) subscribe(ctx context.Context, topic string) (*subscription, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := c.Messaging.Subscribe(ctx, &messagingv1.SubscribeRequest{Topics: []string{topic}})
	if err == nil {
		_, err = stream.Header() // the control plane has registered the subscriber
	}
	if err != nil {
		cancel()
		return nil, err
	}
	out := make(chan string, 16)
	s := &subscription{C: out, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			select {
			case out <- fmt.Sprintf("%s: %s", resp.GetDeviceId(), resp.GetPayload()):
			default: // nobody reads any more
			}
		}
	}()
	return s, nil
}

// stop ends the subscription and waits for its goroutine.
func (s *subscription) stop() {
	s.cancel()
	<-s.done
}

// apiKey presents the cluster's admin key as a service would present its
// own: `authorization: Bearer <key>` on every call.
type apiKey string

func (k apiKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(k)}, nil
}

func (apiKey) RequireTransportSecurity() bool { return false }
