package device

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckPublish(t *testing.T) {
	tests := []struct {
		name, topic, contentType string
		payload                  int
		want                     string // "" for none
	}{
		{name: "largest", topic: strings.Repeat("t", 128), contentType: strings.Repeat("c", 128), payload: MaxPublishPayload},
		{name: "empty", want: ""},
		{name: "payload", payload: MaxPublishPayload + 1, want: "payload is 262145 bytes; at most 262144"},
		{name: "topic long", topic: strings.Repeat("t", 129), want: "topic is 129 bytes; at most 128"},
		{name: "topic control", topic: "a\tb", want: `topic "a\tb": want UTF-8 without control characters`},
		{name: "content type long", contentType: strings.Repeat("c", 129), want: "content type is 129 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkPublish(tt.topic, make([]byte, tt.payload), tt.contentType)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("checkPublish = %v; want nil", err)
			case tt.want != "" && (!errors.Is(err, ErrInvalidPublish) || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("checkPublish = %v; want ErrInvalidPublish with %q", err, tt.want)
			}
		})
	}
}
