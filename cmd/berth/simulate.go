package main

import (
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/berthproject/berth/simulate"
)

func newSimulateCmd(g *globals) *cobra.Command {
	cfg := simulate.DefaultConfig()
	var tlsf clientTLSFlags
	var keyFile string
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Run a fleet of devices against a control plane, with a live summary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			if err := simulateContext(cmd.Flags(), &cfg, &tlsf); err != nil {
				return err
			}
			if tlsf.enabled() {
				if cfg.TLS, err = tlsf.config(); err != nil {
					return err
				}
			}
			if keyFile != "" {
				if cfg.EnrollmentKey, err = readEnrollmentKey(keyFile); err != nil {
					return err
				}
			}
			tr, stopTracing, err := startTracing(cmd.Context(), "berth-simulate", log)
			if err != nil {
				return err
			}
			defer stopTracing()
			cfg.Tracing = tr
			return simulate.Run(cmd.Context(), cfg, g.stdout, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ControlPlane, "controlplane", cfg.ControlPlane, "control plane address; several, comma separated, spread devices over replicas (default: $BERTH_CONTROLPLANE, else berth dev's context)")
	f.StringSliceVar(&cfg.Services, "services", nil, "service sets given to devices in turn, each '+'-separated (print+scan,telemetry)")
	f.IntVar(&cfg.Devices, "devices", cfg.Devices, "number of devices")
	f.StringVar(&cfg.IDPrefix, "id-prefix", cfg.IDPrefix, "prefix of device ids")
	f.StringSliceVar(&cfg.Models, "models", cfg.Models, "device models, given in turn")
	f.IntVar(&cfg.Tenants, "tenants", cfg.Tenants, "number of tenants the devices belong to")
	f.DurationVar(&cfg.Every, "every", cfg.Every, "summary interval")
	f.DurationVar(&cfg.StatusEvery, "status-every", cfg.StatusEvery, "how often every connected device publishes a JSON status report on topic \"status\" (berth ctl subscribe --topic status shows them; 0: never)")
	f.IntVar(&cfg.StartRate, "start-rate", cfg.StartRate, "device starts per second (0: all at once)")
	f.DurationVar(&cfg.Backoff.BaseDelay, "backoff-base", 0, "reconnect backoff base delay (0: gRPC default 1s)")
	f.DurationVar(&cfg.Backoff.MaxDelay, "backoff-max", 0, "reconnect backoff cap (0: gRPC default 120s)")
	tlsf.register(f, false)
	f.StringVar(&cfg.EnrollmentID, "enrollment", "", "symmetric-key enrollment the devices prove their identity with (with --enrollment-key-file)")
	f.StringVar(&keyFile, "enrollment-key-file", "", "file holding the enrollment's key, base64, as `berth ctl enrollment create --kind symmetric` printed it; each device signs with its key derived from it")
	return cmd
}

// simulateContext takes the control plane and its CA from berth dev's
// context file for what neither a flag nor a BERTH_* variable gave; the
// CA only for the control plane the context names.
func simulateContext(fs *pflag.FlagSet, cfg *simulate.Config, tlsf *clientTLSFlags) error {
	dc, ok, err := readContext(contextPath())
	if err != nil {
		return usageError{err}
	}
	if !ok {
		return nil
	}
	if !fs.Changed("controlplane") && dc.ControlPlane != "" {
		cfg.ControlPlane = dc.ControlPlane
	}
	if !fs.Changed("ca") && !fs.Changed("cert") && cfg.ControlPlane == dc.ControlPlane {
		tlsf.files.CA = dc.CA
	}
	return nil
}
