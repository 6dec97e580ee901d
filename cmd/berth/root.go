package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"

	"github.com/berthproject/berth/internal/metrics"
	"github.com/berthproject/berth/internal/tlsfiles"
	"github.com/berthproject/berth/internal/zapslog"
	"github.com/berthproject/berth/registry"
)

// globals are the flags every command shares.
type globals struct {
	stdout, stderr io.Writer
	logLevel       string
	logFormat      string
	etcd           string
	prefix         string
	etcdTLS        clientTLSFlags // --etcd-ca, --etcd-cert, --etcd-key
	etcdUser       string
	etcdPassword   string
	envPassword    string // $BERTH_ETCD_PASSWORD, kept out of --help
	cpuProfile     string
	profile        *os.File // the CPU profile being written, if any
}

// newRoot returns the root command and the globals its flags fill.
func newRoot(stdout, stderr io.Writer) (*cobra.Command, *globals) {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "berth",
		Short: "Keep fleets of devices on always-on gRPC connections",
		Long: "berth keeps fleets of devices on always-on gRPC connections.\n\n" +
			"Server flags can also be given as BERTH_<FLAG> environment variables (--etcd-ca: BERTH_ETCD_CA);\n" +
			"a flag on the command line wins.\n\n" + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	pf.StringVar(&g.cpuProfile, "cpuprofile", "", "write a CPU profile of this process to the file until it exits (go tool pprof reads it)")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if err := applyEnvFlags(cmd); err != nil {
			return err
		}
		return g.startProfile()
	}
	root.AddCommand(
		withEnvFlags(newDevCmd(g)),
		newEtcdCmd(g),
		withEnvFlags(newControlPlaneCmd(g)),
		withEnvFlags(newExecutorCmd(g)),
		newKeygenCmd(g),
		newCertCmd(g),
		newCtlCmd(g),
		withEnvFlags(newSimulateCmd(g)),
		newBenchCmd(g),
		newVersionCmd(g),
	)
	return root, g
}

// startProfile starts the CPU profile --cpuprofile asks for.
func (g *globals) startProfile() error {
	if g.cpuProfile == "" || g.profile != nil {
		return nil
	}
	f, err := os.Create(g.cpuProfile)
	if err != nil {
		return fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("--cpuprofile: %w", err)
	}
	g.profile = f
	return nil
}

// stopProfile ends the CPU profile, if one is being written.
func (g *globals) stopProfile() error {
	if g.profile == nil {
		return nil
	}
	pprof.StopCPUProfile()
	err := g.profile.Close()
	g.profile = nil
	return err
}

// etcdPasswordEnv names the environment variable that gives
// --etcd-password its default, to keep the password off command lines.
const etcdPasswordEnv = "BERTH_ETCD_PASSWORD"

// etcdFlags adds --etcd, --prefix and etcd's TLS and credential flags to
// cmd.
func (g *globals) etcdFlags(cmd *cobra.Command) { g.etcdFlagSet(cmd.Flags()) }

// etcdFlagSet adds the flags of etcdFlags to f.
func (g *globals) etcdFlagSet(f *pflag.FlagSet) {
	f.StringVar(&g.etcd, "etcd", "http://127.0.0.1:2379", "etcd endpoints, comma separated (https://… with --etcd-ca)")
	f.StringVar(&g.prefix, "prefix", registry.DefaultPrefix, "key prefix of berth's data in etcd")
	f.StringVar(&g.etcdTLS.files.CA, "etcd-ca", "", "PEM CA(s) etcd's certificate chains to: reach etcd over TLS")
	f.StringVar(&g.etcdTLS.files.Cert, "etcd-cert", "", "PEM client certificate presented to etcd")
	f.StringVar(&g.etcdTLS.files.Key, "etcd-key", "", "PEM private key of --etcd-cert")
	f.StringVar(&g.etcdUser, "etcd-user", "", "etcd user name (etcd authentication)")
	g.envPassword = os.Getenv(etcdPasswordEnv)
	f.StringVar(&g.etcdPassword, "etcd-password", "", "password of --etcd-user (default $"+etcdPasswordEnv+"; prefer it: command lines are visible to other users)")
}

// logger builds the process logger from the flags.
func (g *globals) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", g.logLevel, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch g.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(g.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(g.stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", g.logFormat)
}

// etcdClient connects to the --etcd endpoints, with the client's own logs
// discarded (ctl and bench report errors themselves).
func (g *globals) etcdClient() (*clientv3.Client, error) { return g.serverEtcdClient(nil, nil) }

// serverEtcdClient connects to the --etcd endpoints for a server: the
// client's logs at warn and above go to log, and met (nil: none) times its
// requests.
func (g *globals) serverEtcdClient(log *slog.Logger, met *metrics.Metrics) (*clientv3.Client, error) {
	var eps []string
	for _, e := range strings.Split(g.etcd, ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	if len(eps) == 0 {
		return nil, fmt.Errorf("--etcd: no endpoint")
	}
	pw := g.etcdPassword
	if pw == "" && g.etcdUser != "" {
		pw = g.envPassword
	}
	var zl *slog.Logger
	if log != nil {
		zl = log.With("component", "etcd-client")
	}
	cfg := clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zapslog.New(zl, zapcore.WarnLevel), Username: g.etcdUser, Password: pw,
		DialOptions: met.EtcdDialOptions()}
	if (g.etcdUser == "") != (pw == "") {
		return nil, fmt.Errorf("--etcd-user and --etcd-password (or $%s) go together", etcdPasswordEnv)
	}
	if t := g.etcdTLS.files; t.CA != "" || t.Cert != "" || t.Key != "" {
		tc, err := tlsfiles.ClientConfig(t, nil, nil)
		if errors.Is(err, tlsfiles.ErrIncomplete) {
			return nil, errors.New("--etcd-cert and --etcd-key go together")
		}
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", g.etcd, err)
	}
	return cli, nil
}
