package token_test

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/berthproject/berth/token"
)

func TestSignVerify(t *testing.T) {
	priv, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	other, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	s, err := token.NewSigner(priv, clock)
	if err != nil {
		t.Fatal(err)
	}
	os, err := token.NewSigner(other, clock)
	if err != nil {
		t.Fatal(err)
	}
	v, err := token.NewVerifier(clock, priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	good, exp, err := s.Sign("dev-1", "g1", "default", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(now.Add(time.Minute)) {
		t.Errorf("expiry = %v, want %v", exp, now.Add(time.Minute))
	}
	expired, _, err := s.Sign("dev-1", "g1", "default", -time.Second)
	if err != nil {
		t.Fatal(err)
	}
	forged, _, err := os.Sign("dev-1", "g1", "default", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + parts[1] + "x." + parts[2]

	tests := []struct {
		name    string
		raw     string
		wantErr error
	}{
		{"valid", good, nil},
		{"missing", "", token.ErrMissing},
		{"garbage", "not-a-token", token.ErrInvalid},
		{"other key", forged, token.ErrInvalid},
		{"tampered payload", tampered, token.ErrInvalid},
		{"expired", expired, token.ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(tt.raw)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && (c.DeviceID != "dev-1" || c.GroupID != "g1" || c.Label != "default") {
				t.Errorf("claims = %+v, want dev-1/g1/default", c)
			}
		})
	}
}

func TestKeyRoundTrip(t *testing.T) {
	priv, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pemPriv, err := token.MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := token.ParsePrivateKey(pemPriv)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(priv) {
		t.Error("private key changed in a PEM round trip")
	}
	pemPub, err := token.MarshalPublicKey(priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := token.ParsePublicKey(pemPub)
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(priv.Public()) {
		t.Error("public key changed in a PEM round trip")
	}
	if _, err := token.ParsePublicKey(pemPriv); err == nil {
		t.Error("ParsePublicKey accepted a private key")
	}
	if _, err := token.ParsePrivateKey([]byte("junk")); err == nil {
		t.Error("ParsePrivateKey accepted junk")
	}
}

func TestWeight(t *testing.T) {
	priv, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := token.NewSigner(priv, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := token.NewVerifier(nil, priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []float64{1, 2.5} {
		raw, _, err := s.SignWeighted("d", "g", "l", w, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		c, err := v.Verify(raw)
		if err != nil {
			t.Fatal(err)
		}
		if c.Weight != w {
			t.Errorf("weight %v came back as %v", w, c.Weight)
		}
	}
}

func TestServiceToken(t *testing.T) {
	priv, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := token.NewSigner(priv, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := token.NewVerifier(nil, priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := s.SignService("cp-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(raw)
	if err != nil || c.Role != token.RoleControlPlane || c.DeviceID != "cp-1" || c.GroupID != "" {
		t.Errorf("service token claims %+v, %v; want role controlplane for cp-1 and no group", c, err)
	}
	dev, _, err := s.Sign("d", "g", "l", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := v.Verify(dev); c.Role != "" {
		t.Errorf("an assignment token has role %q", c.Role)
	}
}
