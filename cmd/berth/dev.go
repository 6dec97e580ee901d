package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berthproject/berth/internal/devcluster"
)

func newDevCmd(g *globals) *cobra.Command {
	cfg := devcluster.DefaultConfig()
	rb := rebalanceFlags{on: true, cfg: *cfg.Replica.Rebalance}
	var insecure, printEnv bool
	ctxFile := contextPath()
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run an all-in-one cluster: embedded etcd, a control plane, two groups of two executors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			cfg.Replica.Rebalance = rb.config()
			cfg.TLS = !insecure
			tr, stopTracing, err := startTracing(cmd.Context(), "berth-dev", log)
			if err != nil {
				return err
			}
			defer stopTracing()
			cfg.Tracing = tr
			var written *devContext
			defer func() {
				if written != nil {
					removeContext(ctxFile, *written)
				}
			}()
			return devcluster.Run(cmd.Context(), cfg, log, func(info devcluster.Info) {
				ids := make([]string, 0, len(info.Executors))
				for id := range info.Executors {
					ids = append(ids, id)
				}
				sort.Strings(ids)
				var ex []string
				for _, id := range ids {
					ex = append(ex, id+"="+info.Executors[id])
				}
				ca := "none (plaintext: --insecure)"
				if info.CAFile != "" {
					ca = info.CAFile
				}
				opsURL := "none"
				if info.Ops != "" {
					opsURL = info.Ops
				}
				fmt.Fprintf(g.stdout, "berth dev ready: controlplane=%s etcd=%s executors=%s ops=%s public-key=%s ca=%s api-key-file=%s enrollment=open (any caller may Assign any device id)\n",
					info.ControlPlane, info.Etcd, strings.Join(ex, ","), opsURL, info.PublicKeyFile, ca, info.APIKeyFile)
				dc := devContext{ControlPlane: info.ControlPlane, CA: info.CAFile, APIKeyFile: info.APIKeyFile, Etcd: info.Etcd,
					PublicKeyFile: info.PublicKeyFile, WrittenBy: fmt.Sprintf("berth dev (pid %d)", os.Getpid())}
				if ctxFile != "" {
					if err := writeContext(ctxFile, dc); err != nil {
						log.Warn("berth ctl will need flags: the context file was not written", "file", ctxFile, "err", err)
					} else {
						written = &dc
						fmt.Fprintf(g.stdout, "berth dev context: %s (berth ctl and berth simulate need no flags; removed on exit)\n", ctxFile)
					}
				}
				if printEnv {
					for _, l := range dc.exportLines() {
						fmt.Fprintln(g.stdout, l)
					}
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "", "where etcd keeps its data (default: a temporary directory, removed on exit)")
	f.StringVar(&cfg.Listen, "listen", cfg.Listen, "control plane address")
	f.IntVar(&cfg.Groups, "groups", cfg.Groups, "number of processing groups")
	f.IntVar(&cfg.ExecutorsPerGroup, "executors-per-group", cfg.ExecutorsPerGroup, "executors in each group")
	f.IntVar(&cfg.GroupCapacity, "group-capacity", cfg.GroupCapacity, "devices each group is sized for")
	f.StringVar(&cfg.Ops.Addr, "ops-listen", cfg.Ops.Addr, "address of the operations HTTP listener (/metrics, /healthz, /readyz); HTTPS unless --insecure, plaintext only on loopback (empty: none)")
	f.BoolVar(&cfg.Ops.Pprof, "pprof", false, "also serve /debug/pprof/* on the operations listener")
	f.BoolVar(&insecure, "insecure", false, "serve plaintext instead of TLS with a throwaway CA (made in --data-dir/tls, or reused from there)")
	f.StringVar(&ctxFile, "context-file", ctxFile, "where to write the context berth ctl reads (control plane address, CA and API key file paths; never the key), mode 0600; empty: none ($"+contextEnv+" sets the default)")
	f.BoolVar(&printEnv, "print-env", false, "also print export BERTH_…=… lines for the shell (addresses and file paths; never the key)")
	rb.register(f)
	return cmd
}
