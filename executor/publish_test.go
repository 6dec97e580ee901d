package executor_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/berthproject/berth/executor"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
)

// A publish out of bounds reaches no hook (nor subscriber) and is
// counted; the stream stays, until it has sent MaxRefusedPublishes
// refused ones: the next closes it.
func TestPublishBounds(t *testing.T) {
	pubs := make(chan *executorv1.Publish, 100)
	h := start(t, func(c *executor.Config) {
		c.Hooks.OnPublish = func(_ string, p *executorv1.Publish) { pubs <- p }
	})
	d, _ := h.connect(t, "d1")
	publish := func(p *executorv1.Publish) {
		t.Helper()
		if err := d.send(&executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Publish{Publish: p}}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		p    *executorv1.Publish
		ok   bool
	}{
		{name: "largest payload", p: &executorv1.Publish{Topic: "t", Payload: make([]byte, executor.MaxPublishPayload)}, ok: true},
		{name: "empty topic", p: &executorv1.Publish{}, ok: true},
		{name: "payload too large", p: &executorv1.Publish{Topic: "t", Payload: make([]byte, executor.MaxPublishPayload+1)}},
		{name: "topic too long", p: &executorv1.Publish{Topic: strings.Repeat("t", executor.MaxPublishTopic+1)}},
		{name: "topic with a newline", p: &executorv1.Publish{Topic: "a\nb"}},
		{name: "topic with a C1 control", p: &executorv1.Publish{Topic: "a\u0085b"}},
		{name: "content type too long", p: &executorv1.Publish{Topic: "t", ContentType: strings.Repeat("c", executor.MaxPublishContentType+1)}},
	}
	refused := uint64(0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			publish(tt.p)
			// A good publish after it: the hook sees it next, and not the
			// one tested unless it was within bounds.
			publish(&executorv1.Publish{Topic: "marker"})
			if tt.ok {
				select {
				case p := <-pubs:
					if p.GetTopic() != tt.p.GetTopic() {
						t.Fatalf("hook got topic %q; want %q", p.GetTopic(), tt.p.GetTopic())
					}
				case <-time.After(waitTimeout):
					t.Fatal("publish within bounds never reached the hook")
				}
			} else {
				refused++
			}
			select {
			case p := <-pubs:
				if p.GetTopic() != "marker" {
					t.Fatalf("hook got topic %q; want the marker (the publish tested was refused)", p.GetTopic())
				}
			case <-time.After(waitTimeout):
				t.Fatal("marker never reached the hook: the stream ended?")
			}
			if got := h.srv.Stats().PublishesRefused; got != refused {
				t.Errorf("Stats().PublishesRefused = %d; want %d", got, refused)
			}
		})
	}
	for range executor.MaxRefusedPublishes + 1 - int(refused) {
		publish(&executorv1.Publish{Topic: "a\x00b"})
	}
	wantStatus(t, d.closed(t), codes.InvalidArgument, "11 publishes refused on this stream, the last: publish topic")
}
