package executor_test

import (
	"slices"
	"testing"
	"time"

	"github.com/berthproject/berth/registry"
)

func TestPresenceFollowsSessions(t *testing.T) {
	h := start(t, nil)
	before := time.Now()
	d, w1 := h.connect(t, "d1")
	p, ok := h.reg.presenceOf("d1")
	if !ok {
		t.Fatal("no presence for a connected device")
	}
	want := registry.Presence{DeviceID: "d1", ExecutorID: testExecutor, GroupID: testGroup, Address: h.cfg.Address, SessionID: w1.GetSessionId(), Since: p.Since}
	if p != want {
		t.Errorf("presence = %+v; want %+v", p, want)
	}
	if p.Since.Before(before) || p.Since.After(time.Now()) {
		t.Errorf("presence since %v; want the admission time", p.Since)
	}

	// A second stream of the device replaces the first: presence names the
	// new session, and the old one's end does not clear it.
	d2, w2 := h.connect(t, "d1")
	if err := d.closed(t); err == nil {
		t.Fatal("replaced stream ended OK; want ABORTED")
	}
	h.reg.waitPresence(t, "the second session", func(m map[string]registry.Presence) bool {
		return m["d1"].SessionID == w2.GetSessionId()
	})

	d2.leave(t)
	if err := d2.closed(t); err != nil {
		t.Fatal(err)
	}
	h.reg.waitPresence(t, "d1 gone", func(m map[string]registry.Presence) bool { _, ok := m["d1"]; return !ok })
	want1 := []string{
		"set:d1:" + w1.GetSessionId(),
		"set:d1:" + w2.GetSessionId(),
		"clear:d1:" + w2.GetSessionId(),
	}
	if got := h.reg.presenceCalls(); !slices.Equal(got, want1) {
		t.Errorf("presence calls = %v; want %v", got, want1)
	}
}

// TestReplacedElsewhere: told by its Registrar that a session was replaced
// on another executor, the executor ends that session with Goodbye
// REPLACED and clears its presence (conditionally: the Registrar keeps the
// newer record); a notice for another session of the device, or for a
// device it does not hold, changes nothing.
func TestReplacedElsewhere(t *testing.T) {
	h := start(t, nil)
	d, w := h.connect(t, "d1")
	h.reg.replace(registry.Replacement{DeviceID: "d1", SessionID: "an-older-session", ExecutorID: testExecutor})
	h.reg.replace(registry.Replacement{DeviceID: "d2", SessionID: w.GetSessionId(), ExecutorID: testExecutor})
	if got := h.srv.Stats(); got.Sessions != 1 || got.Replaced != 0 {
		t.Fatalf("after notices for other sessions: Sessions %d, Replaced %d; want 1, 0", got.Sessions, got.Replaced)
	}
	if !d.open() {
		t.Fatal("a notice for another session ended the stream")
	}

	h.reg.replace(registry.Replacement{DeviceID: "d1", SessionID: w.GetSessionId(), ExecutorID: testExecutor, ByExecutor: "ex-2", BySession: "newer"})
	replacedGoodbye(t, d)
	h.reg.waitPresence(t, "d1 cleared", func(m map[string]registry.Presence) bool { _, ok := m["d1"]; return !ok })
	// Told again (a notice seen twice): nothing more happens.
	h.reg.replace(registry.Replacement{DeviceID: "d1", SessionID: w.GetSessionId(), ExecutorID: testExecutor})
	if got := h.srv.Stats().Replaced; got != 1 {
		t.Errorf("Stats().Replaced = %d; want 1", got)
	}
}
