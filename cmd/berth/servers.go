package main

import (
	"crypto/ed25519"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/berthproject/berth/internal/node"
	"github.com/berthproject/berth/internal/rpcserver"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

func newControlPlaneCmd(g *globals) *cobra.Command {
	rcfg := node.DefaultReplicaConfig()
	cfg, mcfg := &rcfg.ControlPlane, &rcfg.Messaging
	var listen, keyFile string
	rb := rebalanceFlags{on: true, cfg: *rcfg.Rebalance}
	cmd := &cobra.Command{
		Use:   "controlplane",
		Short: "Serve Assign and messaging against an external etcd",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			key, err := token.ReadPrivateKeyFile(keyFile)
			if err != nil {
				return err
			}
			signer, err := token.NewSigner(key, nil)
			if err != nil {
				return err
			}
			cli, err := g.etcdClient()
			if err != nil {
				return err
			}
			defer cli.Close()
			rcfg.Rebalance = rb.config()
			r, err := node.NewReplica(rcfg, node.ReplicaDeps{Registry: registry.New(cli, g.prefix), Signer: signer, Log: log})
			if err != nil {
				return err
			}
			lis, err := rpcserver.Listen(listen)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "berth controlplane listening on %s\n", lis.Addr())
			if rcfg.OpenEnrollment {
				log.Warn("open enrollment: Assign takes device ids from callers without credentials")
			}
			return r.Run(cmd.Context(), lis)
		},
	}
	g.etcdFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:7070", "gRPC address")
	f.StringVar(&keyFile, "signing-key", "", "PEM Ed25519 private key for assignment tokens (berth keygen makes one)")
	f.DurationVar(&cfg.TokenTTL, "token-ttl", cfg.TokenTTL, "lifetime of assignment tokens")
	f.IntVar(&cfg.MaxInFlight, "max-in-flight", cfg.MaxInFlight, "concurrent Assigns before shedding with RESOURCE_EXHAUSTED")
	f.IntVar(&cfg.TokenCacheSize, "token-cache-size", cfg.TokenCacheSize, "devices whose still-fresh token is re-sent instead of signed again, about 400 bytes each (0: none)")
	f.IntVar(&cfg.LabelMemoSize, "label-memo-size", cfg.LabelMemoSize, "devices whose label is kept with the inputs it came from, about 1.3 KB each (0: none)")
	f.Int64Var(&mcfg.QueuePerDevice, "queue-per-device", mcfg.QueuePerDevice, "most queued messages waiting for one device")
	f.Int64Var(&mcfg.QueueTotal, "queue-total", mcfg.QueueTotal, "most queued messages waiting for all devices")
	f.StringVar(&cfg.ReplicaID, "replica-id", cfg.ReplicaID, "this replica's id, in assignment records and the rebalancer's election (default: random)")
	f.BoolVar(&rcfg.OpenEnrollment, "open-enrollment", false, "let Assign callers without credentials (no client certificate, no enrollment signature) in as any device id they name; off, only enrolled devices are assigned")
	rb.register(f)
	_ = cmd.MarkFlagRequired("signing-key")
	return cmd
}

func newExecutorCmd(g *globals) *cobra.Command {
	ncfg := node.DefaultExecutorConfig()
	cfg := &ncfg.Executor
	var listen string
	var keyFiles []string
	cmd := &cobra.Command{
		Use:   "executor",
		Short: "Hold device streams for one processing group",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			var keys []ed25519.PublicKey
			for _, f := range keyFiles {
				k, err := token.ReadPublicKeyFile(f)
				if err != nil {
					return err
				}
				keys = append(keys, k)
			}
			verifier, err := token.NewVerifier(nil, keys...)
			if err != nil {
				return err
			}
			lis, err := rpcserver.Listen(listen)
			if err != nil {
				return err
			}
			if cfg.Address == "" {
				cfg.Address = lis.Addr().String()
			}
			if cfg.ID == "" {
				host, _ := os.Hostname()
				cfg.ID = fmt.Sprintf("%s-%s-%d", cfg.GroupID, host, os.Getpid())
			}
			cli, err := g.etcdClient()
			if err != nil {
				lis.Close()
				return err
			}
			defer cli.Close()
			ex, err := node.NewExecutor(ncfg, node.ExecutorDeps{Registry: registry.New(cli, g.prefix), Verifier: verifier, Log: log})
			if err != nil {
				lis.Close()
				return err
			}
			fmt.Fprintf(g.stdout, "berth executor %s listening on %s\n", cfg.ID, lis.Addr())
			return ex.Run(cmd.Context(), lis)
		},
	}
	g.etcdFlags(cmd)
	f := cmd.Flags()
	f.DurationVar(&cfg.Registration.TTL, "lease-ttl", cfg.Registration.TTL, "lease of the executor's registry record: how long it outlives a crash")
	f.DurationVar(&cfg.Registration.Refresh, "refresh", cfg.Registration.Refresh, "how often the registry record is rewritten when nothing changed")
	f.StringVar(&listen, "listen", "127.0.0.1:0", "gRPC address (port 0 picks a free one)")
	f.StringVar(&cfg.ID, "id", "", "executor id (default: group-host-pid)")
	f.StringVar(&cfg.GroupID, "group", "", "the processing group this executor serves")
	f.StringVar(&cfg.Address, "advertise", "", "address devices connect to (default: the listen address)")
	f.IntVar(&cfg.Capacity, "capacity", 10000, "most streams this executor admits")
	f.StringSliceVar(&keyFiles, "token-public-key", nil, "PEM Ed25519 public key(s) that verify assignment tokens")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", cfg.DrainTimeout, "how long a SIGTERM drain waits for devices to leave")
	_ = cmd.MarkFlagRequired("group")
	_ = cmd.MarkFlagRequired("token-public-key")
	return cmd
}

func newKeygenCmd(g *globals) *cobra.Command {
	var priv, pub string
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "Make an Ed25519 key pair for assignment tokens",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			k, err := token.GenerateKey()
			if err != nil {
				return err
			}
			pb, err := token.MarshalPrivateKey(k)
			if err != nil {
				return err
			}
			ub, err := token.MarshalPublicKey(k.Public().(ed25519.PublicKey))
			if err != nil {
				return err
			}
			if err := os.WriteFile(priv, pb, 0o600); err != nil {
				return err
			}
			if err := os.WriteFile(pub, ub, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "wrote %s (control plane) and %s (executors)\n", priv, pub)
			return nil
		},
	}
	cmd.Flags().StringVar(&priv, "private", "token-signing.pem", "private key file (for control planes)")
	cmd.Flags().StringVar(&pub, "public", "token-public.pem", "public key file (for executors)")
	return cmd
}
