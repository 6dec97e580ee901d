package bench_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/berthproject/berth/bench"
	"github.com/berthproject/berth/registry"
)

// childEnv makes the test binary a bench.Serve child instead of running
// tests: RunStreams re-executes it the way `berth bench streams` re-executes
// berth.
const childEnv = "BERTH_BENCH_TEST_CHILD"

// hopChildEnv makes the test binary a bench hop child.
const hopChildEnv = "BERTH_BENCH_TEST_HOP_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(serveChild(os.Args[1:]))
	}
	if os.Getenv(hopChildEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := bench.RunHopChild(ctx, os.Args[1:])
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// serveChild is `berth bench serve` for the test binary.
func serveChild(args []string) int {
	cfg, err := bench.ParseServeArgs(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var reg *registry.Registry
	if cfg.NeedsRegistry() {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{cfg.Etcd}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer cli.Close()
		reg = registry.New(cli, cfg.Prefix)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := bench.Serve(ctx, cfg, reg, os.Stdin, os.Stdout, log); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
