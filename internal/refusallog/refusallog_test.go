package refusallog_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/berthproject/berth/internal/refusallog"
)

func TestRefusedRateLimited(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
	now := time.Unix(1000, 0)
	l := refusallog.New(log, "authentication refused", time.Second, func() time.Time { return now })
	steps := []struct {
		advance time.Duration
		reason  string
	}{
		{0, "token invalid"},                      // logged
		{100 * time.Millisecond, "token invalid"}, // suppressed
		{100 * time.Millisecond, "token invalid"}, // suppressed
		{0, "token expired"},                      // another reason: logged
		{800 * time.Millisecond, "token invalid"}, // a second after the first line: logged, 2 suppressed
		{0, "token invalid"},                      // suppressed
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		l.Refused(s.reason, "peer", "10.0.0.1")
	}
	want := []string{
		`level=WARN msg="authentication refused" reason="token invalid" suppressed=0 peer=10.0.0.1`,
		`level=WARN msg="authentication refused" reason="token expired" suppressed=0 peer=10.0.0.1`,
		`level=WARN msg="authentication refused" reason="token invalid" suppressed=2 peer=10.0.0.1`,
	}
	if got := strings.Split(strings.TrimSpace(buf.String()), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	counts := l.Counts()
	if counts["token invalid"] != 5 || counts["token expired"] != 1 || len(counts) != 2 {
		t.Errorf("Counts() = %v; want 5 invalid, 1 expired", counts)
	}
}

// Reasons are bounded: past 64, refusals count as "other".
func TestReasonsBounded(t *testing.T) {
	l := refusallog.New(nil, "refused", 0, nil)
	for i := range 70 {
		l.Refused(fmt.Sprintf("reason-%d", i))
	}
	counts := l.Counts()
	if len(counts) != 65 || counts["other"] != 6 {
		t.Errorf("Counts() has %d reasons, other %d; want 65 and 6", len(counts), counts["other"])
	}
}
