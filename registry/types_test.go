package registry_test

import (
	"errors"
	"testing"
	"time"

	"github.com/berthproject/berth/registry"
)

func TestRegistrationConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		modify  func(c *registry.RegistrationConfig)
		wantErr bool
	}{
		{name: "default", modify: func(*registry.RegistrationConfig) {}},
		{name: "shortest TTL", modify: func(c *registry.RegistrationConfig) { c.TTL, c.Refresh = 2*time.Second, time.Second }},
		{name: "TTL under 2s", modify: func(c *registry.RegistrationConfig) { c.TTL = 1999 * time.Millisecond }, wantErr: true},
		{name: "zero refresh", modify: func(c *registry.RegistrationConfig) { c.Refresh = 0 }, wantErr: true},
		{name: "zero min interval", modify: func(c *registry.RegistrationConfig) { c.MinInterval = 0 }, wantErr: true},
		{name: "negative retry delay", modify: func(c *registry.RegistrationConfig) { c.RetryDelay = -time.Second }, wantErr: true},
		{name: "retry max set", modify: func(c *registry.RegistrationConfig) { c.RetryMax = 30 * time.Second }},
		{name: "negative retry max", modify: func(c *registry.RegistrationConfig) { c.RetryMax = -time.Second }, wantErr: true},
		{name: "refresh equal to TTL", modify: func(c *registry.RegistrationConfig) { c.Refresh = c.TTL }, wantErr: true},
		{name: "refresh longer than TTL", modify: func(c *registry.RegistrationConfig) { c.Refresh = 2 * c.TTL }, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := registry.DefaultRegistrationConfig()
			tt.modify(&c)
			err := c.Validate()
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("Validate(%+v) = %v, want error: %v", c, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, registry.ErrInvalid) {
				t.Errorf("Validate(%+v) = %v, want errors.Is ErrInvalid", c, err)
			}
		})
	}
}
