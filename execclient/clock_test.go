package execclient_test

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/berthproject/berth/execclient"
	"github.com/berthproject/berth/registry"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)} }

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
	clk *clock

	mu       sync.Mutex
	n        int
	calls    int
	subjects []string
	fail     bool
}

var _ execclient.Signer = (*countingSigner)(nil)

func (s *countingSigner) SignService(subject string, ttl time.Duration) (string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.fail {
		return "", time.Time{}, errors.New("no key")
	}
	s.n++
	s.subjects = append(s.subjects, subject)
	return fmt.Sprintf("tok-%d", s.n), s.clk.now().Add(ttl), nil
}

func (s *countingSigner) setFail(fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = fail
}

// attempts counts the calls to SignService, failed or not.
func (s *countingSigner) attempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// fakeExecutors is a registry view whose executors' addresses are set by
// hand.
type fakeExecutors struct {
	mu   sync.Mutex
	snap *registry.Snapshot
}

var _ execclient.Executors = (*fakeExecutors)(nil)

func (f *fakeExecutors) Snapshot() *registry.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap
}

// set makes addrs the live executors.
func (f *fakeExecutors) set(addrs ...string) {
	execs := make([]registry.Executor, len(addrs))
	for i, a := range addrs {
		execs[i] = registry.Executor{ID: fmt.Sprintf("e%d", i), GroupID: "g1", Address: a, Capacity: 1}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snap = registry.NewSnapshot(1, nil, execs)
}
