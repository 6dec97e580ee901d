package device

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/backoff"
)

func TestConfigValidate(t *testing.T) {
	valid := func() Config { return Config{ControlPlane: "cp:7000", DeviceID: "printer-01"} }
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string // empty: valid
	}{
		{name: "minimal", mutate: func(*Config) {}},
		{name: "defaults", mutate: func(c *Config) {
			d := DefaultConfig()
			d.ControlPlane, d.DeviceID = c.ControlPlane, c.DeviceID
			*c = d
		}},
		{name: "no control plane", mutate: func(c *Config) { c.ControlPlane = "" }, wantErr: "ControlPlane"},
		{name: "no device id", mutate: func(c *Config) { c.DeviceID = "" }, wantErr: "DeviceID is required"},
		{name: "device id too long", mutate: func(c *Config) { c.DeviceID = strings.Repeat("a", 129) }, wantErr: "at most 128"},
		{name: "device id with slash", mutate: func(c *Config) { c.DeviceID = "a/b" }, wantErr: "DeviceID"},
		{name: "device id with space", mutate: func(c *Config) { c.DeviceID = "a b" }, wantErr: "DeviceID"},
		{name: "negative buffer", mutate: func(c *Config) { c.MessageBuffer = -1 }, wantErr: "MessageBuffer"},
		{name: "negative hello timeout", mutate: func(c *Config) { c.HelloTimeout = -time.Second }, wantErr: "HelloTimeout"},
		{name: "negative assign timeout", mutate: func(c *Config) { c.AssignTimeout = -time.Second }, wantErr: "AssignTimeout"},
		{name: "backoff max below base", mutate: func(c *Config) {
			c.Backoff = backoff.Config{BaseDelay: time.Second, Multiplier: 2, MaxDelay: time.Millisecond}
		}, wantErr: "MaxDelay"},
		{name: "backoff multiplier below one", mutate: func(c *Config) {
			c.Backoff = backoff.Config{BaseDelay: time.Second, Multiplier: 0.5, MaxDelay: time.Minute}
		}, wantErr: "Multiplier"},
		{name: "backoff jitter above one", mutate: func(c *Config) {
			c.Backoff = backoff.Config{BaseDelay: time.Second, Multiplier: 2, Jitter: 2, MaxDelay: time.Minute}
		}, wantErr: "Jitter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mutate(&c)
			err := c.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v, want an error mentioning %q", err, tt.wantErr)
			case err != nil && !errors.Is(err, ErrInvalidConfig):
				t.Errorf("Validate() = %v, want it to wrap ErrInvalidConfig", err)
			}
		})
	}
}

func TestWithDefaults(t *testing.T) {
	got := Config{ControlPlane: "cp:1", DeviceID: "d"}.withDefaults()
	if got.Backoff != backoff.DefaultConfig {
		t.Errorf("Backoff = %+v, want backoff.DefaultConfig", got.Backoff)
	}
	if got.MessageBuffer != DefaultMessageBuffer || got.HelloTimeout != DefaultHelloTimeout ||
		got.AssignTimeout != DefaultAssignTimeout || got.Logger == nil {
		t.Errorf("withDefaults() = %+v, want every default filled in", got)
	}
}
