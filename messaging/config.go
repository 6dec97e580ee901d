package messaging

import (
	"errors"
	"fmt"
	"time"

	"github.com/berthproject/berth/registry"
)

// Config tunes MessagingService.
type Config struct {
	// QueuePerDevice bounds the messages waiting for one device, and
	// QueueBytesPerDevice what they cost etcd (key and stored value).
	QueuePerDevice, QueueBytesPerDevice int64
	// QueueTotal bounds the messages waiting for all devices, and
	// QueueTotalBytes what they cost etcd. Keep QueueTotalBytes well inside
	// etcd's quota (--quota-backend-bytes, 2 GiB by default), so that
	// assignment and presence writes always have room: the default is a
	// quarter of it.
	QueueTotal, QueueTotalBytes int64
	// DefaultTTL is how long a queued message waits when Send names no TTL;
	// MaxTTL is the longest TTL accepted.
	DefaultTTL, MaxTTL time.Duration
	// SendTimeout bounds an ONLINE_ONLY delivery when the caller set no
	// deadline; CallTimeout does the same for Call.
	SendTimeout, CallTimeout time.Duration
	// QueueAttemptTimeout bounds the immediate delivery attempt of a QUEUE
	// Send to a connected device; when it fails the message stays queued.
	QueueAttemptTimeout time.Duration
	// RetryAfter is the retry hint of the refusals that carry one (queue
	// full, registry or executor unavailable).
	RetryAfter time.Duration
	// SubscriberBuffer bounds the publishes waiting for one subscriber;
	// beyond it they are dropped for that subscriber and counted.
	SubscriberBuffer int
	// SweepInterval is how often expired queued messages are removed.
	SweepInterval time.Duration
	// ResubscribeMaxDelay caps the backoff between attempts to follow an
	// executor's publishes.
	ResubscribeMaxDelay time.Duration
	// ResyncInterval is how often the executors followed for subscribers
	// are compared with the registry snapshot.
	ResyncInterval time.Duration
	// PresenceCacheSize bounds the devices whose presence a replica
	// remembers; PresenceCacheTTL is how long it trusts what it read (a
	// failed delivery drops the entry at once).
	PresenceCacheSize int
	PresenceCacheTTL  time.Duration
	// PresenceReadTimeout bounds the read of a device's presence record
	// when the replica knows where the device last was (a cached route
	// past its TTL): if the registry cannot answer in time (etcd
	// unreachable), or has no record (one lost with its executor's lease
	// while etcd was away), the send tries that executor, which knows its
	// own streams, before answering.
	PresenceReadTimeout time.Duration
	// RedeliverMinDelay and RedeliverMaxDelay bound the wait before each
	// round of redelivery of a connected device's queue after a failed
	// attempt; RedeliverAttempts is how many failed rounds end it,
	// RedeliverPending how many devices may wait for one, and
	// RedeliverWorkers how many rounds run at once.
	RedeliverMinDelay, RedeliverMaxDelay time.Duration
	RedeliverAttempts, RedeliverPending  int
	RedeliverWorkers                     int
	// InFlightPerDevice bounds the deliveries this replica has under way
	// to one device (sent to its executor and not yet acknowledged), and
	// InFlightBytesPerDevice their payload bytes; past either, a delivery
	// is refused at once with RESOURCE_EXHAUSTED and a retry hint (a QUEUE
	// message stays stored). One message larger than the byte bound goes
	// when nothing else is in flight to its device. See inflight.go.
	InFlightPerDevice, InFlightBytesPerDevice int64
}

// Bounds of MessagingService input.
const (
	maxPayload        = 256 << 10
	maxContentType    = 128
	maxFilterEntries  = 1000
	maxFilterValueLen = 128
	maxReplyErrorLen  = 1024
	// minQueueBytes is the least a bound in bytes may be: room for one
	// queued message of maxPayload (base64 in its JSON record) and more.
	minQueueBytes = 1 << 20
)

// DefaultConfig returns the settings of `berth controlplane`.
func DefaultConfig() Config {
	return Config{
		QueuePerDevice:      1000,
		QueueBytesPerDevice: 16 << 20,
		QueueTotal:          1_000_000,
		QueueTotalBytes:     512 << 20,
		DefaultTTL:          time.Hour,
		MaxTTL:              7 * 24 * time.Hour,
		SendTimeout:         10 * time.Second,
		CallTimeout:         30 * time.Second,
		QueueAttemptTimeout: 5 * time.Second,
		RetryAfter:          time.Second,
		SubscriberBuffer:    1024,
		SweepInterval:       time.Minute,
		ResubscribeMaxDelay: 10 * time.Second,
		ResyncInterval:      time.Second,
		PresenceCacheSize:   1 << 20,
		PresenceCacheTTL:    5 * time.Minute,
		PresenceReadTimeout: 2 * time.Second,
		RedeliverMinDelay:   500 * time.Millisecond,
		RedeliverMaxDelay:   30 * time.Second,
		RedeliverAttempts:   10,
		RedeliverPending:    100_000,
		RedeliverWorkers:    32,
		// Four messages of the largest payload; 8 deliveries leave most
		// of the 100 streams of a replica's connection to an executor to
		// the executor's other devices while a dozen devices do not read.
		InFlightPerDevice:      8,
		InFlightBytesPerDevice: 1 << 20,
	}
}

// Validate checks c.
func (c Config) Validate() error {
	var errs []error
	if c.QueuePerDevice <= 0 || c.QueueTotal <= 0 {
		errs = append(errs, fmt.Errorf("queue limits %d per device, %d total: want > 0", c.QueuePerDevice, c.QueueTotal))
	}
	// Each bound in bytes must hold at least one message of the largest
	// payload; the total one in each of its shards.
	if c.QueueBytesPerDevice < minQueueBytes || c.QueueTotalBytes < minQueueBytes*registry.QueueShards {
		errs = append(errs, fmt.Errorf("queue bytes %d per device, %d total: want at least %d and %d", c.QueueBytesPerDevice, c.QueueTotalBytes, minQueueBytes, minQueueBytes*registry.QueueShards))
	}
	if c.DefaultTTL <= 0 || c.MaxTTL < c.DefaultTTL {
		errs = append(errs, fmt.Errorf("TTL default %v, max %v: want 0 < default <= max", c.DefaultTTL, c.MaxTTL))
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"send timeout", c.SendTimeout}, {"call timeout", c.CallTimeout}, {"queue attempt timeout", c.QueueAttemptTimeout},
		{"retry after", c.RetryAfter}, {"sweep interval", c.SweepInterval},
		{"resubscribe max delay", c.ResubscribeMaxDelay}, {"resync interval", c.ResyncInterval},
		{"presence cache TTL", c.PresenceCacheTTL}, {"presence read timeout", c.PresenceReadTimeout},
		{"redeliver min delay", c.RedeliverMinDelay},
	} {
		if d.d <= 0 {
			errs = append(errs, fmt.Errorf("%s %v: want > 0", d.name, d.d))
		}
	}
	if c.SubscriberBuffer <= 0 {
		errs = append(errs, fmt.Errorf("subscriber buffer %d: want > 0", c.SubscriberBuffer))
	}
	if c.PresenceCacheSize < 0 {
		errs = append(errs, fmt.Errorf("presence cache size %d: want >= 0 (0: no cache)", c.PresenceCacheSize))
	}
	if c.RedeliverMaxDelay < c.RedeliverMinDelay {
		errs = append(errs, fmt.Errorf("redeliver max delay %v: want >= the min delay %v", c.RedeliverMaxDelay, c.RedeliverMinDelay))
	}
	if c.RedeliverAttempts <= 0 || c.RedeliverPending <= 0 || c.RedeliverWorkers <= 0 {
		errs = append(errs, fmt.Errorf("redeliver attempts %d, pending %d, workers %d: want > 0", c.RedeliverAttempts, c.RedeliverPending, c.RedeliverWorkers))
	}
	if c.InFlightPerDevice <= 0 || c.InFlightBytesPerDevice <= 0 {
		errs = append(errs, fmt.Errorf("in flight per device %d deliveries, %d bytes: want > 0", c.InFlightPerDevice, c.InFlightBytesPerDevice))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("messaging: invalid config: %w", err)
	}
	return nil
}
