package controlplane

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// countingSigner mints numbered tokens on the clock, or fails.
type countingSigner struct {
	clk      *clock
	n        int
	subjects []string
	fail     bool
}

func (s *countingSigner) SignService(subject string, ttl time.Duration) (string, time.Time, error) {
	if s.fail {
		return "", time.Time{}, errors.New("no key")
	}
	s.n++
	s.subjects = append(s.subjects, subject)
	return fmt.Sprintf("tok-%d", s.n), s.clk.now().Add(ttl), nil
}

func TestServiceCredsRenewAtHalfLife(t *testing.T) {
	clk := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := &countingSigner{clk: clk}
	c := newServiceCreds(s, "cp-1", 10*time.Minute, clk.now)
	md := func() string {
		t.Helper()
		m, err := c.GetRequestMetadata(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return m["authorization"]
	}
	if got := md(); got != "Bearer tok-1" {
		t.Fatalf("first metadata = %q; want Bearer tok-1", got)
	}
	clk.advance(4*time.Minute + 59*time.Second)
	if got := md(); got != "Bearer tok-1" || s.n != 1 {
		t.Errorf("before half life: %q after %d signatures; want tok-1 after 1", got, s.n)
	}
	clk.advance(2 * time.Second)
	if got := md(); got != "Bearer tok-2" {
		t.Errorf("past half life: %q; want a fresh tok-2", got)
	}
	if s.subjects[0] != "cp-1" || s.subjects[1] != "cp-1" {
		t.Errorf("subjects = %v; want the replica id", s.subjects)
	}
	// Minting fails: the current token serves while it is valid.
	s.fail = true
	clk.advance(6 * time.Minute)
	if got := md(); got != "Bearer tok-2" {
		t.Errorf("signer failing, token valid: %q; want tok-2", got)
	}
	clk.advance(5 * time.Minute)
	if _, err := c.GetRequestMetadata(context.Background()); err == nil {
		t.Error("signer failing, token expired: no error")
	}
	if c.RequireTransportSecurity() {
		t.Error("service credentials require TLS; executors are reached in plaintext")
	}
}

func TestConnPoolPrune(t *testing.T) {
	clk := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	p := newConnPool(newServiceCreds(&countingSigner{clk: clk}, "cp", time.Minute, clk.now), nil, clk.now)
	const a, b = "127.0.0.1:1", "127.0.0.1:2"
	_, relA, err := p.acquire(a)
	if err != nil {
		t.Fatal(err)
	}
	ca, relA2, _ := p.acquire(a)
	_, relB, _ := p.acquire(b)
	if p.size() != 2 || ca == nil {
		t.Fatalf("pool holds %d connections; want one per address", p.size())
	}
	relA()
	relA() // idempotent
	relA2()
	if n := p.prune(map[string]bool{a: true, b: true}, time.Minute); n != 0 {
		t.Errorf("pruned %d live connections", n)
	}
	clk.advance(30 * time.Second)
	if n := p.prune(map[string]bool{}, time.Minute); n != 0 {
		t.Errorf("pruned %d connections used 30s ago; want 0", n)
	}
	clk.advance(31 * time.Second)
	if n := p.prune(map[string]bool{}, time.Minute); n != 1 || p.size() != 1 {
		t.Errorf("pruned %d, %d left; want a's closed and b's (in use) kept", n, p.size())
	}
	relB()
	clk.advance(time.Minute)
	p.prune(map[string]bool{}, time.Minute)
	if p.size() != 0 {
		t.Errorf("%d connections left; want 0", p.size())
	}
	// A pruned address is dialled again on use.
	_, rel, err := p.acquire(a)
	if err != nil || p.size() != 1 {
		t.Fatalf("acquire after prune: %v, size %d", err, p.size())
	}
	rel()
	p.close()
	if _, _, err := p.acquire(a); !errors.Is(err, errPoolClosed) {
		t.Errorf("acquire after close = %v; want errPoolClosed", err)
	}
}
