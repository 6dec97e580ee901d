package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/berthproject/berth/admin"
	"github.com/berthproject/berth/registry"
)

// newCtlRegistryCmd returns `ctl registry …`: the break-glass commands
// that read and write etcd directly, for when no control plane is up.
func newCtlRegistryCmd(c *ctlFlags) *cobra.Command {
	reg := &cobra.Command{
		Use:   "registry",
		Short: "Break-glass: read and write berth's data in etcd directly, bypassing the control plane",
		Long: "Break-glass commands for when no control plane is up (a new cluster, an outage): they read\n" +
			"and write berth's keys in etcd directly (--etcd, --prefix) and BYPASS THE CONTROL PLANE: its\n" +
			"checks and its log of changes. With a control plane up, use the other ctl commands.",
	}
	c.etcdFlagSet(reg.PersistentFlags())
	c.registryFlags = reg.PersistentFlags()

	groups := &cobra.Command{
		Use:   "groups",
		Short: "List processing groups with their executors and connections, from etcd",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
				gs, err := reg.Groups(ctx)
				if err != nil {
					return err
				}
				es, err := reg.Executors(ctx)
				if err != nil {
					return err
				}
				return printGroups(c, groupRows(gs, es))
			})
		},
	}
	group := &cobra.Command{Use: "group", Short: "Change one processing group in etcd"}
	var labels []string
	var capacity int
	var state string
	put := &cobra.Command{
		Use:   "put GROUP",
		Short: "Create or replace a processing group",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
				gr := registry.Group{ID: args[0], Labels: labels, Capacity: capacity, State: registry.GroupState(state)}
				if err := reg.PutGroup(ctx, gr); err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "group %s stored\n", gr.ID)
				return nil
			})
		},
	}
	put.Flags().StringSliceVar(&labels, "labels", []string{"default"}, "labels the group carries")
	put.Flags().IntVar(&capacity, "capacity", 10000, "devices the group is sized for")
	put.Flags().StringVar(&state, "state", string(registry.GroupActive), "active, draining or disabled")
	setState := func(verb, short string, st registry.GroupState) *cobra.Command {
		return &cobra.Command{
			Use:   verb + " GROUP",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
					g, err := reg.SetGroupState(ctx, args[0], st)
					if err != nil {
						return err
					}
					fmt.Fprintf(c.stdout, "group %s %s\n", g.ID, g.State)
					return nil
				})
			},
		}
	}
	group.AddCommand(put,
		setState("drain", "Take no new device into a group; the rebalancer moves its devices away", registry.GroupDraining),
		setState("undrain", "Make a draining or disabled group active again", registry.GroupActive))

	executors := &cobra.Command{
		Use:   "executors",
		Short: "List registered executors, from etcd",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
				es, err := reg.Executors(ctx)
				if err != nil {
					return err
				}
				return printExecutors(c, es)
			})
		},
	}
	devices := &cobra.Command{
		Use:   "devices",
		Short: "List devices' assignment records, from etcd",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
				as, err := reg.Assignments(ctx)
				if err != nil {
					return err
				}
				return printDevices(c, as)
			})
		},
	}
	tenants := &cobra.Command{
		Use:   "tenants",
		Short: "List tenants, from etcd",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
				ts, err := reg.Tenants(ctx)
				if err != nil {
					return err
				}
				return printTenants(c, ts)
			})
		},
	}
	tenant := &cobra.Command{Use: "tenant", Short: "Change one tenant in etcd"}
	var attrs map[string]string
	var services []string
	tput := &cobra.Command{
		Use:   "put TENANT",
		Short: "Create or replace a tenant's attributes and entitled services",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
				if err := reg.PutTenant(ctx, registry.Tenant{ID: args[0], Attributes: attrs, Services: services}); err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "tenant %s stored\n", args[0])
				return nil
			})
		},
	}
	tput.Flags().StringToStringVar(&attrs, "attr", nil, "attributes, key=value (repeat or comma separate)")
	tput.Flags().StringSliceVar(&services, "services", nil, "services the tenant is entitled to")
	tenant.AddCommand(tput)

	reg.AddCommand(groups, group, executors, devices, tenants, tenant, newRegistryPolicyCmd(c), newRegistryExecutorCmd(c), newRegistryRebalanceCmd(c), newRegistryAPIKeyCmd(c))
	return reg
}

// newRegistryPolicyCmd returns `registry policy get|apply`.
func newRegistryPolicyCmd(c *ctlFlags) *cobra.Command {
	pol := &cobra.Command{Use: "policy", Short: "Read and apply the placement policy in etcd"}
	var file string
	var migrate bool
	apply := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Validate a policy document (YAML or JSON) completely, here, and store it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			doc, err := readDoc(file)
			if err != nil {
				return err
			}
			return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
				snap, err := reg.LoadSnapshot(ctx)
				if err != nil {
					return err
				}
				var based int64
				if snap.Policy != nil {
					based = snap.Policy.Version
				}
				v, warns, err := admin.ApplyPolicyMigrating(ctx, reg, snap, doc, based, whoami(), time.Now(), migrate)
				for _, w := range warns {
					fmt.Fprintln(c.stderr, "warning:", w)
				}
				if err != nil {
					return explainPolicyError(err)
				}
				return printApplied(c, v, based, migrate)
			})
		},
	}
	apply.Flags().StringVarP(&file, "file", "f", "", "policy document, YAML or JSON ('-' for stdin)")
	apply.Flags().BoolVar(&migrate, "migrate", false, "let the rebalancer move connected devices whose label the policy changes (else they move when they reconnect)")
	_ = apply.MarkFlagRequired("file")
	get := &cobra.Command{
		Use:   "get",
		Short: "Show the policy in force and its version, from etcd",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
				sp, err := reg.Policy(ctx)
				if errors.Is(err, registry.ErrNotFound) {
					return printPolicy(c, registry.StoredPolicy{}, false)
				}
				if err != nil {
					return err
				}
				return printPolicy(c, sp, true)
			})
		},
	}
	pol.AddCommand(apply, get)
	return pol
}

// newRegistryExecutorCmd returns `registry executor drain|undrain`.
func newRegistryExecutorCmd(c *ctlFlags) *cobra.Command {
	exec := &cobra.Command{Use: "executor", Short: "Drain or undrain one executor in etcd"}
	var allowUnregistered bool
	drain := &cobra.Command{
		Use:   "drain ID",
		Short: "Stop Assign naming an executor; the rebalancer moves its devices to others (the mark outlives restarts)",
		Long: "Stop Assign naming an executor; the rebalancer moves its devices to others. The mark outlives\n" +
			"restarts until undrain. An executor that is not registered is refused (exit 3) unless\n" +
			"--allow-unregistered (to mark one about to start).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
				es, err := reg.Executors(ctx)
				if err != nil {
					return err
				}
				known := false
				for _, e := range es {
					known = known || e.ID == args[0]
				}
				if !known && !allowUnregistered {
					return fmt.Errorf("executor %s is not registered (--allow-unregistered marks one about to start): %w", args[0], registry.ErrNotFound)
				}
				if err := reg.PutExecutorDrain(ctx, registry.ExecutorDrain{ExecutorID: args[0], By: whoami(), At: time.Now().UTC()}); err != nil {
					return err
				}
				if !known {
					fmt.Fprintf(c.stderr, "warning: executor %s is not registered now; the mark applies when it registers\n", args[0])
				}
				fmt.Fprintf(c.stdout, "executor %s drained\n", args[0])
				return nil
			})
		},
	}
	drain.Flags().BoolVar(&allowUnregistered, "allow-unregistered", false, "mark an executor that is not registered now; the mark applies when it registers")
	exec.AddCommand(drain, &cobra.Command{
		Use:   "undrain ID",
		Short: "Remove an executor's drain mark",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
				was, err := reg.DeleteExecutorDrain(ctx, args[0])
				if err != nil {
					return err
				}
				if !was {
					fmt.Fprintf(c.stdout, "executor %s was not drained\n", args[0])
					return nil
				}
				fmt.Fprintf(c.stdout, "executor %s undrained\n", args[0])
				return nil
			})
		},
	})
	return exec
}

// newRegistryRebalanceCmd returns `registry rebalance status|pause|resume`.
func newRegistryRebalanceCmd(c *ctlFlags) *cobra.Command {
	rb := &cobra.Command{Use: "rebalance", Short: "See, pause and resume the rebalancer, in etcd"}
	rb.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "The rebalancer's plan, progress, rate and ETA as its leader last stored them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
				st, err := admin.RebalanceStatus(ctx, reg)
				if err != nil {
					return err
				}
				return printRebalanceStatus(c, st, time.Now())
			})
		},
	})
	var reason string
	pause := &cobra.Command{
		Use:   "pause",
		Short: "Stop moving devices until resume (the plan is still computed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
				if err := reg.SetRebalancePause(ctx, &registry.RebalancePause{By: whoami(), Reason: reason, At: time.Now().UTC()}); err != nil {
					return err
				}
				fmt.Fprintln(c.stdout, "rebalancer paused")
				return nil
			})
		},
	}
	pause.Flags().StringVar(&reason, "reason", "", "why, for status")
	rb.AddCommand(pause, &cobra.Command{
		Use:   "resume",
		Short: "Let the rebalancer move devices again",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
				if err := reg.SetRebalancePause(ctx, nil); err != nil {
					return err
				}
				fmt.Fprintln(c.stdout, "rebalancer resumed")
				return nil
			})
		},
	})
	return rb
}

// groupRows joins groups with their executors' counts, as `groups` shows
// them.
func groupRows(gs []registry.Group, es []registry.Executor) []groupRow {
	rows := make([]groupRow, len(gs))
	idx := map[string]int{}
	for i, g := range gs {
		rows[i] = groupRow{Group: g}
		idx[g.ID] = i
	}
	for _, e := range es {
		if i, ok := idx[e.GroupID]; ok {
			rows[i].Executors++
			rows[i].Connections += e.Connections
		}
	}
	for i := range rows {
		if rows[i].Capacity > 0 {
			rows[i].Utilization = float64(rows[i].Connections) / float64(rows[i].Capacity)
		}
	}
	return rows
}

// withRegistry runs fn, bounded by --timeout, with a registry over a fresh
// etcd client.
func (c *ctlFlags) withRegistry(ctx context.Context, fn func(context.Context, *registry.Registry) error) error {
	if c.output != "table" && c.output != "json" {
		return fmt.Errorf("--output %q: want table or json", c.output)
	}
	if err := c.resolveEtcd(); err != nil {
		return err
	}
	cli, err := c.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return fn(ctx, registry.New(cli, c.prefix))
}

// resolveEtcd settles --etcd of the break-glass commands when it is not
// given: $BERTH_ETCD, else the etcd of berth dev's context, else the
// default.
func (c *ctlFlags) resolveEtcd() error {
	if changed(c.registryFlags, "etcd") {
		return nil
	}
	if e := os.Getenv(etcdEnv); e != "" {
		c.etcd = e
		return nil
	}
	dc, ok, err := readContext(contextPath())
	if err != nil {
		return usageError{err}
	}
	if ok && dc.Etcd != "" {
		c.etcd = dc.Etcd
	}
	return nil
}
