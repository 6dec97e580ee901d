package execclient_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/execclient"
)

// TestCredentialsRenewAtHalfLife: one token until half its life, a fresh
// one after; when minting fails the valid token serves, an expired one
// never does.
func TestCredentialsRenewAtHalfLife(t *testing.T) {
	clk := newClock()
	s := &countingSigner{clk: clk}
	var logs bytes.Buffer
	c := execclient.NewCredentials(s, "cp-1", 10*time.Minute, clk.now, slog.New(slog.NewTextHandler(&logs, nil)))
	steps := []struct {
		name    string
		advance time.Duration
		fail    bool
		want    string // "" wants an error
		logs    string // in the log after the step
	}{
		{name: "first call mints", want: "Bearer tok-1"},
		{name: "before half life", advance: 4*time.Minute + 59*time.Second, want: "Bearer tok-1"},
		{name: "past half life", advance: 2 * time.Second, want: "Bearer tok-2"},
		{name: "mint fails, token valid", advance: 6 * time.Minute, fail: true, want: "Bearer tok-2", logs: "the current one serves until it expires"},
		{name: "mint fails, token expired", advance: 5 * time.Minute, fail: true, logs: "calls to executors fail until it works"},
		{name: "mint works again", advance: time.Second, want: "Bearer tok-3"},
	}
	for _, st := range steps {
		clk.advance(st.advance)
		s.setFail(st.fail)
		md, err := c.GetRequestMetadata(context.Background())
		got := md["authorization"]
		switch {
		case st.want == "" && err == nil:
			t.Errorf("%s: metadata %q; want an error", st.name, got)
		case st.want == "" && (status.Code(err) != codes.Internal || !strings.Contains(status.Convert(err).Message(), "cannot mint a service token")):
			t.Errorf("%s: error %v; want INTERNAL saying the token cannot be minted", st.name, err)
		case st.want != "" && (err != nil || got != st.want):
			t.Errorf("%s: %q, %v; want %q", st.name, got, err, st.want)
		}
		if st.logs != "" && !strings.Contains(logs.String(), st.logs) {
			t.Errorf("%s: log %q; want it to say %q", st.name, logs.String(), st.logs)
		}
	}
	for i, sub := range s.subjects {
		if sub != "cp-1" {
			t.Errorf("token %d minted for %q; want the replica id cp-1", i+1, sub)
		}
	}
	if c.RequireTransportSecurity() {
		t.Error("service credentials require TLS; executors are reached in plaintext")
	}
}

// TestCredentialsMintRetry: after a failed mint the signer is not asked
// again for a second, however many calls come meanwhile.
func TestCredentialsMintRetry(t *testing.T) {
	clk := newClock()
	s := &countingSigner{clk: clk, fail: true}
	c := execclient.NewCredentials(s, "cp-1", time.Minute, clk.now, nil)
	for range 5 {
		if _, err := c.Token(); !errors.Is(err, execclient.ErrMint) {
			t.Fatalf("Token() with a failing signer = %v; want ErrMint", err)
		}
	}
	if n := s.attempts(); n != 1 {
		t.Errorf("signer asked %d times within a second; want 1", n)
	}
	clk.advance(time.Second)
	s.setFail(false)
	if tok, err := c.Token(); err != nil || tok != "tok-1" {
		t.Errorf("Token() a second later = %q, %v; want tok-1", tok, err)
	}
}
