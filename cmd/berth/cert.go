package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berthproject/berth/pki"
)

// certFlags are the flags every `berth cert` command shares.
type certFlags struct {
	dir      string
	caCert   string
	caKey    string
	validFor time.Duration
	force    bool
}

// register adds the shared flags; issuing commands also get --ca and
// --ca-key.
func (c *certFlags) register(cmd *cobra.Command, issuing bool, validFor time.Duration) {
	f := cmd.Flags()
	f.StringVar(&c.dir, "dir", ".", "directory the files are written to (made if missing)")
	f.DurationVar(&c.validFor, "valid-for", validFor, "life of the certificate (hours, e.g. 8760h)")
	f.BoolVar(&c.force, "force", false, "overwrite existing files")
	if issuing {
		f.StringVar(&c.caCert, "ca", "ca.pem", "the CA's certificate (berth cert ca makes one), relative to --dir unless absolute")
		f.StringVar(&c.caKey, "ca-key", "ca-key.pem", "the CA's private key, relative to --dir unless absolute")
	}
}

// path returns name inside --dir, unless it is absolute.
func (c *certFlags) path(name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(c.dir, name)
}

// loadCA reads the issuing CA.
func (c *certFlags) loadCA() (*pki.Pair, error) {
	ca, err := pki.Load(c.path(c.caCert), c.path(c.caKey))
	if err != nil {
		return nil, fmt.Errorf("the CA (--ca, --ca-key): %w", err)
	}
	return ca, nil
}

// write writes p as <base>.pem and <base>-key.pem and says so.
func (c *certFlags) write(g *globals, p *pki.Pair, base, what string) error {
	cf, kf := c.path(base+".pem"), c.path(base+"-key.pem")
	for _, f := range []string{cf, kf} {
		// --dir, and the directory of an --out with one, are made (mode
		// 0700: they hold private keys) if they do not exist.
		if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
			return err
		}
	}
	if err := p.Write(cf, kf, c.force); err != nil {
		return fmt.Errorf("%w (--force overwrites)", err)
	}
	fmt.Fprintf(g.stdout, "wrote %s and %s (private key, mode 0600): %s\n", cf, kf, what)
	fmt.Fprintf(g.stdout, "  subject %s, valid until %s, SHA-256 %s\n", p.Cert.Subject.CommonName, p.Cert.NotAfter.UTC().Format(time.RFC3339), p.Fingerprint())
	return nil
}

func newCertCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Make a CA and issue server, device and client certificates (no openssl needed)",
		Long: "Make a CA and issue certificates with it. Keys are ECDSA P-256, written with mode 0600;\n" +
			"existing files are kept unless --force. Keep the CA's key off the servers.",
	}
	cmd.AddCommand(newCertCACmd(g), newCertServerCmd(g), newCertDeviceCmd(g), newCertClientCmd(g))
	return cmd
}

func newCertCACmd(g *globals) *cobra.Command {
	var c certFlags
	var name string
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Make a CA: ca.pem (give it to clients and servers) and ca-key.pem (keep it safe)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			ca, err := pki.NewCA(name, c.validFor)
			if err != nil {
				return err
			}
			return c.write(g, ca, "ca", "CA certificate")
		},
	}
	c.register(cmd, false, pki.CAValidity)
	cmd.Flags().StringVar(&name, "name", "berth CA", "the CA's common name")
	return cmd
}

func newCertServerCmd(g *globals) *cobra.Command {
	var c certFlags
	var hosts []string
	var out string
	cmd := &cobra.Command{
		Use:   "server --host NAME_OR_IP[,…]",
		Short: "Issue a server certificate for control planes or executors",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			ca, err := c.loadCA()
			if err != nil {
				return err
			}
			p, err := ca.IssueServer(hosts, c.validFor)
			if err != nil {
				return err
			}
			return c.write(g, p, out, "server certificate for "+strings.Join(hosts, ", "))
		},
	}
	c.register(cmd, true, pki.LeafValidity)
	cmd.Flags().StringSliceVar(&hosts, "host", nil, "DNS names and IP addresses clients dial the server by (repeat or comma separate)")
	cmd.Flags().StringVar(&out, "out", "server", "file name base: <out>.pem and <out>-key.pem")
	_ = cmd.MarkFlagRequired("host")
	return cmd
}

func newCertDeviceCmd(g *globals) *cobra.Command {
	var c certFlags
	var out string
	cmd := &cobra.Command{
		Use:   "device ID",
		Short: "Issue a device's client certificate (CN and SAN URI berth://device/ID)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			ca, err := c.loadCA()
			if err != nil {
				return err
			}
			p, err := ca.IssueDevice(args[0], c.validFor)
			if err != nil {
				return err
			}
			if out == "" {
				out = "device-" + args[0]
			}
			return c.write(g, p, out, "device certificate for "+pki.DeviceURI(args[0]).String())
		},
	}
	c.register(cmd, true, pki.LeafValidity)
	cmd.Flags().StringVar(&out, "out", "", "file name base: <out>.pem and <out>-key.pem (default device-ID)")
	return cmd
}

func newCertClientCmd(g *globals) *cobra.Command {
	var c certFlags
	var out string
	cmd := &cobra.Command{
		Use:   "client NAME",
		Short: "Issue a service's or operator's client certificate (CN and SAN URI berth://service/NAME)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			ca, err := c.loadCA()
			if err != nil {
				return err
			}
			p, err := ca.IssueClient(args[0], c.validFor)
			if err != nil {
				return err
			}
			if out == "" {
				out = "client-" + args[0]
			}
			return c.write(g, p, out, "client certificate for "+pki.ServiceURI(args[0]).String())
		},
	}
	c.register(cmd, true, pki.LeafValidity)
	cmd.Flags().StringVar(&out, "out", "", "file name base: <out>.pem and <out>-key.pem (default client-NAME)")
	return cmd
}
