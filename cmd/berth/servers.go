package main

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berthproject/berth/access"
	"github.com/berthproject/berth/internal/fleetpage"
	"github.com/berthproject/berth/internal/node"
	"github.com/berthproject/berth/internal/rpcserver"
	"github.com/berthproject/berth/internal/tlsfiles"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

func newControlPlaneCmd(g *globals) *cobra.Command {
	rcfg := node.DefaultReplicaConfig()
	cfg, mcfg := &rcfg.ControlPlane, &rcfg.Messaging
	var listen, keyFile, executorCA, operatorCA string
	var certRoles []string
	var tlsf serverTLSFlags
	opsf := newOpsFlags()
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
			if executorCA != "" {
				if rcfg.Executors.TLS, err = tlsfiles.ClientConfig(tlsfiles.ClientFiles{CA: executorCA}, log, nil); err != nil {
					return fmt.Errorf("--executor-ca: %w", err)
				}
			} else if tlsf.files.Enabled() && !tlsf.insecure {
				return errors.New("--executor-ca is needed with --tls-cert: the control plane's service tokens must reach executors over TLS (or give --insecure to reach them in plaintext)")
			}
			if rcfg.Access.CertRoles, err = parseCertRoles(certRoles); err != nil {
				return err
			}
			if operatorCA != "" {
				if !tlsf.files.Enabled() {
					return errors.New("--operator-ca needs --tls-cert: client certificates are read from TLS connections")
				}
				if rcfg.Access.OperatorCAs, err = tlsfiles.ReadCAPool(operatorCA); err != nil {
					return fmt.Errorf("--operator-ca: %w", err)
				}
			} else if len(certRoles) > 0 {
				return errors.New("--cert-role needs --operator-ca: the CA that service and operator certificates chain to")
			}
			lis, err := rpcserver.Listen(listen)
			if err != nil {
				return err
			}
			if rcfg.RPC.TLS, err = tlsf.config(lis, log); err != nil {
				lis.Close()
				return err
			}
			opsl, err := opsf.open(rcfg.RPC.TLS, tlsf.insecure, log)
			if err != nil {
				lis.Close()
				return err
			}
			defer opsl.close()
			tr, stopTracing, err := startTracing(cmd.Context(), "berth-controlplane", log)
			if err != nil {
				lis.Close()
				return err
			}
			defer stopTracing()
			cli, err := g.serverEtcdClient(log, opsl.met)
			if err != nil {
				lis.Close()
				return err
			}
			defer cli.Close()
			rcfg.Rebalance = rb.config()
			r, err := node.NewReplica(rcfg, node.ReplicaDeps{Registry: registry.New(cli, g.prefix), Signer: signer, Log: log, Metrics: opsl.met, Tracing: tr})
			if err != nil {
				lis.Close()
				return err
			}
			opsl.addCheck("controlplane", r.Ready)
			opsl.handle(fleetpage.Prefix, r.FleetPage())
			fmt.Fprintf(g.stdout, "berth controlplane listening on %s (%s)%s\n", lis.Addr(), transportName(rcfg.RPC.TLS), opsl.readyField(rcfg.RPC.TLS))
			if rcfg.OpenEnrollment {
				log.Warn("open enrollment: Assign takes device ids from callers without credentials")
			}
			return opsl.run(cmd.Context(), func(ctx context.Context) error { return r.Run(ctx, lis) })
		},
	}
	g.etcdFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:7070", "gRPC address")
	f.StringVar(&keyFile, "signing-key", "", "PEM Ed25519 private key for assignment tokens (berth keygen makes one)")
	f.DurationVar(&cfg.TokenTTL, "token-ttl", cfg.TokenTTL, "lifetime of assignment tokens")
	f.IntVar(&cfg.MaxInFlight, "max-in-flight", cfg.MaxInFlight, "concurrent Assigns before shedding with RESOURCE_EXHAUSTED")
	f.Float64Var(&cfg.AdmitRate, "admit-rate", cfg.AdmitRate, "Assigns a second this replica answers before shedding with RESOURCE_EXHAUSTED and a retry hint spread over the backlog, for reconnect storms (0: no bound; see berth bench assign for what it sustains)")
	f.IntVar(&cfg.AdmitBurst, "admit-burst", cfg.AdmitBurst, "Assigns above --admit-rate answered in a burst")
	f.IntVar(&cfg.TokenCacheSize, "token-cache-size", cfg.TokenCacheSize, "devices whose still-fresh token is re-sent instead of signed again, about 400 bytes each (0: none)")
	f.IntVar(&cfg.LabelMemoSize, "label-memo-size", cfg.LabelMemoSize, "devices whose label is kept with the inputs it came from, about 1.3 KB each (0: none)")
	f.Int64Var(&mcfg.QueuePerDevice, "queue-per-device", mcfg.QueuePerDevice, "most queued messages waiting for one device")
	f.Int64Var(&mcfg.QueueTotal, "queue-total", mcfg.QueueTotal, "most queued messages waiting for all devices")
	f.Int64Var(&mcfg.QueueBytesPerDevice, "queue-bytes-per-device", mcfg.QueueBytesPerDevice, "most bytes of etcd the messages queued for one device may take (at least 1 MiB)")
	f.Int64Var(&mcfg.QueueTotalBytes, "queue-total-bytes", mcfg.QueueTotalBytes, "most bytes of etcd the messages queued for all devices may take; keep it well inside etcd's quota (--quota-backend-bytes, 2 GiB by default) so presence and assignment writes keep room (at least 8 MiB)")
	f.Int64Var(&mcfg.InFlightPerDevice, "inflight-per-device", mcfg.InFlightPerDevice, "most deliveries (Send, Call, queue redelivery) this replica has under way to one device, awaiting its acknowledgement; past it RESOURCE_EXHAUSTED with a retry hint, so a device that does not read cannot hold the streams of the replica's connection to its executor")
	f.Int64Var(&mcfg.InFlightBytesPerDevice, "inflight-bytes-per-device", mcfg.InFlightBytesPerDevice, "most payload bytes this replica has in flight to one device; past it RESOURCE_EXHAUSTED with a retry hint (one larger message goes when nothing else is in flight to the device)")
	rl := &rcfg.RateLimits
	f.Float64Var(&rl.Assign.Rate, "rate-assign", rl.Assign.Rate, "Assigns a second per device id (0: no limit); past it RESOURCE_EXHAUSTED with a retry hint")
	f.IntVar(&rl.Assign.Burst, "burst-assign", rl.Assign.Burst, "Assigns one device id may make at once")
	f.Float64Var(&rl.Send.Rate, "rate-send", rl.Send.Rate, "Sends a second per caller host (0: no limit)")
	f.IntVar(&rl.Send.Burst, "burst-send", rl.Send.Burst, "Sends one caller host may make at once")
	f.Float64Var(&rl.Call.Rate, "rate-call", rl.Call.Rate, "Calls a second per caller host (0: no limit)")
	f.IntVar(&rl.Call.Burst, "burst-call", rl.Call.Burst, "Calls one caller host may make at once")
	f.Float64Var(&rl.Subscribe.Rate, "rate-subscribe", rl.Subscribe.Rate, "subscriptions opened a second per caller host (0: no limit)")
	f.IntVar(&rl.Subscribe.Burst, "burst-subscribe", rl.Subscribe.Burst, "subscriptions one caller host may open at once")
	f.IntVar(&rl.MaxCallers, "rate-max-callers", rl.MaxCallers, "callers whose rate limits are tracked (least recently seen forgotten first)")
	f.StringVar(&cfg.ReplicaID, "replica-id", cfg.ReplicaID, "this replica's id, in assignment records and the rebalancer's election (default: random)")
	f.BoolVar(&rcfg.OpenEnrollment, "open-enrollment", false, "let Assign callers without credentials (no client certificate, no enrollment signature) in as any device id they name; off, only enrolled devices are assigned")
	f.StringVar(&operatorCA, "operator-ca", "", "PEM CA(s) that service and operator client certificates chain to; such a certificate authenticates its caller (by its berth://service/<name> URI, else its CN) besides API keys (needs --tls-cert)")
	f.StringArrayVar(&certRoles, "cert-role", nil, "NAME=ROLE[+ROLE…]: the roles (admin, operator, viewer, service) of the certificate named NAME; repeatable (a certificate without one authenticates but may call nothing)")
	f.StringVar(&executorCA, "executor-ca", "", "PEM CA(s) the executors' certificates chain to: reach executors over TLS (needed with --tls-cert unless --insecure)")
	tlsf.register(f)
	opsf.register(f)
	rb.register(f)
	_ = cmd.MarkFlagRequired("signing-key")
	return cmd
}

func newExecutorCmd(g *globals) *cobra.Command {
	ncfg := node.DefaultExecutorConfig()
	cfg := &ncfg.Executor
	var listen, internalListen string
	var keyFiles []string
	var tlsf serverTLSFlags
	opsf := newOpsFlags()
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
			if internalListen == "" && cfg.InternalAddress != "" {
				return errors.New("--internal-advertise needs --internal-listen")
			}
			lis, err := rpcserver.Listen(listen)
			if err != nil {
				return err
			}
			// Run closes the listeners; these close them when an error
			// comes first (after Run, a second Close is harmless).
			defer lis.Close()
			if cfg.RPC.TLS, err = tlsf.config(lis, log); err != nil {
				return err
			}
			if cfg.Address == "" {
				cfg.Address = lis.Addr().String()
			}
			var ilis net.Listener // nil: control planes call the device port
			if internalListen != "" {
				if ilis, err = rpcserver.Listen(internalListen); err != nil {
					return fmt.Errorf("--internal-listen: %w", err)
				}
				defer ilis.Close()
				// The same TLS as the device port, or plaintext on the same
				// terms.
				if cfg.RPC.TLS == nil {
					if err := tlsf.checkPlaintext(ilis, "--internal-listen"); err != nil {
						return err
					}
				}
				if cfg.InternalAddress == "" {
					cfg.InternalAddress = ilis.Addr().String()
				}
			}
			if cfg.RPC.TLS == nil && cfg.TLSName != "" {
				return errors.New("--advertise-name needs --tls-cert: it names the executor's TLS certificate")
			}
			if cfg.RPC.TLS != nil && cfg.TLSName == "" {
				if cfg.TLSName, _, err = net.SplitHostPort(cfg.Address); err != nil {
					return fmt.Errorf("--advertise %q: %w", cfg.Address, err)
				}
			}
			if cfg.ID == "" {
				host, _ := os.Hostname()
				cfg.ID = fmt.Sprintf("%s-%s-%d", cfg.GroupID, host, os.Getpid())
			}
			opsl, err := opsf.open(cfg.RPC.TLS, tlsf.insecure, log)
			if err != nil {
				return err
			}
			defer opsl.close()
			tr, stopTracing, err := startTracing(cmd.Context(), "berth-executor", log)
			if err != nil {
				return err
			}
			defer stopTracing()
			cli, err := g.serverEtcdClient(log, opsl.met)
			if err != nil {
				return err
			}
			defer cli.Close()
			ex, err := node.NewExecutor(ncfg, node.ExecutorDeps{Registry: registry.New(cli, g.prefix), Verifier: verifier, Log: log, Metrics: opsl.met, Tracing: tr})
			if err != nil {
				return err
			}
			opsl.addCheck("executor "+cfg.ID, ex.Ready)
			internalField := ""
			if ilis != nil {
				internalField = " internal=" + ilis.Addr().String()
			}
			fmt.Fprintf(g.stdout, "berth executor %s listening on %s (%s)%s%s\n", cfg.ID, lis.Addr(), transportName(cfg.RPC.TLS), internalField, opsl.readyField(cfg.RPC.TLS))
			return opsl.run(cmd.Context(), func(ctx context.Context) error { return ex.RunSplit(ctx, lis, ilis) })
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
	f.StringVar(&internalListen, "internal-listen", "", "gRPC address of a separate listener for control planes only (ExecutorInternalService: Send, Call, Subscribe, rebalancer moves), with the same TLS as --listen; the device port then refuses control planes, and a network fault between control planes and executors leaves devices alone. Keep it reachable by control planes only (firewall it). Empty: --listen serves both")
	f.StringVar(&cfg.InternalAddress, "internal-advertise", "", "address control planes reach --internal-listen at, written to the registry (default: the internal listen address)")
	f.StringVar(&cfg.TLSName, "advertise-name", "", "with --tls-cert: the name devices verify the executor's certificate by, sent in Assign's endpoints (default: the host of --advertise)")
	f.IntVar(&cfg.Capacity, "capacity", 10000, "most streams this executor admits")
	f.StringSliceVar(&keyFiles, "token-public-key", nil, "PEM Ed25519 public key(s) that verify assignment tokens")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", cfg.DrainTimeout, "how long a SIGTERM drain waits for devices to leave")
	tlsf.register(f)
	opsf.register(f)
	_ = cmd.MarkFlagRequired("group")
	_ = cmd.MarkFlagRequired("token-public-key")
	return cmd
}

func newKeygenCmd(g *globals) *cobra.Command {
	var priv, pub string
	var force bool
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
			if !force {
				for _, f := range []string{priv, pub} {
					if _, err := os.Lstat(f); err == nil {
						return fmt.Errorf("%s exists: keygen keeps existing keys (--force overwrites; tokens signed with the old key stop verifying)", f)
					}
				}
			}
			if err := writeFile(priv, pb, 0o600, force); err != nil {
				return err
			}
			if err := writeFile(pub, ub, 0o644, force); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "wrote %s (control plane) and %s (executors)\n", priv, pub)
			return nil
		},
	}
	cmd.Flags().StringVar(&priv, "private", "token-signing.pem", "private key file (for control planes)")
	cmd.Flags().StringVar(&pub, "public", "token-public.pem", "public key file (for executors)")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite existing key files")
	return cmd
}

// writeFile writes data to a new file name with perm; an existing file is
// an error unless force, which replaces it.
func writeFile(name string, data []byte, perm os.FileMode, force bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(name, flags, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// transportName says how a listener serves, for the ready lines.
func transportName(c *tls.Config) string {
	if c == nil {
		return "plaintext"
	}
	return "TLS"
}

// parseCertRoles reads --cert-role values, NAME=ROLE[+ROLE…] each.
func parseCertRoles(vals []string) (map[string][]access.Role, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	out := make(map[string][]access.Role, len(vals))
	for _, v := range vals {
		name, roles, ok := strings.Cut(v, "=")
		if !ok || strings.TrimSpace(name) == "" || roles == "" {
			return nil, fmt.Errorf("--cert-role %q: want NAME=ROLE[+ROLE…]", v)
		}
		name = strings.TrimSpace(name)
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("--cert-role %q: %s is given twice", v, name)
		}
		for _, r := range strings.Split(roles, "+") {
			role, err := access.ParseRole(strings.TrimSpace(r))
			if err != nil {
				return nil, fmt.Errorf("--cert-role %q: %w", v, err)
			}
			out[name] = append(out[name], role)
		}
	}
	return out, nil
}
