package e2e

// The fleets of the e2e tests: `berth simulate`, a process whose summary
// lines the tests read, and fleet, devices of the device SDK inside the
// test process that record what they receive; and rbSender, a service
// sending to a simulated fleet.

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/device"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/testutil"
)

// summary is one parsed `berth simulate` summary line.
type summary struct {
	fields    map[string]int
	groups    map[string]int
	executors map[string]int
}

// parseSummary parses a `berth simulate` summary line ("simulate: k=v
// groups=g:n,… executors=e:n,…"); ok is false for any other line.
func parseSummary(line string) (summary, bool) {
	_, rest, ok := strings.Cut(line, "simulate: ")
	if !ok {
		return summary{}, false
	}
	s := summary{fields: map[string]int{}, groups: map[string]int{}, executors: map[string]int{}}
	for _, f := range strings.Fields(rest) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		switch k {
		case "groups", "executors":
			m := s.groups
			if k == "executors" {
				m = s.executors
			}
			if v == "-" {
				continue
			}
			for _, kv := range strings.Split(v, ",") {
				name, n, _ := strings.Cut(kv, ":")
				m[name], _ = strconv.Atoi(n)
			}
		default:
			s.fields[k], _ = strconv.Atoi(v)
		}
	}
	return s, true
}

// simID is the id `berth simulate` gives its device i.
func simID(i int) string { return fmt.Sprintf("sim-%06d", i) }

// simIDs are the ids of a simulated fleet of n devices.
func simIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = simID(i)
	}
	return ids
}

// startSimulate runs `berth simulate` with n devices against the control
// plane cp (a summary every 200 ms, reconnects backing off from 50 ms to
// 1 s; extra flags come after and win), waits until every device is
// connected, and returns the process and that summary's line.
func startSimulate(t *testing.T, cp string, n int, extra ...string) (*proc, string) {
	t.Helper()
	args := append([]string{"simulate", "--controlplane", cp, "--devices", strconv.Itoa(n),
		"--every", "200ms", "--backoff-base", "50ms", "--backoff-max", "1s"}, extra...)
	sim := start(t, "simulate", args...)
	line := sim.waitLine(90*time.Second, "all devices connected", func(line string) bool {
		s, ok := parseSummary(line)
		return ok && s.fields["connected"] == n
	})
	return sim, line
}

// simPerProcess is the most devices one `berth simulate` process of a
// simFleet holds: each device holds a TCP connection, an open file, and
// the hard limit on open files can be as low as 20,000 (this project's
// VM). 20,000 devices are 5 processes, 5,000 already 2.
const simPerProcess = 4000

// simFleet is a simulated fleet split over `berth simulate` processes of at
// most simPerProcess devices each, read as one: the sum of every process's
// latest summary line. Its peaks per group are kept as lines come in.
type simFleet struct {
	t       *testing.T
	devices int
	procs   []*proc
	next    []int     // per process, its first stdout line not yet read
	latest  []summary // per process, its latest summary (zero: none yet)
	// peakOf is, per process, the most devices it had connected in each
	// group in any of its lines since resetPeaks; peakSum is the most in
	// each group in the sum of the processes' latest lines, taken at each
	// line.
	peakOf  []map[string]int
	peakSum map[string]int
}

// startSimFleet runs n devices against the control plane cp as
// ceil(n/simPerProcess) `berth simulate` processes (the startSimulate
// defaults, then extra). With one process its devices are simIDs(n);
// with several, process k's ids start with "sim<k>-". It waits up to
// timeout for every device to be connected.
func startSimFleet(t *testing.T, cp string, n int, timeout time.Duration, extra ...string) *simFleet {
	t.Helper()
	procs := (n + simPerProcess - 1) / simPerProcess
	f := &simFleet{t: t, devices: n, next: make([]int, procs), latest: make([]summary, procs)}
	for k := range procs {
		size := n / procs
		if k < n%procs {
			size++ // the remainder, one each to the first processes
		}
		args := []string{"simulate", "--controlplane", cp, "--devices", strconv.Itoa(size),
			"--every", "200ms", "--backoff-base", "50ms", "--backoff-max", "1s"}
		name := "simulate"
		if procs > 1 {
			name = fmt.Sprintf("simulate-%d", k)
			args = append(args, "--id-prefix", fmt.Sprintf("sim%d-", k))
		}
		f.procs = append(f.procs, start(t, name, append(args, extra...)...))
	}
	f.resetPeaks()
	f.wait(timeout, "all devices connected", func(s summary) bool { return s.fields["connected"] == n })
	return f
}

// resetPeaks starts the peaks per group over, from the lines printed
// from now on: the lines printed so far and not yet read are skipped, and
// each process counts as having none until its next.
func (f *simFleet) resetPeaks() {
	for k, p := range f.procs {
		_, f.next[k], _ = p.linesFrom(f.next[k])
		f.latest[k] = summary{}
	}
	f.peakOf = make([]map[string]int, len(f.procs))
	for k := range f.peakOf {
		f.peakOf[k] = map[string]int{}
	}
	f.peakSum = map[string]int{}
}

// wait reads the processes' new summary lines until the sum of their latest
// ones satisfies cond, and returns that sum; it fails the test after
// timeout or when a process exits.
func (f *simFleet) wait(timeout time.Duration, what string, cond func(summary) bool) summary {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var sum summary
	err := testutil.Poll(ctx, pollEvery, func() bool {
		for k, p := range f.procs {
			lines, next, exited := p.linesFrom(f.next[k])
			f.next[k] = next
			if exited {
				f.t.Fatalf("%s exited (%v) while waiting for %s", p.name, p.err, what)
			}
			for _, l := range lines {
				s, ok := parseSummary(l)
				if !ok {
					continue
				}
				f.latest[k] = s
				for g, c := range s.groups {
					f.peakOf[k][g] = max(f.peakOf[k][g], c)
				}
				sum = f.sum()
				for g, c := range sum.groups {
					f.peakSum[g] = max(f.peakSum[g], c)
				}
			}
		}
		sum = f.sum()
		return cond(sum)
	})
	if err != nil {
		f.t.Fatalf("simulated fleet: no %s within %v; the processes' sum: %v connected, groups %v", what, timeout, sum.fields["connected"], sum.groups)
	}
	return sum
}

// sum adds up the processes' latest summaries.
func (f *simFleet) sum() summary {
	s := summary{fields: map[string]int{}, groups: map[string]int{}, executors: map[string]int{}}
	for _, l := range f.latest {
		for k, v := range l.fields {
			s.fields[k] += v
		}
		for k, v := range l.groups {
			s.groups[k] += v
		}
		for k, v := range l.executors {
			s.executors[k] += v
		}
	}
	return s
}

// peaks returns the peak devices per group since resetPeaks: sampled, the
// most seen in the sum of the processes' latest lines (each up to a
// summary interval old when summed); bound, the sum of each process's own
// peak, never below the sum of the processes' counts, as their lines
// report them, at any one moment.
func (f *simFleet) peaks() (sampled, bound map[string]int) {
	bound = map[string]int{}
	for _, m := range f.peakOf {
		for g, c := range m {
			bound[g] += c
		}
	}
	return maps.Clone(f.peakSum), bound
}

// countStderr counts the occurrences of substr in what the processes
// wrote to stderr so far.
func (f *simFleet) countStderr(substr string) int {
	n := 0
	for _, p := range f.procs {
		n += strings.Count(p.stderr(), substr)
	}
	return n
}

// fleet is devices of the device SDK in the test process. Each records
// every message its application receives, then acknowledges it.
type fleet struct {
	ids  []string
	devs []*device.Device

	mu sync.Mutex
	// ackIf, when set, decides which messages the applications
	// acknowledge (setAckIf).
	ackIf    func(*device.Message) bool
	received map[string][]string // payloads by device, in arrival order
	count    map[string]int      // how often the application saw each payload
	executor map[string]string   // device → executor it is connected to, "" when not
	connects int
	changed  chan struct{} // closed and renewed on every change
}

// startFleet connects n devices named prefix+index.
func startFleet(t *testing.T, cpAddr, prefix string, n int) *fleet {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return startFleetIDs(t, cpAddr, ids)
}

// startFleetIDs connects a device per id through the control plane at
// cpAddr; they are closed when the test ends.
func startFleetIDs(t *testing.T, cpAddr string, ids []string) *fleet {
	t.Helper()
	cc, err := grpc.NewClient(cpAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	fl := &fleet{ids: ids, received: map[string][]string{}, count: map[string]int{}, executor: map[string]string{}, changed: make(chan struct{})}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		for _, d := range fl.devs {
			d.Close()
		}
		wg.Wait()
		cc.Close()
	})
	for _, id := range ids {
		cfg := device.DefaultConfig()
		cfg.ControlPlaneConn = cc
		cfg.DeviceID = id
		cfg.Backoff = backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}
		cfg.OnStateChange = func(sc device.StateChange) {
			fl.mu.Lock()
			defer fl.mu.Unlock()
			if sc.To == device.Connected {
				fl.executor[id] = sc.ExecutorID
				fl.connects++
			} else {
				fl.executor[id] = ""
			}
			fl.notifyLocked()
		}
		d, err := device.Connect(context.Background(), cfg)
		if err != nil {
			t.Fatalf("device %s: %v", id, err)
		}
		fl.devs = append(fl.devs, d)
		wg.Go(func() {
			for m := range d.Messages() {
				p := string(m.Payload)
				fl.mu.Lock()
				fl.received[id] = append(fl.received[id], p)
				fl.count[p]++
				ack := fl.ackIf
				fl.notifyLocked()
				fl.mu.Unlock()
				if ack == nil || ack(m) {
					// A failed Ack (the stream went) is fine: the message is
					// delivered again and the SDK acknowledges the duplicate.
					_ = m.Ack(context.Background())
				}
			}
		})
	}
	return fl
}

// setAckIf decides which messages the applications acknowledge.
func (fl *fleet) setAckIf(fn func(*device.Message) bool) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.ackIf = fn
}

// notifyLocked wakes the waiters of fl.changed; fl.mu is held.
func (fl *fleet) notifyLocked() {
	close(fl.changed)
	fl.changed = make(chan struct{})
}

// id is device i's id.
func (fl *fleet) id(i int) string { return fl.ids[i] }

// seen reports whether an application got payload.
func (fl *fleet) seen(payload string) bool {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.count[payload] > 0
}

// waitSeen waits until an application got each payload of want.
func (fl *fleet) waitSeen(t *testing.T, timeout time.Duration, what string, want []string) {
	t.Helper()
	fl.waitCond(t, timeout, what, func() bool {
		for _, p := range want {
			if fl.count[p] == 0 {
				return false
			}
		}
		return true
	})
}

// byExecutor counts connected devices per executor.
func (fl *fleet) byExecutor() map[string]int {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	out := map[string]int{}
	for _, e := range fl.executor {
		if e != "" {
			out[e]++
		}
	}
	return out
}

// onExecutor counts the devices connected to executor id.
func (fl *fleet) onExecutor(id string) int { return fl.byExecutor()[id] }

// waitConnected waits until every device is connected, to none of avoid.
func (fl *fleet) waitConnected(t *testing.T, timeout time.Duration, avoid ...string) {
	t.Helper()
	fl.waitCond(t, timeout, "every device connected", func() bool {
		if len(fl.executor) != len(fl.ids) {
			return false
		}
		for _, e := range fl.executor {
			if e == "" || slices.Contains(avoid, e) {
				return false
			}
		}
		return true
	})
}

// waitPresence waits until the control plane sees every device online.
func (fl *fleet) waitPresence(t *testing.T, mc messagingv1.MessagingServiceClient, timeout time.Duration) {
	t.Helper()
	testutil.WaitForEvery(t, timeout, pollEvery, "presence of every device", func() bool {
		for _, id := range fl.ids {
			d, err := getDevice(mc, id)
			if err != nil || !d.GetOnline() {
				return false
			}
		}
		return true
	})
}

// waitMessages waits until device id's application got n messages and
// returns their payloads in arrival order.
func (fl *fleet) waitMessages(t *testing.T, id string, n int, timeout time.Duration) []string {
	t.Helper()
	var got []string
	fl.waitCond(t, timeout, fmt.Sprintf("%d messages at %s", n, id), func() bool {
		got = slices.Clone(fl.received[id])
		return len(got) >= n
	})
	return got
}

// waitCond waits until cond, called with fl.mu held, is true.
func (fl *fleet) waitCond(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		fl.mu.Lock()
		ok, ch := cond(), fl.changed
		fl.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("no %s within %v (connected: %v)", what, timeout, fl.byExecutor())
		}
	}
}

// fleetStats is the devices' own count.
type fleetStats struct {
	// distinct payloads the applications got; appDuplicates of them more
	// than once; misrouted ones reached a device they were not sent to
	// (payloads "<device>/<k>" name their device).
	distinct, appDuplicates, misrouted int
	// sdkDuplicates are redeliveries the SDK acknowledged and dropped.
	sdkDuplicates uint64
	// connects counts streams established.
	connects int
}

// stats counts what the fleet got so far.
func (fl *fleet) stats() fleetStats {
	var st fleetStats
	for _, d := range fl.devs {
		st.sdkDuplicates += d.Stats().Duplicates
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	st.connects = fl.connects
	for _, n := range fl.count {
		st.distinct++
		if n > 1 {
			st.appDuplicates++
		}
	}
	for dev, ps := range fl.received {
		for _, p := range ps {
			if to, _, ok := strings.Cut(p, "/"); ok && to != dev {
				st.misrouted++
			}
		}
	}
	return st
}

// rbSender sends ONLINE_ONLY messages to random devices, about 20 a
// second, alternating replicas.
type rbSender struct {
	cancel              context.CancelFunc
	wg                  sync.WaitGroup
	delivered, attempts atomic.Int64
}

// startSender starts an rbSender to the devices simID(0…devices-1) through
// the control planes at addrs; it is stopped when the test ends.
func startSender(t *testing.T, addrs []string, devices int) *rbSender {
	var clients []messagingv1.MessagingServiceClient
	for _, a := range addrs {
		clients = append(clients, messagingClient(t, a))
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &rbSender{cancel: cancel}
	t.Cleanup(func() { s.stop() })
	s.wg.Go(func() {
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for n := 0; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			dev := simID(rand.IntN(devices))
			req := &messagingv1.SendRequest{DeviceId: dev, Payload: fmt.Appendf(nil, "rb-%d", n),
				ContentType: "text/plain", IdempotencyKey: fmt.Sprintf("rb-%d", n), Mode: messagingv1.DeliveryMode_DELIVERY_MODE_ONLINE_ONLY}
			s.attempts.Add(1)
			// A replica that is down: the same message (same key)
			// through the other.
			for k := range clients {
				cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
				resp, err := clients[(n+k)%len(clients)].Send(cctx, req)
				ccancel()
				if err == nil && resp.GetStatus() == messagingv1.SendStatus_SEND_STATUS_DELIVERED {
					s.delivered.Add(1)
				}
				if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "connect") {
					break
				}
			}
		}
	})
	return s
}

// stop ends the sender and returns how many messages the devices
// acknowledged and how many were sent.
func (s *rbSender) stop() (delivered, attempted int) {
	s.cancel()
	s.wg.Wait()
	return int(s.delivered.Load()), int(s.attempts.Load())
}
