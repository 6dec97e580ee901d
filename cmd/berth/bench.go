package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/berthproject/berth/bench"
	"github.com/berthproject/berth/registry"
)

func newBenchCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure berth: Assign throughput, and the memory an executor pays per idle stream",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newBenchAssignCmd(g), newBenchStreamsCmd(g), newBenchServeCmd(g))
	return cmd
}

func newBenchAssignCmd(g *globals) *cobra.Command {
	cfg := bench.DefaultAssignConfig()
	cmd := &cobra.Command{
		Use:   "assign",
		Short: "Assign of known and new devices against a no-op RPC on the same server stack, in one process",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			rep, err := bench.RunAssign(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			return rep.Format(g.stdout)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&cfg.Duration, "duration", cfg.Duration, "measured time of each case")
	f.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "unmeasured time before each case")
	f.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "concurrent callers")
	f.IntVar(&cfg.Devices, "devices", cfg.Devices, "known devices that assign-known cycles over")
	f.IntVar(&cfg.Conns, "conns", cfg.Conns, "client connections the callers share")
	return cmd
}

func newBenchStreamsCmd(g *globals) *cobra.Command {
	cfg := bench.DefaultStreamsConfig()
	cmd := &cobra.Command{
		Use:   "streams",
		Short: "Memory per idle device stream of an executor against a bare grpc-go server, each in its own process",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("finding the berth binary to start servers with: %w", err)
			}
			cfg.Command = []string{exe, "bench", "serve"}
			cfg.ChildStderr = g.stderr
			rep, err := bench.RunStreams(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			return rep.Format(g.stdout)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Devices, "devices", cfg.Devices, "idle streams each kind of server holds")
	f.IntVar(&cfg.Addrs, "addrs", cfg.Addrs, "server processes per kind, on loopback addresses 127.0.0.1 to 127.0.0.N")
	f.IntVar(&cfg.InFlight, "in-flight", cfg.InFlight, "streams being opened at once")
	f.StringVar(&cfg.ChildLogLevel, "server-log-level", cfg.ChildLogLevel, "log level of the server processes")
	return cmd
}

// newBenchServeCmd is the child process of `bench streams`; its flags are
// bench.ServeConfig's, parsed by package bench.
func newBenchServeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:                "serve",
		Short:              "Serve ExecutorService for bench streams (internal)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := bench.ParseServeArgs(args)
			if err != nil {
				return err
			}
			g.logLevel = cfg.LogLevel
			log, err := g.logger()
			if err != nil {
				return err
			}
			var reg *registry.Registry
			if cfg.Mode == bench.ModeBerth {
				g.etcd = cfg.Etcd
				cli, err := g.etcdClient()
				if err != nil {
					return err
				}
				defer cli.Close()
				reg = registry.New(cli, cfg.Prefix)
			}
			return bench.Serve(cmd.Context(), cfg, reg, cmd.InOrStdin(), g.stdout, log.With("mode", cfg.Mode))
		},
	}
}
