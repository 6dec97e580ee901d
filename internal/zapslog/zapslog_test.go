package zapslog_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/berthproject/berth/internal/zapslog"
)

func TestWarnAndAboveReachSlog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	z := zapslog.New(log, zapcore.WarnLevel).Named("etcd-client").With(zap.String("endpoint", "127.0.0.1:2379"))
	z.Info("quiet")
	z.Debug("quieter")
	z.Warn("retrying of unary invoker failed", zap.Int("attempt", 3))
	z.Error("lost leader")
	out := buf.String()
	if strings.Contains(out, "quiet") {
		t.Errorf("info/debug entries reached slog:\n%s", out)
	}
	for _, want := range []string{"level=WARN", "retrying of unary invoker failed", "attempt=3", "endpoint=127.0.0.1:2379", "logger=etcd-client", "level=ERROR", "lost leader"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestSlogLevelFilters(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError}))
	z := zapslog.New(log, zapcore.WarnLevel)
	z.Warn("below the handler's level")
	if buf.Len() != 0 {
		t.Errorf("a warn reached an error-level handler: %s", buf.String())
	}
	if zapslog.New(nil, zapcore.WarnLevel).Core().Enabled(zapcore.ErrorLevel) {
		t.Error("nil slog logger: want a no-op zap logger")
	}
}
