// Package simulate runs a fleet of devices with the device SDK in one
// process, acknowledging every message they receive and answering every
// request (MessagingService.Call) with an echo of it, and reports a live
// summary of where they are. It is `berth simulate`.
package simulate

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/berthproject/berth/device"
	"github.com/berthproject/berth/internal/codec"
	"github.com/berthproject/berth/internal/tracing"
)

// simBufferSize is the read and write buffer size of each simulated
// device's connection.
const simBufferSize = 8 << 10

// Config describes the fleet.
type Config struct {
	// ControlPlane is host:port of a control plane, or several separated by
	// commas: devices are spread over them in turn.
	ControlPlane string
	// Devices is the fleet size.
	Devices int
	// IDPrefix starts every device id; ids are IDPrefix + index.
	IDPrefix string
	// Models are given to devices in turn.
	Models []string
	// Tenants spreads devices over this many tenants ("tenant-0"...).
	Tenants int
	// Services are given to devices in turn, one set each; a set is a
	// "+"-separated list ("print+scan").
	Services []string
	// Every is how often a summary line is printed (0: only at the end).
	Every time.Duration
	// StatusEvery is how often every connected device publishes a status
	// report on topic StatusTopic (0: never): what `berth ctl subscribe
	// --topic status` shows.
	StatusEvery time.Duration
	// Backoff overrides the base and maximum delays of the devices'
	// reconnect backoff (zero fields: gRPC's defaults).
	Backoff backoff.Config
	// StartRate bounds device starts per second (0: all at once).
	StartRate int
	// TLS, when set, reaches the control planes and the executors over TLS
	// with it (every device presents the same client certificate, if any).
	// Nil: plaintext.
	TLS *tls.Config
	// EnrollmentID and EnrollmentKey, when set, make every device prove
	// its identity at Assign with its key derived from this symmetric-key
	// enrollment's key (device.SymmetricKey), as a provisioned fleet does.
	EnrollmentID  string
	EnrollmentKey []byte
	// Tracing, when set, traces the devices' calls and each message they
	// take (a "device.message" span, the child of the Send's trace). Nil:
	// off.
	Tracing *tracing.Tracing
}

// DefaultConfig is what `berth simulate` runs.
func DefaultConfig() Config {
	return Config{
		ControlPlane: "127.0.0.1:7070",
		Devices:      100,
		IDPrefix:     "sim-",
		Models:       []string{"printer-a", "printer-b", "sensor-x"},
		Tenants:      10,
		Every:        time.Second,
		StatusEvery:  10 * time.Second,
	}
}

// Summary is a count of the fleet at one moment.
type Summary struct {
	// Devices in the fleet.
	Devices int
	// ByState counts devices per SDK state.
	ByState map[device.State]int
	// ByGroup and ByExecutor count connected devices.
	ByGroup, ByExecutor map[string]int
	// Connects counts stream establishments, Messages the messages received
	// and acknowledged, Calls the requests answered (each with an echo:
	// the request's payload and content type).
	Connects, Messages, Calls int64
	// Received counts the messages and requests handed to the devices'
	// application, acknowledged or not: an Ack on a stream a device just
	// left (it moved) fails, and the next stream's redelivery is dropped as
	// a duplicate, so Received can exceed Messages + Calls.
	Received int64
	// Published counts the status reports the devices published.
	Published int64
}

// String is the summary line, `key=value` fields that scripts can parse.
func (s Summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "devices=%d", s.Devices)
	for _, st := range []device.State{device.Connected, device.Connecting, device.Assigning, device.Backoff, device.Idle} {
		fmt.Fprintf(&b, " %s=%d", strings.ToLower(st.String()), s.ByState[st])
	}
	fmt.Fprintf(&b, " connects=%d messages=%d calls=%d received=%d published=%d groups=%s executors=%s", s.Connects, s.Messages, s.Calls, s.Received, s.Published, kv(s.ByGroup), kv(s.ByExecutor))
	return b.String()
}

func kv(m map[string]int) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%d", k, m[k])
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

// fleet tracks the devices.
type fleet struct {
	mu       sync.Mutex
	state    []device.State
	group    []string
	executor []string
	connects int64
	messages int64
	received int64
	calls    int64
	// published counts status reports.
	published int64
}

func (f *fleet) summary() Summary {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := Summary{Devices: len(f.state), ByState: map[device.State]int{}, ByGroup: map[string]int{}, ByExecutor: map[string]int{},
		Connects: f.connects, Messages: f.messages, Calls: f.calls, Received: f.received, Published: f.published}
	for i, st := range f.state {
		s.ByState[st]++
		if st == device.Connected {
			s.ByGroup[f.group[i]]++
			s.ByExecutor[f.executor[i]]++
		}
	}
	return s
}

// handle acknowledges a message, or answers a request with an echo of it,
// and counts it. ctx bounds the wait for the device's send queue.
func (f *fleet) handle(ctx context.Context, m *device.Message) {
	f.mu.Lock()
	f.received++
	f.mu.Unlock()
	if m.ExpectsReply {
		if err := m.Reply(ctx, m.Payload, m.ContentType); err == nil {
			f.mu.Lock()
			f.calls++
			f.mu.Unlock()
		}
		return
	}
	if err := m.Ack(ctx); err == nil {
		f.mu.Lock()
		f.messages++
		f.mu.Unlock()
	}
}

// Run starts the fleet, prints a summary line to out every cfg.Every, and
// stops every device when ctx is cancelled, printing a last summary.
func Run(ctx context.Context, cfg Config, out io.Writer, log *slog.Logger) error {
	if cfg.Devices <= 0 {
		return errors.New("simulate: --devices must be positive")
	}
	if (cfg.EnrollmentID == "") != (len(cfg.EnrollmentKey) == 0) {
		return errors.New("simulate: --enrollment and --enrollment-key-file go together")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var conns []*grpc.ClientConn
	defer func() {
		for _, cc := range conns {
			cc.Close()
		}
	}()
	for _, addr := range strings.Split(cfg.ControlPlane, ",") {
		if addr = strings.TrimSpace(addr); addr == "" {
			continue
		}
		transport := insecure.NewCredentials()
		if cfg.TLS != nil {
			transport = credentials.NewTLS(cfg.TLS)
		}
		cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(transport), codec.DialOption()}, cfg.Tracing.DialOptions()...)...)
		if err != nil {
			return fmt.Errorf("simulate: %w", err)
		}
		conns = append(conns, cc)
	}
	if len(conns) == 0 {
		return errors.New("simulate: no control plane address")
	}

	f := &fleet{state: make([]device.State, cfg.Devices), group: make([]string, cfg.Devices), executor: make([]string, cfg.Devices)}
	devs := make([]*device.Device, 0, cfg.Devices)
	var wg sync.WaitGroup
	defer func() {
		for _, d := range devs {
			d.Close()
		}
		wg.Wait()
		fmt.Fprintf(out, "simulate: final %s\n", f.summary())
	}()

	var startTick *time.Ticker
	if cfg.StartRate > 0 {
		startTick = time.NewTicker(time.Second / time.Duration(cfg.StartRate))
		defer startTick.Stop()
	}
	report := make(<-chan time.Time)
	if cfg.Every > 0 {
		t := time.NewTicker(cfg.Every)
		defer t.Stop()
		report = t.C
	}
	for i := range cfg.Devices {
		if startTick != nil {
			select {
			case <-ctx.Done():
				return nil
			case <-startTick.C:
			}
		}
		select {
		case <-report:
			fmt.Fprintf(out, "simulate: %s\n", f.summary())
		default:
		}
		dc := deviceConfig(cfg, i, conns[i%len(conns)], f, log)
		d, err := device.Connect(ctx, dc)
		if err != nil {
			return fmt.Errorf("simulate: device %d: %w", i, err)
		}
		devs = append(devs, d)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Acks and answers still go out while the fleet stops: each
			// stream half-closes after the frames queued before it.
			actx := context.WithoutCancel(ctx)
			for m := range d.Messages() {
				f.handle(actx, m)
			}
		}()
	}
	if cfg.StatusEvery > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.publishStatus(ctx, devs, cfg.IDPrefix, cfg.StatusEvery)
		}()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-report:
			fmt.Fprintf(out, "simulate: %s\n", f.summary())
		}
	}
}

// StatusTopic is the topic of the devices' periodic status reports.
const StatusTopic = "status"

// statusReport is the JSON payload of a status report.
type statusReport struct {
	Device   string    `json:"device"`
	Group    string    `json:"group"`
	Executor string    `json:"executor"`
	At       time.Time `json:"at"`
}

// publishStatus makes every connected device of devs (ids idPrefix + index)
// publish a status report every period, until ctx ends. Each publish waits at most a
// period (and 5 s) for its stream's send queue.
func (f *fleet) publishStatus(ctx context.Context, devs []*device.Device, idPrefix string, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	wait := min(every, 5*time.Second)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for i, d := range devs {
			f.mu.Lock()
			st, group, executor := f.state[i], f.group[i], f.executor[i]
			f.mu.Unlock()
			if st != device.Connected {
				continue
			}
			payload, err := json.Marshal(statusReport{Device: deviceID(idPrefix, i), Group: group, Executor: executor, At: time.Now().UTC()})
			if err != nil {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, wait)
			err = d.Publish(pctx, StatusTopic, payload, "application/json")
			cancel()
			if err == nil {
				f.mu.Lock()
				f.published++
				f.mu.Unlock()
			}
			if ctx.Err() != nil {
				return
			}
		}
	}
}

// deviceConfig builds the SDK config of device i.
func deviceConfig(cfg Config, i int, cc grpc.ClientConnInterface, f *fleet, log *slog.Logger) device.Config {
	dc := device.DefaultConfig()
	dc.ControlPlaneConn = cc
	dc.TLS = cfg.TLS
	dc.DeviceID = deviceID(cfg.IDPrefix, i)
	dc.Spec = device.Spec{Model: "generic", Firmware: "1.0.0"}
	if len(cfg.Models) > 0 {
		dc.Spec.Model = cfg.Models[i%len(cfg.Models)]
	}
	if cfg.Tenants > 0 {
		dc.TenantID = fmt.Sprintf("tenant-%d", i%cfg.Tenants)
	}
	if len(cfg.Services) > 0 {
		if set := cfg.Services[i%len(cfg.Services)]; set != "" {
			dc.Services = strings.Split(set, "+")
		}
	}
	if cfg.Backoff.BaseDelay > 0 || cfg.Backoff.MaxDelay > 0 {
		b := backoff.DefaultConfig
		if cfg.Backoff.BaseDelay > 0 {
			b.BaseDelay = cfg.Backoff.BaseDelay
		}
		if cfg.Backoff.MaxDelay > 0 {
			b.MaxDelay = max(cfg.Backoff.MaxDelay, b.BaseDelay)
		}
		dc.Backoff = b
	}
	if cfg.EnrollmentID != "" {
		dc.SymmetricKey = &device.SymmetricKey{EnrollmentID: cfg.EnrollmentID, DeviceKey: device.DeriveDeviceKey(cfg.EnrollmentKey, dc.DeviceID)}
	}
	// Thousands of devices share this process, each with its own
	// connection: transport buffers of 8 KiB instead of grpc-go's 32 KiB
	// (a device's frames are small; larger ones take more reads) keep a
	// simulated device near what a real one costs its executor.
	dc.DialOptions = []grpc.DialOption{grpc.WithReadBufferSize(simBufferSize), grpc.WithWriteBufferSize(simBufferSize)}
	if cfg.Tracing != nil {
		dc.TracerProvider = cfg.Tracing.TracerProvider()
		dc.DialOptions = append(dc.DialOptions, cfg.Tracing.DialOptions()...)
	}
	dc.Logger = log
	dc.OnStateChange = func(sc device.StateChange) {
		f.mu.Lock()
		f.state[i] = sc.To
		if sc.To == device.Connected {
			f.group[i], f.executor[i] = sc.GroupID, sc.ExecutorID
			f.connects++
		}
		f.mu.Unlock()
	}
	return dc
}

// deviceID is the id of device i.
func deviceID(prefix string, i int) string { return fmt.Sprintf("%s%06d", prefix, i) }
