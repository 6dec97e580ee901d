package executor

import (
	"fmt"
	"unicode"
	"unicode/utf8"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
)

// Bounds of a device's Publish, as MessagingService bounds a Send.
const (
	// MaxPublishPayload is the largest payload of a Publish, in bytes.
	MaxPublishPayload = 256 << 10
	// MaxPublishTopic and MaxPublishContentType bound the topic and the
	// content type, in bytes.
	MaxPublishTopic       = 128
	MaxPublishContentType = 128
	// MaxRefusedPublishes is how many refused publishes one stream may
	// send: the next closes it with INVALID_ARGUMENT.
	MaxRefusedPublishes = 10
)

// checkPublish says why p is refused (a reason of a few fixed words and
// the detail), or returns "" for a publish within bounds. A topic is
// valid UTF-8 without control characters (it reaches subscribers' filters
// and logs); it may be empty.
func checkPublish(p *executorv1.Publish) (string, error) {
	switch t, ct := p.GetTopic(), p.GetContentType(); {
	case len(p.GetPayload()) > MaxPublishPayload:
		return "publish payload too large", fmt.Errorf("publish payload is %d bytes; at most %d", len(p.GetPayload()), MaxPublishPayload)
	case len(t) > MaxPublishTopic:
		return "publish topic too long", fmt.Errorf("publish topic is %d bytes; at most %d", len(t), MaxPublishTopic)
	case !printable(t):
		return "publish topic invalid", fmt.Errorf("publish topic %q: want UTF-8 without control characters", t)
	case len(ct) > MaxPublishContentType:
		return "publish content type too long", fmt.Errorf("publish content_type is %d bytes; at most %d", len(ct), MaxPublishContentType)
	case !printable(ct):
		return "publish content type invalid", fmt.Errorf("publish content_type %q: want UTF-8 without control characters", ct)
	}
	return "", nil
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// refusePublish drops a publish out of bounds: it reaches no subscriber
// and no hook, is counted (Stats.PublishesRefused) and logged at warn,
// rate-limited. The stream stays, unless it has sent MaxRefusedPublishes
// refused ones already: then the error closes it.
func (s *Server) refusePublish(ss *session, why string, detail error) error {
	s.stats.publishesRefused.Add(1)
	ss.publishesRefused++
	s.publishLog.Refused(why, "device", ss.deviceID, "session", ss.id, "err", detail.Error())
	if ss.publishesRefused > MaxRefusedPublishes {
		return streamErrorf(errProtocol, "%d publishes refused on this stream, the last: %v", ss.publishesRefused, detail)
	}
	return nil
}
