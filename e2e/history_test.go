package e2e

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/berthproject/berth/device"
	"github.com/berthproject/berth/internal/testutil"
)

// historyPolicy sends devices that publish 20 or more messages a day to the
// heavy label.
const historyPolicy = `
default_label: default
rules:
  - name: heavy-senders
    when: history.messages_per_day >= 20
    label: heavy
`

// TestHistoryReachesPolicy: what a device does through its stream comes
// back, through the executor's usage report, the history record in etcd and
// the control plane's cache, as the history its policy sees: a device that
// published 30 messages is labelled heavy when it connects again.
func TestHistoryReachesPolicy(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes")
	}
	etcd := startEtcd(t)
	priv, pub := keygen(t)
	cp := start(t, "controlplane", "controlplane", "--etcd", etcd, "--signing-key", priv, "--listen", "127.0.0.1:0", "--open-enrollment").addr()
	ctl(t, cp, "group", "put", "g-normal", "--labels", "default", "--capacity", "100")
	ctl(t, cp, "group", "put", "g-heavy", "--labels", "heavy", "--capacity", "100")
	polFile := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, polFile, historyPolicy)
	ctl(t, cp, "policy", "apply", "-f", polFile)
	for _, g := range []string{"g-normal", "g-heavy"} {
		start(t, g, "executor", "--etcd", etcd, "--group", g, "--id", g+"-exec", "--capacity", "100",
			"--token-public-key", pub, "--lease-ttl", "3s", "--refresh", "1s").addr()
	}
	waitRegistered(t, cp, "g-normal-exec", "g-heavy-exec")

	connect := func() *device.Device {
		t.Helper()
		cfg := device.DefaultConfig()
		cfg.ControlPlane, cfg.DeviceID = cp, "dev-chatty"
		d, err := device.Connect(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.WaitForState(ctx, device.Connected); err != nil {
			d.Close()
			t.Fatalf("device did not connect: %v", err)
		}
		return d
	}

	d := connect()
	if s := d.Session(); s.Label != "default" || s.GroupID != "g-normal" {
		d.Close()
		t.Fatalf("first connect: label %s, group %s; want default, g-normal (no history yet)", s.Label, s.GroupID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const published = 30
	for i := range published {
		if err := d.Publish(ctx, "telemetry", []byte(strconv.Itoa(i)), "text/plain"); err != nil {
			d.Close()
			t.Fatal(err)
		}
	}
	// The executor reports the stream's usage when it ends; its recorder
	// writes it within 5 s.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	var perDay float64
	testutil.WaitForEvery(t, 30*time.Second, pollEvery, "the history record read back by the control plane", func() bool {
		perDay = explainedMessagesPerDay(t, cp, "dev-chatty")
		return perDay >= published-1 // decayed over seconds: 30 reads 29.99…
	})
	t.Logf("messages_per_day after %d publishes: %v", published, perDay)

	d = connect()
	defer d.Close()
	if s := d.Session(); s.Label != "heavy" || s.GroupID != "g-heavy" {
		t.Errorf("after publishing %d messages: label %s, group %s; want heavy, g-heavy", published, s.Label, s.GroupID)
	}
}
