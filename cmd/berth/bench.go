package main

import (
	"fmt"
	"os"
	"runtime/debug"

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
	cmd.AddCommand(newBenchAssignCmd(g), newBenchStreamsCmd(g), newBenchServeCmd(g), newBenchBalanceCmd(g))
	cmd.AddCommand(newBenchRebalanceCmd(g))
	cmd.AddCommand(newBenchPushCmd(g), newBenchHopCmd(g))
	return cmd
}

func newBenchAssignCmd(g *globals) *cobra.Command {
	cfg := bench.DefaultAssignConfig()
	var inProcess bool
	cmd := &cobra.Command{
		Use:   "assign",
		Short: "Assign of known and new devices under a placement policy against a no-op RPC on the same server stack",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("finding the berth binary to start control planes with: %w", err)
			}
			if !inProcess {
				cfg.Command = []string{exe, "bench", "serve"}
				cfg.ChildStderr = g.stderr
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
	f.IntVar(&cfg.Rules, "rules", cfg.Rules, "label rules of the placement policy applied before measuring; all but the last match no benchmark device (0 keeps the built-in default)")
	f.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "rounds each case's time is split in; noop, assign-known and assign-known-sign take turns round by round")
	f.Float64Var(&cfg.PacedShare, "paced", cfg.PacedShare, "fraction of assign-known's peak rate at which noop and assign-known run again open loop (0 skips them)")
	f.BoolVar(&inProcess, "in-process", false, "run the control planes in this process, with etcd and the load, instead of a process each")
	f.BoolVar(&cfg.TLS, "tls", false, "run the TLS cases instead: noop and assign-mtls (each connection presents its own device certificate, enrollment closed) on a TLS control plane; --devices is not used")
	f.StringVar(&cfg.ProfileDir, "child-cpuprofile", "", "directory where each server process writes a CPU profile (controlplane.pprof, controlplane-caches-off.pprof, lean.pprof)")
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
	f.BoolVar(&cfg.TLS, "tls", false, "both kinds of server serve TLS; devices present a client certificate and berth's tokens are bound to it")
	f.IntVar(&cfg.Messages, "messages", 0, "after the idle measurement, send every device this many messages (each acked) and measure again; the baseline is then bare-push")
	f.IntVar(&cfg.PayloadSize, "payload-size", cfg.PayloadSize, "payload bytes of each message of --messages")
	f.StringVar(&cfg.ProfileDir, "profile-dir", "", "write every server's heap and goroutine profile into this directory at each measurement (all allocations sampled: slower; figures for the profiles only)")
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
			if cfg.NeedsRegistry() {
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

func newBenchBalanceCmd(g *globals) *cobra.Command {
	cfg := bench.DefaultBalanceConfig()
	cmd := &cobra.Command{
		Use:   "balance",
		Short: "Simulate placing devices on groups of unequal capacities: berth's placement with late counts and several replicas against baselines",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := bench.Balance(cmd.Context(), cfg, g.stdout)
			if err != nil {
				return err
			}
			if !res.Pass() {
				return fmt.Errorf("bench balance: a target was missed")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Devices, "devices", cfg.Devices, "devices assigned one by one")
	f.IntVar(&cfg.Groups, "groups", cfg.Groups, "groups, of capacities 5000 to 30000 scaled to the devices")
	f.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of device ids, replica choice and the random baselines")
	f.IntVar(&cfg.Heartbeat, "heartbeat", cfg.Heartbeat, "assignments between two counts of an executor")
	f.IntVar(&cfg.Replicas, "replicas", cfg.Replicas, "control plane replicas of the multi-replica case")
	f.IntVar(&cfg.Delay, "delay", cfg.Delay, "assignments before a replica learns of another's assignment")
	return cmd
}

func newBenchPushCmd(g *globals) *cobra.Command {
	cfg := bench.DefaultPushConfig()
	var gogc int
	var memLimit string
	cmd := &cobra.Command{
		Use:   "push",
		Short: "Send→ack throughput and latency to connected devices through a control plane and an executor, against a plain grpc-go server pushing to its own clients",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("finding the berth binary to start the children with: %w", err)
			}
			cfg.Command = []string{exe}
			cfg.ChildStderr = g.stderr
			if gogc != 0 {
				cfg.Env = append(cfg.Env, fmt.Sprintf("GOGC=%d", gogc))
				debug.SetGCPercent(gogc)
			}
			if memLimit != "" {
				cfg.Env = append(cfg.Env, "GOMEMLIMIT="+memLimit)
			}
			rep, err := bench.RunPush(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			return rep.Format(g.stdout)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Devices, "devices", cfg.Devices, "connected devices each system pushes to")
	f.DurationVar(&cfg.Duration, "duration", cfg.Duration, "measured time of each case")
	f.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "unmeasured time before each case")
	f.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "senders calling back to back (closed loop)")
	f.IntVar(&cfg.Conns, "conns", cfg.Conns, "client connections the senders share")
	f.IntVar(&cfg.Payload, "payload", cfg.Payload, "payload bytes per message")
	f.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "rounds each case's time is split in; bare and berth take turns round by round")
	f.Float64Var(&cfg.PacedShare, "paced", cfg.PacedShare, "fraction of berth's peak at which both systems run again open loop (0 skips it)")
	f.IntVar(&cfg.InFlight, "in-flight", cfg.InFlight, "devices connecting at once")
	f.StringVar(&cfg.ChildLogLevel, "server-log-level", cfg.ChildLogLevel, "log level of berth's server processes")
	f.IntVar(&gogc, "gogc", 400, "GOGC of this process and of every child (0 leaves the environment's)")
	f.StringVar(&memLimit, "gomemlimit", "", "GOMEMLIMIT of every child, for example 1GiB (empty: none)")
	f.StringVar(&cfg.ProfileDir, "child-cpuprofile", "", "directory where berth's control plane and executor write CPU profiles (controlplane.pprof, executor.pprof)")
	cmd.AddCommand(&cobra.Command{
		Use:                "child",
		Short:              "A child process of bench push: the bare server or the devices (internal)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			ccfg, err := bench.ParsePushChildArgs(args)
			if err != nil {
				return err
			}
			g.logLevel = "warn"
			log, err := g.logger()
			if err != nil {
				return err
			}
			return bench.RunPushChild(cmd.Context(), ccfg, cmd.InOrStdin(), g.stdout, log.With("role", ccfg.Role))
		},
	})
	return cmd
}

func newBenchRebalanceCmd(g *globals) *cobra.Command {
	cfg := bench.DefaultRebalanceConfig()
	cmd := &cobra.Command{
		Use:   "rebalance",
		Short: "Connect a fleet to some groups, add an empty group, and measure how the rebalancer fills it: time, moves against the minimum, reconnect rate",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("finding the berth binary to start the children with: %w", err)
			}
			cfg.ExecutorCommand = []string{exe, "bench", "serve"}
			cfg.SimulateCommand = []string{exe, "simulate"}
			cfg.ChildStderr = g.stderr
			rep, err := bench.RunRebalance(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			return rep.Format(g.stdout)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Devices, "devices", cfg.Devices, "devices of the fleet")
	f.IntVar(&cfg.Groups, "groups", cfg.Groups, "groups the fleet connects to before the empty one is added")
	f.IntVar(&cfg.Fleets, "fleets", cfg.Fleets, "berth simulate processes the devices are split over")
	f.Float64Var(&cfg.Rate, "rate", cfg.Rate, "rebalancer moves per second")
	f.Float64Var(&cfg.Thresholds.Rel, "rel-threshold", cfg.Thresholds.Rel, "relative threshold of the balance")
	f.Float64Var(&cfg.Thresholds.Abs, "abs-threshold", cfg.Thresholds.Abs, "absolute threshold of the balance, in devices")
	return cmd
}

func newBenchHopCmd(g *globals) *cobra.Command {
	cfg := bench.DefaultHopConfig()
	cmd := &cobra.Command{
		Use:   "hop",
		Short: "The latency floor of one loopback round trip between two processes, idle and with the cores kept busy by another process",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("finding the berth binary to start the children with: %w", err)
			}
			cfg.Command = []string{exe, "bench", "hop", "child"}
			rep, err := bench.RunHop(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return rep.Format(g.stdout)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Rate, "rate", cfg.Rate, "round trips per second, on a fixed schedule")
	f.DurationVar(&cfg.Duration, "duration", cfg.Duration, "measured time of each case")
	f.Float64SliceVar(&cfg.Loads, "loads", cfg.Loads, "shares of every core another process keeps busy, one case each (0: idle)")
	f.IntVar(&cfg.Payload, "payload", cfg.Payload, "bytes sent each way")
	cmd.AddCommand(&cobra.Command{
		Use:    "child",
		Short:  "A child process of bench hop: echo ADDR or burn SHARE (internal)",
		Hidden: true,
		Args:   cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return bench.RunHopChild(cmd.Context(), args)
		},
	})
	return cmd
}
