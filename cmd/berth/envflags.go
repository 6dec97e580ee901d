package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envAnnotation marks the commands whose flags may be given as BERTH_*
// environment variables.
const envAnnotation = "berth/env-flags"

// envExempt are the flags no BERTH_* variable sets through applyEnv: the
// etcd password has its own variable (etcdPasswordEnv, read only with
// --etcd-user), and help is no setting.
var envExempt = map[string]bool{"etcd-password": true, "help": true}

// withEnvFlags marks cmd so that each of its flags may be given as
// BERTH_<FLAG> (upper case, dashes as underscores); a flag given on the
// command line wins.
func withEnvFlags(cmd *cobra.Command) *cobra.Command {
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations[envAnnotation] = "true"
	long := cmd.Long
	if long == "" {
		long = cmd.Short
	}
	cmd.Long = long + "\n\nEvery flag may also be given as BERTH_<FLAG> in the environment (--etcd-ca: BERTH_ETCD_CA);\na flag on the command line wins."
	return cmd
}

// flagEnv is the environment variable of the flag name: --etcd-ca is
// BERTH_ETCD_CA.
func flagEnv(name string) string {
	return "BERTH_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// applyEnv sets every flag of fs that the command line did not give from
// its BERTH_* variable, when that is set. It runs when the command runs,
// after parsing: --help never shows these values. lookup is os.LookupEnv
// outside tests.
func applyEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var errs []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || envExempt[f.Name] {
			return
		}
		v, ok := lookup(flagEnv(f.Name))
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Sprintf("%s=%q: %v", flagEnv(f.Name), v, err))
		}
	})
	if len(errs) > 0 {
		return usageError{fmt.Errorf("environment: %s", strings.Join(errs, "; "))}
	}
	return nil
}

// applyEnvFlags applies the environment to cmd's flags (its own and those
// it inherits) when cmd is marked withEnvFlags.
func applyEnvFlags(cmd *cobra.Command) error {
	if cmd.Annotations[envAnnotation] == "" {
		return nil
	}
	return applyEnv(cmd.Flags(), os.LookupEnv)
}
