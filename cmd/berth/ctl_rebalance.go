package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
)

// newCtlRebalanceCmd returns `rebalance status|pause|resume`.
func newCtlRebalanceCmd(c *ctlFlags) *cobra.Command {
	rb := &cobra.Command{Use: "rebalance", Short: "See, pause and resume the rebalancer that moves connected devices"}
	rb.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "The rebalancer's plan (devices to move and why), progress, rate and ETA",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				st, err := cl.GetRebalanceStatus(ctx, &adminv1.GetRebalanceStatusRequest{})
				if err != nil {
					return c.rpcError("rebalance status", err)
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
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				if _, err := cl.PauseRebalance(ctx, &adminv1.PauseRebalanceRequest{PausedBy: whoami(), Reason: reason}); err != nil {
					return c.rpcError("rebalance pause", err)
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
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				if _, err := cl.ResumeRebalance(ctx, &adminv1.ResumeRebalanceRequest{}); err != nil {
					return c.rpcError("rebalance resume", err)
				}
				fmt.Fprintln(c.stdout, "rebalancer resumed")
				return nil
			})
		},
	})
	return rb
}

// printRebalanceStatus writes st as text or JSON.
func printRebalanceStatus(c *ctlFlags, st *adminv1.GetRebalanceStatusResponse, now time.Time) error {
	switch c.output {
	case "json":
		b, err := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true}.Marshal(st)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(c.stdout, string(b))
		return err
	case "table":
	default:
		return fmt.Errorf("--output %q: want table or json", c.output)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	leader := st.GetLeader()
	if leader == "" {
		leader = "none (no control plane runs the rebalancer)"
	}
	if st.GetUpdatedAt() != nil {
		leader += fmt.Sprintf(" (state stored %s ago)", now.Sub(st.GetUpdatedAt().AsTime()).Round(100*time.Millisecond))
	}
	fmt.Fprintf(tw, "leader\t%s\n", leader)
	paused := "no"
	if st.GetPaused() {
		paused = "yes, by " + firstOf(st.GetPausedBy(), "?")
		if st.GetPausedReason() != "" {
			paused += ": " + st.GetPausedReason()
		}
	}
	fmt.Fprintf(tw, "paused\t%s\n", paused)
	fmt.Fprintf(tw, "held\t%s\n", firstOf(st.GetHeld(), "no"))
	p := st.GetPlan()
	fmt.Fprintf(tw, "plan\t%d to move: policy %d, drain %d, balance %d; waiting %d, unmigrated %d (policy version %d)\n",
		p.GetTotal(), p.GetPolicy(), p.GetDrain(), p.GetBalance(), p.GetWaiting(), p.GetUnmigrated(), p.GetPolicyVersion())
	g := st.GetProgress()
	var prog string
	switch {
	case g.GetStartedAt() == nil:
		prog = "no migration yet"
	case g.GetFinishedAt() == nil:
		prog = fmt.Sprintf("under way since %s: moved %d, failed %d, in flight %d, %.1f moves/s, ETA %s",
			g.GetStartedAt().AsTime().Format(time.RFC3339), g.GetMoved(), g.GetFailed(), g.GetInFlight(), g.GetRate(), g.GetEta().AsDuration().Round(time.Second))
	default:
		prog = fmt.Sprintf("last migration took %s: moved %d, failed %d",
			g.GetFinishedAt().AsTime().Sub(g.GetStartedAt().AsTime()).Round(100*time.Millisecond), g.GetMoved(), g.GetFailed())
	}
	fmt.Fprintf(tw, "progress\t%s\n", prog)
	s := st.GetSettings()
	fmt.Fprintf(tw, "settings\trate %.4g/s, thresholds %.0f%% and %d devices, min interval %s\n",
		s.GetRateLimit(), 100*s.GetRelativeThreshold(), s.GetAbsoluteThreshold(), s.GetMinInterval().AsDuration())
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.GetGroups()) == 0 {
		return nil
	}
	fmt.Fprintln(c.stdout)
	tw = tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join([]string{"GROUP", "STATE", "CONNECTED", "FAIR", "CAPACITY"}, "\t"))
	for _, gr := range st.GetGroups() {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%d\n", gr.GetGroupId(), gr.GetState(), gr.GetConnected(), gr.GetFair(), gr.GetCapacity())
	}
	return tw.Flush()
}
