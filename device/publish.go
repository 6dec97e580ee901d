package device

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// ErrInvalidPublish means a publish is out of the executor's bounds;
// nothing was sent.
var ErrInvalidPublish = errors.New("device: invalid publish")

// The executor's bounds of a publish (executor.MaxPublish…).
const (
	// MaxPublishPayload is the largest payload of a publish, in bytes.
	MaxPublishPayload = 256 << 10
	// maxPublishText bounds the topic and the content type, in bytes.
	maxPublishText = 128
)

// checkPublish refuses what the executor would refuse.
func checkPublish(topic string, payload []byte, contentType string) error {
	if len(payload) > MaxPublishPayload {
		return fmt.Errorf("%w: payload is %d bytes; at most %d", ErrInvalidPublish, len(payload), MaxPublishPayload)
	}
	for _, f := range []struct{ name, v string }{{"topic", topic}, {"content type", contentType}} {
		if len(f.v) > maxPublishText {
			return fmt.Errorf("%w: %s is %d bytes; at most %d", ErrInvalidPublish, f.name, len(f.v), maxPublishText)
		}
		if !utf8.ValidString(f.v) || hasControl(f.v) {
			return fmt.Errorf("%w: %s %q: want UTF-8 without control characters", ErrInvalidPublish, f.name, f.v)
		}
	}
	return nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) {
			return true
		}
	}
	return false
}
