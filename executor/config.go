package executor

import (
	"errors"
	"fmt"
	"net"
	"time"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/rpcserver"
	"github.com/berthproject/berth/registry"
)

// ErrInvalidConfig is wrapped by the errors of Config.Validate and New.
var ErrInvalidConfig = errors.New("executor: invalid config")

// Config tunes a Server. Start from DefaultConfig, then set ID, GroupID and
// Address.
type Config struct {
	// ID names the executor; unique in the cluster. It is the key of the
	// executor's registry record.
	ID string
	// GroupID is the processing group the executor serves. Tokens minted for
	// any other group are refused.
	GroupID string
	// Address is the host:port devices connect to, as written to the
	// registry (the advertised address, not necessarily the listen address).
	Address string
	// InternalAddress, when set, is the host:port control planes call
	// ExecutorInternalService at, as written to the registry: the
	// executor then serves that service only on a listener of its own
	// (Server.RunSplit), and refuses it on Address. Empty: Address serves
	// devices and control planes alike (Server.Run).
	InternalAddress string
	// TLSName, when set, says the executor serves TLS and names its
	// certificate: devices verify the executor by it (Assign's
	// Endpoint.tls_server_name). Empty: plaintext.
	TLSName string
	// Capacity is the most device streams admitted at once.
	Capacity int
	// HelloTimeout bounds the wait for a stream's first frame.
	HelloTimeout time.Duration
	// PingInterval is how often the executor pings each device; devices
	// learn it from Welcome.heartbeat_interval.
	PingInterval time.Duration
	// PingMisses closes a stream that sent nothing for PingMisses ping
	// intervals, with Goodbye{TIMEOUT}.
	PingMisses int
	// SendQueue is the number of frames queued per stream before the stream
	// is considered stuck and closed (see the package documentation).
	SendQueue int
	// DrainTimeout is how long a shutdown waits for redirected devices to
	// leave before it closes the streams that remain.
	DrainTimeout time.Duration
	// RedirectSpread is the max_delay of the Redirects sent while draining:
	// each device waits a random part of it before leaving, so that their
	// reconnects are spread. It is also the retry hint of the refusals for
	// capacity and draining.
	RedirectSpread time.Duration
	// SubscribeBuffer is the number of publishes buffered for each
	// ExecutorInternalService.Subscribe stream; when a subscriber's buffer
	// is full, new publishes are dropped for it (and counted), so that a
	// slow subscriber never slows the devices. 0 means 1024.
	SubscribeBuffer int
	// RPC tunes the gRPC server stack (message size limits, keepalive).
	RPC rpcserver.Config
	// Registration tunes the registry record's lease and writes. The
	// executor does not build its Registrar itself; this is where callers
	// keep the settings they build it with. The load reported is the sum of
	// the connected devices' weights, from their tokens.
	Registration registry.RegistrationConfig
	// Hooks receive what devices send upstream. Nil hooks are skipped.
	Hooks Hooks
}

// Hooks receive the frames devices send upstream. They are called on the
// receiving goroutine of the device's stream, one frame at a time in the
// order the device sent them: a slow hook slows that device's stream only.
// A hook that panics closes the stream with INTERNAL.
type Hooks struct {
	// OnAck is called for every Ack, with the device and the acknowledged
	// message id, and for every Reply (which acknowledges its message too).
	OnAck func(deviceID, messageID string)
	// OnPublish is called for every Publish. p belongs to the hook.
	OnPublish func(deviceID string, p *executorv1.Publish)
}

// defaultSubscribeBuffer is Config.SubscribeBuffer's default.
const defaultSubscribeBuffer = 1024

// DefaultConfig returns the settings used by `berth executor`; ID, GroupID
// and Address have no default.
func DefaultConfig() Config {
	return Config{
		Capacity:        10000,
		HelloTimeout:    5 * time.Second,
		PingInterval:    20 * time.Second,
		PingMisses:      3,
		SendQueue:       64,
		DrainTimeout:    30 * time.Second,
		RedirectSpread:  5 * time.Second,
		SubscribeBuffer: defaultSubscribeBuffer,
		RPC:             rpcserver.DefaultConfig(),
		Registration:    registry.DefaultRegistrationConfig(),
	}
}

// Validate checks c and says what is wrong with the first bad field. Errors
// wrap ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case !registry.ValidID(c.ID):
		return bad("ID %q: want 1-128 of [A-Za-z0-9._:@-]", c.ID)
	case !registry.ValidID(c.GroupID):
		return bad("GroupID %q: want 1-128 of [A-Za-z0-9._:@-]", c.GroupID)
	case c.Capacity <= 0:
		return bad("Capacity %d: must be positive", c.Capacity)
	case c.HelloTimeout <= 0:
		return bad("HelloTimeout %v: must be positive", c.HelloTimeout)
	case c.PingInterval <= 0:
		return bad("PingInterval %v: must be positive", c.PingInterval)
	case c.PingMisses < 1:
		return bad("PingMisses %d: must be at least 1", c.PingMisses)
	case c.SendQueue < 1:
		return bad("SendQueue %d: must be at least 1", c.SendQueue)
	case c.DrainTimeout < 0:
		return bad("DrainTimeout %v: must not be negative", c.DrainTimeout)
	case c.RedirectSpread < 0:
		return bad("RedirectSpread %v: must not be negative", c.RedirectSpread)
	case c.SubscribeBuffer < 0:
		return bad("SubscribeBuffer %d: must not be negative", c.SubscribeBuffer)
	case c.RPC.MaxRecvMsgSize <= 0 || c.RPC.MaxSendMsgSize <= 0:
		return bad("RPC message size limits (%d, %d): must be positive", c.RPC.MaxRecvMsgSize, c.RPC.MaxSendMsgSize)
	}
	if host, port, err := net.SplitHostPort(c.Address); err != nil || host == "" || port == "" {
		return bad("Address %q: want host:port", c.Address)
	}
	if c.InternalAddress != "" {
		if host, port, err := net.SplitHostPort(c.InternalAddress); err != nil || host == "" || port == "" {
			return bad("InternalAddress %q: want host:port", c.InternalAddress)
		}
		if c.InternalAddress == c.Address {
			return bad("InternalAddress %q: the same as Address; leave it empty to serve control planes on Address", c.InternalAddress)
		}
	}
	if err := c.Registration.Validate(); err != nil {
		return fmt.Errorf("%w: Registration: %w", ErrInvalidConfig, err)
	}
	return nil
}
