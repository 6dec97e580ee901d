package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	"github.com/berthproject/berth/registry"
)

// newCtlFleetCmds returns `executors`, `executor drain|undrain` and
// `devices`.
func newCtlFleetCmds(c *ctlFlags) (executors, executor, devices *cobra.Command) {
	var limit int
	var group string
	executors = &cobra.Command{
		Use:   "executors",
		Short: "List registered executors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				es, err := listAll(ctx, c, limit, func(ctx context.Context, size int32, token string) ([]*adminv1.Executor, string, error) {
					r, err := cl.ListExecutors(ctx, &adminv1.ListExecutorsRequest{PageSize: size, PageToken: token, GroupId: group})
					return r.GetExecutors(), r.GetNextPageToken(), err
				})
				if err != nil {
					return c.rpcError("executors", err)
				}
				rows := make([]registry.Executor, len(es))
				for i, e := range es {
					rows[i] = registry.Executor{ID: e.GetExecutorId(), GroupID: e.GetGroupId(), Address: e.GetAddress(), InternalAddress: e.GetInternalAddress(), Capacity: int(e.GetCapacity()),
						Connections: int(e.GetConnections()), Load: e.GetLoad(), Draining: e.GetDraining(), DrainMarked: e.GetDrainMarked(), UpdatedAt: optTime(e.GetUpdatedAt())}
				}
				return printExecutors(c, rows)
			})
		},
	}
	executors.Flags().IntVar(&limit, "limit", 0, "list at most this many (0: all)")
	executors.Flags().StringVar(&group, "group", "", "only executors of this group")

	executor = &cobra.Command{Use: "executor", Short: "Drain or undrain one executor"}
	var allowUnregistered bool
	drain := &cobra.Command{
		Use:   "drain ID",
		Short: "Stop Assign naming an executor; the rebalancer moves its devices to others (the mark outlives restarts)",
		Long: "Stop Assign naming an executor; the rebalancer moves its devices to others. The mark outlives\n" +
			"restarts until undrain. An executor that is not registered is refused (exit 3) unless\n" +
			"--allow-unregistered (to mark one about to start).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				r, err := cl.DrainExecutor(ctx, &adminv1.DrainExecutorRequest{ExecutorId: args[0], DrainedBy: whoami(), AllowUnregistered: allowUnregistered})
				if err != nil {
					return c.rpcError("executor drain", err)
				}
				if !r.GetRegistered() {
					fmt.Fprintf(c.stderr, "warning: executor %s is not registered now; the mark applies when it registers\n", args[0])
				}
				fmt.Fprintf(c.stdout, "executor %s drained\n", args[0])
				return nil
			})
		},
	}
	drain.Flags().BoolVar(&allowUnregistered, "allow-unregistered", false, "mark an executor that is not registered now; the mark applies when it registers")
	executor.AddCommand(drain, &cobra.Command{
		Use:   "undrain ID",
		Short: "Remove an executor's drain mark",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				r, err := cl.UndrainExecutor(ctx, &adminv1.UndrainExecutorRequest{ExecutorId: args[0]})
				if err != nil {
					return c.rpcError("executor undrain", err)
				}
				if !r.GetWasDrained() {
					fmt.Fprintf(c.stdout, "executor %s was not drained\n", args[0])
					return nil
				}
				fmt.Fprintf(c.stdout, "executor %s undrained\n", args[0])
				return nil
			})
		},
	})

	var devLimit int
	var devGroup string
	devices = &cobra.Command{
		Use:   "devices",
		Short: "List devices' assignment records",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				ds, err := listAll(ctx, c, devLimit, func(ctx context.Context, size int32, token string) ([]*adminv1.Device, string, error) {
					r, err := cl.ListDevices(ctx, &adminv1.ListDevicesRequest{PageSize: size, PageToken: token, GroupId: devGroup})
					return r.GetDevices(), r.GetNextPageToken(), err
				})
				if err != nil {
					return c.rpcError("devices", err)
				}
				rows := make([]registry.Assignment, len(ds))
				for i, d := range ds {
					rows[i] = assignmentOf(d)
				}
				return printDevices(c, rows)
			})
		},
	}
	devices.Flags().IntVar(&devLimit, "limit", 0, "list at most this many (0: all)")
	devices.Flags().StringVar(&devGroup, "group", "", "only devices whose record names this group")
	return executors, executor, devices
}

// assignmentOf is a listed device as the assignment record it came from,
// so that -o json prints what it always printed.
func assignmentOf(d *adminv1.Device) registry.Assignment {
	a := registry.Assignment{DeviceID: d.GetDeviceId(), GroupID: d.GetGroupId(), Label: d.GetLabel(), AssignedAt: optTime(d.GetAssignedAt()),
		Rule: d.GetRule(), Reason: d.GetReason(), PolicyVersion: d.GetPolicyVersion(), Writer: d.GetWriter(), MovedAt: optTime(d.GetMovedAt())}
	if in := d.GetInputs(); in != nil {
		a.Inputs = &registry.DeviceInputs{Model: in.GetModel(), Firmware: in.GetFirmware(), Attributes: in.GetAttributes(),
			Tenant: in.GetTenantId(), User: in.GetUserId(), Services: in.GetServices(), Weight: in.GetWeight()}
	}
	return a
}

// optTime is t as a time, the zero time when unset.
func optTime(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime()
}
