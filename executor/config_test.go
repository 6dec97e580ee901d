package executor_test

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/berthproject/berth/executor"
	"github.com/berthproject/berth/token"
)

func TestDefaultConfig(t *testing.T) {
	c := executor.DefaultConfig()
	want := map[string][2]any{
		"HelloTimeout":    {c.HelloTimeout, 5 * time.Second},
		"PingInterval":    {c.PingInterval, 20 * time.Second},
		"PingMisses":      {c.PingMisses, 3},
		"SendQueue":       {c.SendQueue, 64},
		"DrainTimeout":    {c.DrainTimeout, 30 * time.Second},
		"RedirectSpread":  {c.RedirectSpread, 5 * time.Second},
		"SubscribeBuffer": {c.SubscribeBuffer, 1024},
	}
	for name, v := range want {
		if v[0] != v[1] {
			t.Errorf("DefaultConfig().%s = %v; want %v", name, v[0], v[1])
		}
	}
	// Only the identity is missing.
	c.ID, c.GroupID, c.Address = "e1", "g1", "host:1"
	if err := c.Validate(); err != nil {
		t.Errorf("DefaultConfig with an identity: Validate = %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*executor.Config)
		wantErr string // "" means valid
	}{
		{"valid", func(*executor.Config) {}, ""},
		{"no id", func(c *executor.Config) { c.ID = "" }, "ID"},
		{"slash in id", func(c *executor.Config) { c.ID = "a/b" }, "ID"},
		{"no group", func(c *executor.Config) { c.GroupID = "" }, "GroupID"},
		{"no address", func(c *executor.Config) { c.Address = "" }, "Address"},
		{"address without port", func(c *executor.Config) { c.Address = "host" }, "Address"},
		{"internal address", func(c *executor.Config) { c.InternalAddress = "10.1.0.1:7001" }, ""},
		{"internal address without port", func(c *executor.Config) { c.InternalAddress = "10.1.0.1" }, "InternalAddress"},
		{"internal address same as address", func(c *executor.Config) { c.InternalAddress = c.Address }, "InternalAddress"},
		{"zero capacity", func(c *executor.Config) { c.Capacity = 0 }, "Capacity"},
		{"zero hello timeout", func(c *executor.Config) { c.HelloTimeout = 0 }, "HelloTimeout"},
		{"zero ping interval", func(c *executor.Config) { c.PingInterval = 0 }, "PingInterval"},
		{"zero ping misses", func(c *executor.Config) { c.PingMisses = 0 }, "PingMisses"},
		{"zero send queue", func(c *executor.Config) { c.SendQueue = 0 }, "SendQueue"},
		{"negative drain timeout", func(c *executor.Config) { c.DrainTimeout = -time.Second }, "DrainTimeout"},
		{"zero drain timeout", func(c *executor.Config) { c.DrainTimeout = 0 }, ""},
		{"negative redirect spread", func(c *executor.Config) { c.RedirectSpread = -time.Second }, "RedirectSpread"},
		{"negative subscribe buffer", func(c *executor.Config) { c.SubscribeBuffer = -1 }, "SubscribeBuffer"},
		{"zero subscribe buffer: the default", func(c *executor.Config) { c.SubscribeBuffer = 0 }, ""},
		{"no message size limit", func(c *executor.Config) { c.RPC.MaxRecvMsgSize = 0 }, "RPC message size"},
		{"bad registration", func(c *executor.Config) { c.Registration.TTL = time.Second }, "Registration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig()
			tt.mutate(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate = %v; want nil", err)
				}
				return
			}
			if !errors.Is(err, executor.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v; want ErrInvalidConfig about %s", err, tt.wantErr)
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	v, err := token.NewVerifier(nil, make(ed25519.PublicKey, ed25519.PublicKeySize))
	if err != nil {
		t.Fatal(err)
	}
	bad := testConfig()
	bad.Capacity = -1
	if _, err := executor.New(bad, v, newFakeRegistrar(), nil); !errors.Is(err, executor.ErrInvalidConfig) {
		t.Errorf("New(bad config) = %v; want ErrInvalidConfig", err)
	}
	if _, err := executor.New(testConfig(), nil, newFakeRegistrar(), nil); !errors.Is(err, executor.ErrInvalidConfig) {
		t.Errorf("New(nil verifier) = %v; want ErrInvalidConfig", err)
	}
	if _, err := executor.New(testConfig(), v, nil, nil); !errors.Is(err, executor.ErrInvalidConfig) {
		t.Errorf("New(nil registrar) = %v; want ErrInvalidConfig", err)
	}
}
