package device

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Defaults used by [DefaultConfig] and for zero fields of a [Config].
const (
	// DefaultMessageBuffer is the capacity of the Messages channel.
	DefaultMessageBuffer = 64
	// DefaultHelloTimeout bounds opening a stream: dial, Hello, Welcome.
	DefaultHelloTimeout = 10 * time.Second
	// DefaultAssignTimeout bounds one Assign call.
	DefaultAssignTimeout = 10 * time.Second
	// DefaultCloseTimeout bounds the wait for an executor to end a stream
	// the device half-closed.
	DefaultCloseTimeout = 2 * time.Second
)

// maxDeviceIDLen is the longest device id the control plane accepts.
const maxDeviceIDLen = 128

// Config configures a [Device]. Only DeviceID and one of ControlPlane or
// ControlPlaneConn are required; zero optional fields take the defaults of
// [DefaultConfig].
type Config struct {
	// ControlPlane is the control plane's gRPC target (host:port or any
	// target grpc.NewClient accepts). Ignored when ControlPlaneConn is set.
	ControlPlane string
	// ControlPlaneConn, when set, is used for Assign instead of dialling
	// ControlPlane, so that many devices (a simulator) can share one
	// connection. The Device never closes a connection it did not create.
	ControlPlaneConn grpc.ClientConnInterface

	// DeviceID is the stable identity of the device: 1 to 128 bytes of
	// [A-Za-z0-9._:@-].
	DeviceID string
	// Spec describes the device's hardware and software. Optional.
	Spec Spec
	// TenantID is the tenant the device belongs to. Optional.
	TenantID string
	// UserID is the user the device is registered to. Optional.
	UserID string
	// Services are the services the device wants to use. Optional.
	Services []string
	// SymmetricKey, when set, signs every Assign with the device's key
	// under a symmetric-key enrollment. A device of an x509 enrollment
	// instead passes its client certificate in DialOptions (TLS
	// credentials); with neither, only a control plane with open
	// enrollment assigns it.
	SymmetricKey *SymmetricKey

	// Backoff shapes the delays between failed attempts and the gRPC
	// transport's own reconnect backoff. The zero value means
	// backoff.DefaultConfig. When an AssignResponse carries ReconnectHints,
	// the hints are used instead (field by field, for the fields they set).
	Backoff backoff.Config
	// TLS, when set, makes the Device reach the control plane and its
	// executors over TLS with it: RootCAs are the CAs the servers'
	// certificates chain to, and Certificates (or GetClientCertificate) the
	// device's own certificate for mTLS. An executor's certificate is
	// checked against the name the Assign answer gives for it
	// (Endpoint.tls_server_name), or its address's host. Nil: plaintext.
	TLS *tls.Config
	// DialOptions are appended to the SDK's dial options (transport
	// credentials, keepalive, connect parameters), so they override them.
	// They apply to every connection the Device
	// creates: the control plane's (unless ControlPlaneConn is set) and the
	// executors'.
	DialOptions []grpc.DialOption
	// TracerProvider, when set, traces each message handed to the
	// application: a "device.message" span, the child of the trace context
	// the executor sends with the message (the Send's trace), ended by its
	// Ack or Reply (Message.Context gives it to the application). Nil: no
	// spans. Add otelgrpc's client stats handler to DialOptions to trace
	// the Device's own calls too.
	TracerProvider trace.TracerProvider
	// MessageBuffer is the capacity of the channel returned by
	// Device.Messages. Zero means DefaultMessageBuffer.
	MessageBuffer int
	// OnStateChange, when set, is called for every state change. It is
	// called synchronously from the Device's run goroutine, in order: it must
	// return quickly, must not block and must not call Device.Close.
	OnStateChange func(StateChange)
	// Logger receives the SDK's logs. Nil discards them.
	Logger *slog.Logger
	// HelloTimeout bounds opening one stream to one executor: connecting,
	// sending Hello and receiving Welcome. Zero means DefaultHelloTimeout.
	HelloTimeout time.Duration
	// AssignTimeout bounds one Assign call. Zero means DefaultAssignTimeout.
	AssignTimeout time.Duration
	// CloseTimeout bounds a clean end of a stream (Device.Close, or the old
	// stream after a move): the device half-closes it, so that every frame
	// it sent before reaches the executor, and waits this long for the
	// executor to end it before cancelling. Zero means DefaultCloseTimeout.
	CloseTimeout time.Duration
}

// DefaultConfig returns a Config with every optional field set to its
// default. The caller fills in DeviceID and ControlPlane (or
// ControlPlaneConn).
func DefaultConfig() Config {
	return Config{
		Backoff:       backoff.DefaultConfig,
		MessageBuffer: DefaultMessageBuffer,
		HelloTimeout:  DefaultHelloTimeout,
		AssignTimeout: DefaultAssignTimeout,
		CloseTimeout:  DefaultCloseTimeout,
	}
}

// withDefaults returns c with its zero optional fields set to the defaults.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Backoff == (backoff.Config{}) {
		c.Backoff = d.Backoff
	}
	if c.MessageBuffer == 0 {
		c.MessageBuffer = d.MessageBuffer
	}
	if c.HelloTimeout == 0 {
		c.HelloTimeout = d.HelloTimeout
	}
	if c.AssignTimeout == 0 {
		c.AssignTimeout = d.AssignTimeout
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = d.CloseTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// ErrInvalidConfig is wrapped by every error [Config.Validate] returns.
var ErrInvalidConfig = errors.New("device: invalid config")

// Validate reports the first problem of c, wrapping [ErrInvalidConfig]. Zero
// optional fields are valid: they stand for their defaults.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.ControlPlane == "" && c.ControlPlaneConn == nil:
		return bad("ControlPlane or ControlPlaneConn is required")
	case c.DeviceID == "":
		return bad("DeviceID is required")
	case len(c.DeviceID) > maxDeviceIDLen:
		return bad("DeviceID is %d bytes, at most %d allowed", len(c.DeviceID), maxDeviceIDLen)
	case !validIDChars(c.DeviceID):
		return bad("DeviceID %q: want only [A-Za-z0-9._:@-]", c.DeviceID)
	case c.MessageBuffer < 0:
		return bad("MessageBuffer must not be negative")
	case c.HelloTimeout < 0:
		return bad("HelloTimeout must not be negative")
	case c.AssignTimeout < 0:
		return bad("AssignTimeout must not be negative")
	case c.CloseTimeout < 0:
		return bad("CloseTimeout must not be negative")
	}
	if c.Backoff != (backoff.Config{}) {
		if err := validBackoff(c.Backoff); err != nil {
			return bad("Backoff: %v", err)
		}
	}
	if c.SymmetricKey != nil {
		if err := c.SymmetricKey.validate(); err != nil {
			return bad("%v", err)
		}
	}
	return nil
}

// validBackoff checks that b describes a sane exponential backoff.
func validBackoff(b backoff.Config) error {
	switch {
	case b.BaseDelay <= 0:
		return errors.New("its BaseDelay must be positive")
	case b.MaxDelay < b.BaseDelay:
		return errors.New("its MaxDelay must not be below BaseDelay")
	case b.Multiplier < 1:
		return errors.New("its Multiplier must be at least 1")
	case b.Jitter < 0 || b.Jitter > 1:
		return errors.New("its Jitter must be within [0, 1]")
	}
	return nil
}

// validIDChars reports whether s uses only the characters the control plane
// accepts in ids ([A-Za-z0-9._:@-]). It is spelled out here rather than taken
// from the registry package so that the SDK does not link the etcd client.
func validIDChars(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == ':', c == '@', c == '-':
		default:
			return false
		}
	}
	return true
}
