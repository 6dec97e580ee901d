package node_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/berthproject/berth/internal/node"
	"github.com/berthproject/berth/internal/testutil"
)

// TestExecutorUsage runs an executor through its composition root: it
// registers, admits a device, and when it stops (ending the device's
// stream) the stream's usage is written, or not, as RecordUsage says: the
// usage recorder outlives the streams.
func TestExecutorUsage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded etcd")
	}
	tests := []struct {
		name        string
		recordUsage bool
	}{
		{name: "recorded", recordUsage: true},
		{name: "off", recordUsage: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := newRegistry(t)
			k := newKeys(t)
			lis := listen(t)
			ex, err := node.NewExecutor(executorConfig(lis.Addr().String(), tt.recordUsage), node.ExecutorDeps{Registry: reg, Verifier: k.verifier})
			if err != nil {
				t.Fatal(err)
			}
			run := start(ex.Run, lis)
			testutil.WaitFor(t, testutil.DefaultTimeout, "the executor registered", ex.Registration().Registered)
			ctx, cancel := context.WithTimeout(context.Background(), testutil.DefaultTimeout)
			defer cancel()
			tok, _, err := k.signer.Sign("dev-1", "g1", "default", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			connect(ctx, t, dial(t, lis.Addr().String()), "dev-1", tok)
			testutil.WaitFor(t, testutil.DefaultTimeout, "the stream counted", func() bool { return ex.Server().Sessions() == 1 })

			if err := run.stop(); err != nil {
				t.Fatalf("Run = %v; want nil after a clean stop", err)
			}
			h, err := reg.History(ctx, "dev-1")
			if got := err == nil && h.Connects > 0; got != tt.recordUsage {
				t.Errorf("history of dev-1 after the stop = %+v, %v; want it written: %v", h, err, tt.recordUsage)
			}
			again := listen(t)
			defer again.Close()
			if err := ex.Run(ctx, again); !errors.Is(err, node.ErrRunTwice) {
				t.Errorf("a second Run = %v; want ErrRunTwice", err)
			}
		})
	}
}
