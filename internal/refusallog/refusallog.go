// Package refusallog logs refusals (of credentials, of bad frames) at warn
// level without letting a flood of them flood the log: at most one line
// per reason per interval, carrying how many refusals of that reason were
// not logged since the previous line, and a count of every refusal by
// reason for the servers' stats.
package refusallog

import (
	"log/slog"
	"sync"
	"time"
)

// DefaultInterval is the least time between two lines of one reason.
const DefaultInterval = time.Second

// maxReasons bounds the reasons tracked; reasons are meant to be a few
// fixed words, and any beyond this are logged and counted as "other".
const maxReasons = 64

// Log counts refusals and logs them, rate-limited. The zero value is not
// usable; use New. It is safe for concurrent use.
type Log struct {
	log   *slog.Logger
	msg   string
	every time.Duration
	now   func() time.Time

	mu      sync.Mutex
	reasons map[string]*reason
}

type reason struct {
	total      uint64
	suppressed uint64
	last       time.Time // zero: never logged
}

// New returns a Log writing lines of message msg (such as "authentication
// refused") to log (nil: discarded), at most one per reason every interval
// (0: DefaultInterval); now is the clock (nil: time.Now).
func New(log *slog.Logger, msg string, interval time.Duration, now func() time.Time) *Log {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	if now == nil {
		now = time.Now
	}
	return &Log{log: log, msg: msg, every: interval, now: now, reasons: map[string]*reason{}}
}

// Refused counts one refusal of the given reason (a few fixed words, such
// as "assignment token invalid") and logs it at warn level with attrs
// (slog key-value pairs: never a credential) unless a line of the same
// reason was written less than the interval ago. A nil Log does nothing.
func (l *Log) Refused(why string, attrs ...any) {
	if l == nil {
		return
	}
	now := l.now()
	l.mu.Lock()
	r, ok := l.reasons[why]
	if !ok {
		if len(l.reasons) >= maxReasons {
			why = "other"
			r = l.reasons[why]
		}
		if r == nil {
			r = &reason{}
			l.reasons[why] = r
		}
	}
	r.total++
	if !r.last.IsZero() && now.Sub(r.last) < l.every {
		r.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := r.suppressed
	r.suppressed, r.last = 0, now
	l.mu.Unlock()
	args := append([]any{"reason", why, "suppressed", suppressed}, attrs...)
	l.log.Warn(l.msg, args...)
}

// Counts returns the refusals so far, by reason (none for a nil Log).
func (l *Log) Counts() map[string]uint64 {
	if l == nil {
		return map[string]uint64{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]uint64, len(l.reasons))
	for k, r := range l.reasons {
		out[k] = r.total
	}
	return out
}
