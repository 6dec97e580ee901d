package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	"github.com/berthproject/berth/registry"
)

// newCtlGroupCmds returns `groups` and `group put|delete|drain|undrain`.
func newCtlGroupCmds(c *ctlFlags) (groups, group *cobra.Command) {
	var limit int
	groups = &cobra.Command{
		Use:   "groups",
		Short: "List processing groups with their executors and connections",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				gs, err := listAll(ctx, c, limit, func(ctx context.Context, size int32, token string) ([]*adminv1.Group, string, error) {
					r, err := cl.ListGroups(ctx, &adminv1.ListGroupsRequest{PageSize: size, PageToken: token})
					return r.GetGroups(), r.GetNextPageToken(), err
				})
				if err != nil {
					return c.rpcError("groups", err)
				}
				rows := make([]groupRow, len(gs))
				for i, g := range gs {
					rows[i] = groupRow{
						Group:     registry.Group{ID: g.GetGroupId(), Labels: g.GetLabels(), Capacity: int(g.GetCapacity()), State: registry.GroupState(g.GetState())},
						Executors: int(g.GetExecutors()), Connections: int(g.GetConnections()), Utilization: g.GetUtilization(),
					}
				}
				return printGroups(c, rows)
			})
		},
	}
	groups.Flags().IntVar(&limit, "limit", 0, "list at most this many (0: all)")

	group = &cobra.Command{Use: "group", Short: "Change one processing group"}
	var labels []string
	var capacity int
	var state string
	put := &cobra.Command{
		Use:   "put GROUP",
		Short: "Create or replace a processing group",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				_, err := cl.PutGroup(ctx, &adminv1.PutGroupRequest{GroupId: args[0], Labels: labels, Capacity: int64(capacity), State: state})
				if err != nil {
					return c.rpcError("group put", err)
				}
				fmt.Fprintf(c.stdout, "group %s stored\n", args[0])
				return nil
			})
		},
	}
	put.Flags().StringSliceVar(&labels, "labels", []string{"default"}, "labels the group carries")
	put.Flags().IntVar(&capacity, "capacity", 10000, "devices the group is sized for")
	put.Flags().StringVar(&state, "state", string(registry.GroupActive), "active, draining or disabled")

	del := &cobra.Command{
		Use:   "delete GROUP",
		Short: "Remove a processing group that no executor serves any more",
		Long: "Remove a processing group. It is refused while any executor is registered for the group:\n" +
			"drain it (the rebalancer moves its devices away), stop its executors, then delete it.\n" +
			"Devices whose assignment record still names it are placed anew on their next Assign.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				r, err := cl.DeleteGroup(ctx, &adminv1.DeleteGroupRequest{GroupId: args[0]})
				if err != nil {
					return c.rpcError("group delete", err)
				}
				fmt.Fprintf(c.stdout, "group %s deleted\n", args[0])
				if n := r.GetAssignments(); n > 0 {
					fmt.Fprintf(c.stderr, "note: %d assignment record(s) still name it; those devices are placed anew when they next connect\n", n)
				}
				return nil
			})
		},
	}

	drain := &cobra.Command{
		Use:   "drain GROUP",
		Short: "Take no new device into a group; the rebalancer moves its devices away",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				r, err := cl.DrainGroup(ctx, &adminv1.DrainGroupRequest{GroupId: args[0]})
				if err != nil {
					return c.rpcError("group drain", err)
				}
				fmt.Fprintf(c.stdout, "group %s %s\n", args[0], r.GetState())
				return nil
			})
		},
	}
	undrain := &cobra.Command{
		Use:   "undrain GROUP",
		Short: "Make a draining or disabled group active again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				r, err := cl.UndrainGroup(ctx, &adminv1.UndrainGroupRequest{GroupId: args[0]})
				if err != nil {
					return c.rpcError("group undrain", err)
				}
				fmt.Fprintf(c.stdout, "group %s %s\n", args[0], r.GetState())
				return nil
			})
		},
	}
	group.AddCommand(put, del, drain, undrain)
	return groups, group
}
