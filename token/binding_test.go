package token_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/berthproject/berth/token"
)

func TestSignBoundRoundTrip(t *testing.T) {
	priv, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	s, err := token.NewSigner(priv, clock)
	if err != nil {
		t.Fatal(err)
	}
	v, err := token.NewVerifier(clock, priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		binding token.Binding
		wantCnf bool
	}{
		{"unbound", token.Binding{}, false},
		{"certificate", token.Binding{Thumbprint: "abc_-123", Enrollment: "factory"}, true},
		{"symmetric", token.Binding{Enrollment: "sensors"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, _, err := s.SignBound("dev-1", "g1", "default", 2, time.Minute, tc.binding)
			if err != nil {
				t.Fatal(err)
			}
			c, err := v.Verify(raw)
			if err != nil {
				t.Fatal(err)
			}
			if c.Binding != tc.binding {
				t.Errorf("binding = %+v, want %+v", c.Binding, tc.binding)
			}
			payload, err := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[1])
			if err != nil {
				t.Fatal(err)
			}
			var wire map[string]any
			if err := json.Unmarshal(payload, &wire); err != nil {
				t.Fatal(err)
			}
			cnf, ok := wire["cnf"].(map[string]any)
			if ok != tc.wantCnf {
				t.Fatalf("cnf claim present = %v, want %v (%s)", ok, tc.wantCnf, payload)
			}
			if ok && cnf["x5t#S256"] != tc.binding.Thumbprint {
				t.Errorf("cnf.x5t#S256 = %v, want %q", cnf["x5t#S256"], tc.binding.Thumbprint)
			}
		})
	}
}
