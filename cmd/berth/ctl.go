package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berthproject/berth/registry"
)

// ctlFlags are the flags of every ctl command.
type ctlFlags struct {
	*globals
	output  string
	timeout time.Duration
}

func newCtlCmd(g *globals) *cobra.Command {
	c := &ctlFlags{globals: g}
	cmd := &cobra.Command{
		Use:   "ctl",
		Short: "Operate a berth cluster: groups, executors, devices",
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&g.etcd, "etcd", "http://127.0.0.1:2379", "etcd endpoints, comma separated")
	pf.StringVar(&g.prefix, "prefix", registry.DefaultPrefix, "key prefix of berth's data in etcd")
	pf.StringVarP(&c.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&c.timeout, "timeout", 10*time.Second, "how long a command may take")

	groups := &cobra.Command{
		Use:   "groups",
		Short: "List processing groups with their executors and connections",
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
				rows := groupRows(gs, es)
				return printRows(c, rows, []string{"GROUP", "STATE", "LABELS", "CAPACITY", "EXECUTORS", "CONNECTIONS", "UTILIZATION"}, func(r groupRow) []string {
					return []string{r.ID, string(r.State), strings.Join(r.Labels, ","), fmt.Sprint(r.Capacity), fmt.Sprint(r.Executors), fmt.Sprint(r.Connections), fmt.Sprintf("%.1f%%", 100*r.Utilization)}
				})
			})
		},
	}
	put := &cobra.Command{
		Use:   "put GROUP",
		Short: "Create or replace a processing group",
		Args:  cobra.ExactArgs(1),
	}
	var labels []string
	var capacity int
	var state string
	put.Flags().StringSliceVar(&labels, "labels", []string{"default"}, "labels the group carries")
	put.Flags().IntVar(&capacity, "capacity", 10000, "devices the group is sized for")
	put.Flags().StringVar(&state, "state", string(registry.GroupActive), "active, draining or disabled")
	put.RunE = func(cmd *cobra.Command, args []string) error {
		return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
			gr := registry.Group{ID: args[0], Labels: labels, Capacity: capacity, State: registry.GroupState(state)}
			if err := reg.PutGroup(ctx, gr); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "group %s stored\n", gr.ID)
			return nil
		})
	}
	groupCmd := &cobra.Command{Use: "group", Short: "Change one processing group"}
	groupCmd.AddCommand(put)

	executors := &cobra.Command{
		Use:   "executors",
		Short: "List registered executors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
				es, err := reg.Executors(ctx)
				if err != nil {
					return err
				}
				return printRows(c, es, []string{"EXECUTOR", "GROUP", "ADDRESS", "CONNECTIONS", "CAPACITY", "DRAINING", "UPDATED"}, func(e registry.Executor) []string {
					return []string{e.ID, e.GroupID, e.Address, fmt.Sprint(e.Connections), fmt.Sprint(e.Capacity), fmt.Sprint(e.Draining), e.UpdatedAt.Format(time.RFC3339)}
				})
			})
		},
	}
	devices := &cobra.Command{
		Use:   "devices",
		Short: "List devices' assignment records",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
				as, err := reg.Assignments(ctx)
				if err != nil {
					return err
				}
				return printRows(c, as, []string{"DEVICE", "GROUP", "LABEL", "ASSIGNED"}, func(a registry.Assignment) []string {
					return []string{a.DeviceID, a.GroupID, a.Label, a.AssignedAt.Format(time.RFC3339)}
				})
			})
		},
	}
	cmd.AddCommand(groups, groupCmd, executors, devices)
	cmd.AddCommand(newCtlPolicyCmds(c)...)
	cmd.AddCommand(newCtlMessagingCmds(c)...)
	addCtlRebalanceCmds(c, cmd, groupCmd)
	return cmd
}

// groupRow is one line of `ctl groups`.
type groupRow struct {
	registry.Group
	Executors   int     `json:"executors"`
	Connections int     `json:"connections"`
	Utilization float64 `json:"utilization"`
}

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

// withRegistry runs fn with a registry over a fresh etcd client.
func (c *ctlFlags) withRegistry(ctx context.Context, fn func(context.Context, *registry.Registry) error) error {
	cli, err := c.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return fn(ctx, registry.New(cli, c.prefix))
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
