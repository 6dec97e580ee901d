package executor

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
)

// FuzzCheckPublish: checkPublish never panics, and what it lets through
// to subscribers' filters and logs has a topic and a content type of at
// most 128 bytes of UTF-8 without control characters, and a payload within
// MaxPublishPayload; what it refuses comes with a reason.
func FuzzCheckPublish(f *testing.F) {
	f.Fuzz(func(t *testing.T, topic, contentType string, size uint32) {
		p := &executorv1.Publish{Topic: topic, ContentType: contentType, Payload: make([]byte, size%(MaxPublishPayload+2))}
		why, err := checkPublish(p)
		if err != nil {
			if why == "" {
				t.Fatalf("refused (%v) without a reason", err)
			}
			return
		}
		if why != "" {
			t.Fatalf("reason %q without an error", why)
		}
		if len(p.Payload) > MaxPublishPayload {
			t.Fatalf("accepted a payload of %d bytes", len(p.Payload))
		}
		for _, s := range []string{topic, contentType} {
			if len(s) > 128 || !utf8.ValidString(s) || strings.IndexFunc(s, unicode.IsControl) >= 0 {
				t.Fatalf("accepted %q", s)
			}
		}
	})
}
