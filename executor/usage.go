package executor

import (
	"context"
	"sync/atomic"
	"time"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/registry"
)

// UsageRecorder receives what each device's stream did: the messages and
// bytes through it both ways, and a connect when it ends. Control planes
// read the sums back as the device's history (traffic per day, connects in
// the last day), which placement policies see and load balancing weighs.
// *registry.UsageRecorder is one. AddUsage must not block.
type UsageRecorder interface {
	AddUsage(deviceID string, u registry.Usage)
}

var _ UsageRecorder = (*registry.UsageRecorder)(nil)

// WithUsage makes the executor report each stream's usage to u when the
// stream ends, and every UsageInterval while it lasts.
func WithUsage(u UsageRecorder) Option {
	return func(o *options) { o.usage = u }
}

// UsageInterval is how often the usage of long-lived streams is reported.
const UsageInterval = time.Hour

// traffic counts what went through a stream since it was last reported.
type traffic struct {
	messages, bytes atomic.Int64
}

// countSent counts a frame sent to the device if it is a Message (its
// payload is what counts as bytes); other frames are not traffic.
func (t *traffic) countSent(f *executorv1.ConnectResponse) {
	if m := f.GetMessage(); m != nil {
		t.messages.Add(1)
		t.bytes.Add(int64(len(m.GetPayload())))
	}
}

// countPublish counts a Publish received from the device.
func (t *traffic) countPublish(p *executorv1.Publish) {
	t.messages.Add(1)
	t.bytes.Add(int64(len(p.GetPayload())))
}

// take returns the counts and resets them.
func (t *traffic) take() registry.Usage {
	return registry.Usage{Messages: t.messages.Swap(0), Bytes: t.bytes.Swap(0)}
}

// reportEnded reports a stream that ended: its last traffic and a connect.
func (s *Server) reportEnded(ss *session) {
	if s.usage == nil {
		return
	}
	u := ss.traffic.take()
	u.Connects = 1
	s.usage.AddUsage(ss.deviceID, u)
}

// reportUsage reports the traffic of the open streams every interval until
// ctx ends.
func (s *Server) reportUsage(ctx context.Context, interval time.Duration) {
	if s.usage == nil {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, ss := range s.snapshot() {
				if u := ss.traffic.take(); !u.IsZero() {
					s.usage.AddUsage(ss.deviceID, u)
				}
			}
		}
	}
}
