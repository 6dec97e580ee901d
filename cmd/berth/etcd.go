package main

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/spf13/cobra"

	"github.com/berthproject/berth/internal/embedetcd"
)

// newEtcdCmd is `berth etcd`: a single-member etcd (the embedded server
// `berth dev` runs) in its own process, for fault tests and local
// experiments that stop, pause or kill etcd on its own. It serves loopback
// only, in plaintext, without authentication: never a production store.
func newEtcdCmd(g *globals) *cobra.Command {
	cfg := embedetcd.Config{ClientAddr: "127.0.0.1:2379"}
	var quotaMiB int64
	cmd := &cobra.Command{
		Use:   "etcd",
		Short: "Run a single-member etcd on loopback (for tests and experiments; not for production)",
		Long: "Run the embedded etcd of `berth dev` as its own process, on a loopback address, plaintext and without\n" +
			"authentication: a store for fault tests (pause it with SIGSTOP, kill it) and local experiments.\n" +
			"Production runs a real etcd cluster with TLS and authentication (see docs/deploy.md).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Dir == "" {
				return errors.New("--data-dir is required")
			}
			host, _, err := net.SplitHostPort(cfg.ClientAddr)
			if err != nil {
				return fmt.Errorf("--listen %q: %w", cfg.ClientAddr, err)
			}
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				return fmt.Errorf("--listen %q: berth etcd serves loopback addresses only (it has no TLS and no authentication)", cfg.ClientAddr)
			}
			if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
				return err
			}
			cfg.QuotaBackendBytes = quotaMiB << 20
			srv, err := embedetcd.Start(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer srv.Close()
			fmt.Fprintf(g.stdout, "berth etcd listening on %s\n", srv.Endpoint())
			select {
			case <-cmd.Context().Done():
				return nil
			case err := <-srv.Err():
				return fmt.Errorf("etcd: %w", err)
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Dir, "data-dir", "", "where etcd keeps its data (created if missing)")
	f.StringVar(&cfg.ClientAddr, "listen", cfg.ClientAddr, "loopback host:port for clients (port 0: a free one, printed)")
	f.Int64Var(&quotaMiB, "quota-mib", 0, "etcd's space quota in MiB (0: etcd's default, 2 GiB)")
	f.BoolVar(&cfg.UnsafeNoFsync, "unsafe-no-fsync", false, "skip fsync (faster; a machine crash may lose acknowledged writes: tests only)")
	return cmd
}
