package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/berthproject/berth/registry"
)

// controlPlaneEnv names the environment variable that gives --controlplane
// when the flag is not given.
const controlPlaneEnv = "BERTH_CONTROLPLANE"

// apiKeyEnv names the environment variable that gives --api-key its
// default.
const apiKeyEnv = "BERTH_API_KEY"

// defaultControlPlane is where ctl looks for a control plane unless told.
const defaultControlPlane = "127.0.0.1:7070"

// ctlFlags are the flags of every ctl command.
type ctlFlags struct {
	*globals
	output       string
	timeout      time.Duration
	controlplane string
	pageSize     int32
	// apiKey is presented as `authorization: Bearer <key>` on every call
	// (the seam for client-certificate flags: connect's dial options).
	apiKey string
	// apiKeyFile is --api-key-file: a file holding the key.
	apiKeyFile string
	// flags are ctl's persistent flags, and registryFlags those of `ctl
	// registry`: resolve asks them which were given.
	flags, registryFlags *pflag.FlagSet
	// resolved is set once resolve ran; resolvedKey is the API key it
	// found (empty: none).
	resolved    bool
	resolvedKey string
	tls         clientTLSFlags
	// legacyEtcd and legacyPrefix catch the --etcd and --prefix of scripts
	// written when ctl wrote etcd itself: they only say where to go now.
	legacyEtcd, legacyPrefix string
}

func newCtlCmd(g *globals) *cobra.Command {
	c := &ctlFlags{globals: g}
	cmd := &cobra.Command{
		Use:   "ctl",
		Short: "Operate a berth cluster through a control plane: groups, tenants, executors, devices, policy, rebalancer, messages",
		Long: "Operate a berth cluster through a control plane's AdminService and MessagingService.\n" +
			"ctl needs only the address of one control plane replica. Each setting comes from, in order:\n" +
			"its flag; its environment variable (" + controlPlaneEnv + ", " + caEnv + ", " + certEnv + ", " + keyEnv + ", " + apiKeyEnv + ", " + apiKeyFileEnv + ");\n" +
			"the context file `berth dev` writes (" + contextEnv + " names another file, or off), whose CA and\n" +
			"API key file are used only for the control plane it names; then the defaults.\n" +
			"When no control plane is up, `berth ctl registry …` reads and writes etcd directly (break-glass).\n\n" +
			exitCodesHelp,
	}
	pf := cmd.PersistentFlags()
	c.flags = pf
	pf.StringVar(&c.controlplane, "controlplane", "", "address of a control plane's gRPC server, or replicas to try in order, comma separated (default: $"+controlPlaneEnv+", else berth dev's context, else "+defaultControlPlane+")")
	// The key is read when a command runs, never as a flag default: a
	// flag's default is printed by --help, and this one is a secret.
	pf.StringVar(&c.apiKey, "api-key", "", "API key to authenticate with (default: $"+apiKeyEnv+", which keeps it out of the process list, else --api-key-file)")
	pf.StringVar(&c.apiKeyFile, "api-key-file", "", "file holding the API key (default: $"+apiKeyFileEnv+", else the api_key_file of berth dev's context)")
	pf.StringVarP(&c.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&c.timeout, "timeout", 10*time.Second, "how long a command may take")
	c.tls.register(pf, true)
	pf.Int32Var(&c.pageSize, "page-size", 1000, "items per page of a listing (the server allows at most 1000)")
	_ = pf.MarkHidden("page-size")
	pf.StringVar(&c.legacyEtcd, "etcd", "", "")
	pf.StringVar(&c.legacyPrefix, "prefix", "", "")
	_ = pf.MarkHidden("etcd")
	_ = pf.MarkHidden("prefix")

	groups, group := newCtlGroupCmds(c)
	executors, executor, devices := newCtlFleetCmds(c)
	tenants, tenant := newCtlTenantCmds(c)
	cmd.AddCommand(groups, group, executors, executor, devices, tenants, tenant, newCtlRebalanceCmd(c))
	cmd.AddCommand(newCtlPolicyCmds(c)...)
	msgCmds := newCtlMessagingCmds(c)
	cmd.AddCommand(msgCmds...)
	cmd.AddCommand(newCtlEnrollmentCmds(c, msgCmds)...)
	cmd.AddCommand(newCtlRegistryCmd(c))
	cmd.AddCommand(newCtlAPIKeyCmd(c), newCtlAuditCmd(c))
	return cmd
}

// printRows writes rows as a table (one line per row, cells giving the
// columns) or as JSON.
func printRows[T any](c *ctlFlags, rows []T, header []string, cells func(T) []string) error {
	switch c.output {
	case "json":
		if rows == nil {
			rows = []T{}
		}
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	case "table":
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(header, "\t"))
		for _, r := range rows {
			fmt.Fprintln(tw, strings.Join(cells(r), "\t"))
		}
		return tw.Flush()
	}
	return fmt.Errorf("--output %q: want table or json", c.output)
}

// groupRow is one line of `ctl groups`.
type groupRow struct {
	registry.Group
	Executors   int     `json:"executors"`
	Connections int     `json:"connections"`
	Utilization float64 `json:"utilization"`
}

// printGroups writes `ctl groups`.
func printGroups(c *ctlFlags, rows []groupRow) error {
	return printRows(c, rows, []string{"GROUP", "STATE", "LABELS", "CAPACITY", "EXECUTORS", "CONNECTIONS", "UTILIZATION"}, func(r groupRow) []string {
		return []string{r.ID, string(r.State), strings.Join(r.Labels, ","), fmt.Sprint(r.Capacity), fmt.Sprint(r.Executors), fmt.Sprint(r.Connections), fmt.Sprintf("%.1f%%", 100*r.Utilization)}
	})
}

// printExecutors writes `ctl executors`. INTERNAL is the address control
// planes reach the executor at when it is not ADDRESS ("-": ADDRESS).
func printExecutors(c *ctlFlags, es []registry.Executor) error {
	return printRows(c, es, []string{"EXECUTOR", "GROUP", "ADDRESS", "INTERNAL", "CONNECTIONS", "CAPACITY", "DRAINING", "UPDATED"}, func(e registry.Executor) []string {
		internal := e.InternalAddress
		if internal == "" {
			internal = "-"
		}
		return []string{e.ID, e.GroupID, e.Address, internal, fmt.Sprint(e.Connections), fmt.Sprint(e.Capacity), fmt.Sprint(e.Draining), e.UpdatedAt.Format(time.RFC3339)}
	})
}

// printDevices writes `ctl devices`.
func printDevices(c *ctlFlags, as []registry.Assignment) error {
	return printRows(c, as, []string{"DEVICE", "GROUP", "LABEL", "ASSIGNED"}, func(a registry.Assignment) []string {
		return []string{a.DeviceID, a.GroupID, a.Label, a.AssignedAt.Format(time.RFC3339)}
	})
}

// printTenants writes `ctl tenants`.
func printTenants(c *ctlFlags, ts []registry.Tenant) error {
	return printRows(c, ts, []string{"TENANT", "ATTRIBUTES", "SERVICES"}, func(t registry.Tenant) []string {
		return []string{t.ID, kvString(t.Attributes), strings.Join(t.Services, ",")}
	})
}

// whoami names the operator for the records: user@host.
func whoami() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

func kvString(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
