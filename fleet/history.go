package fleet

import (
	"math"
	"time"
)

// HistoryWindow is the time constant of the decaying counters of a
// History: a device doing n things per HistoryWindow, steadily, reads n.
const HistoryWindow = 24 * time.Hour

// History is a device's traffic and connects over about the last day, as
// counters that decay with a time constant of HistoryWindow, so that each
// reads as "about the last day" without storing events.
type History struct {
	// Connects, Messages and Bytes are decayed counts as of At: messages
	// and bytes both ways through the device's stream.
	Connects float64 `json:"connects"`
	Messages float64 `json:"messages"`
	Bytes    float64 `json:"bytes"`
	// At is when the counts were last brought up to date.
	At time.Time `json:"at"`
}

// Usage is what one stream did since it was last reported.
type Usage struct {
	// Connects is 1 for the report that ends a stream, else 0.
	Connects int
	// Messages and Bytes went through the stream, both ways.
	Messages, Bytes int64
}

// IsZero reports whether u adds nothing.
func (u Usage) IsZero() bool { return u == Usage{} }

// Add returns u + o.
func (u Usage) Add(o Usage) Usage {
	return Usage{Connects: u.Connects + o.Connects, Messages: u.Messages + o.Messages, Bytes: u.Bytes + o.Bytes}
}

// Decayed returns h as it reads at now. Earlier times than
// h.At leave it unchanged.
func (h History) Decayed(now time.Time) History {
	if h.At.IsZero() || !now.After(h.At) {
		return h
	}
	f := math.Exp(-float64(now.Sub(h.At)) / float64(HistoryWindow))
	return History{Connects: h.Connects * f, Messages: h.Messages * f, Bytes: h.Bytes * f, At: now}
}

// Fold returns h decayed to now with u added.
func (h History) Fold(u Usage, now time.Time) History {
	d := h.Decayed(now)
	d.At = now
	d.Connects += float64(u.Connects)
	d.Messages += float64(u.Messages)
	d.Bytes += float64(u.Bytes)
	return d
}
