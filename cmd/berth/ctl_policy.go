package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	"github.com/berthproject/berth/policy"
	"github.com/berthproject/berth/registry"
)

// defaultPolicyDocument is what `policy get` shows when no policy was
// applied: the built-in default.
const defaultPolicyDocument = `{"defaultLabel":"default"}`

// newCtlPolicyCmds adds `policy apply|get|dry-run` and `explain` to ctl.
func newCtlPolicyCmds(c *ctlFlags) []*cobra.Command {
	pol := &cobra.Command{Use: "policy", Short: "Read, check and apply the placement policy"}

	var file string
	var migrate bool
	apply := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Validate a policy document (YAML or JSON) completely and store it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			doc, err := readDoc(file)
			if err != nil {
				return err
			}
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				var based int64
				cur, err := cl.GetPolicy(ctx, &adminv1.GetPolicyRequest{})
				switch {
				case err == nil:
					based = cur.GetVersion()
				case status.Code(err) != codes.NotFound:
					return c.rpcError("policy apply", err)
				}
				r, err := cl.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Document: string(doc), BasedOnVersion: based, AppliedBy: whoami(), Migrate: migrate})
				if err != nil {
					return c.policyError("policy apply", err)
				}
				for _, w := range r.GetWarnings() {
					fmt.Fprintln(c.stderr, "warning:", w)
				}
				return printApplied(c, r.GetVersion(), based, migrate)
			})
		},
	}
	apply.Flags().StringVarP(&file, "file", "f", "", "policy document, YAML or JSON ('-' for stdin)")
	apply.Flags().BoolVar(&migrate, "migrate", false, "let the rebalancer move connected devices whose label the policy changes (else they move when they reconnect)")
	_ = apply.MarkFlagRequired("file")

	get := &cobra.Command{
		Use:   "get",
		Short: "Show the policy in force and its version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				r, err := cl.GetPolicy(ctx, &adminv1.GetPolicyRequest{})
				if status.Code(err) == codes.NotFound {
					return printPolicy(c, registry.StoredPolicy{}, false)
				}
				if err != nil {
					return c.rpcError("policy get", err)
				}
				return printPolicy(c, registry.StoredPolicy{Document: []byte(r.GetDocument()), Version: r.GetVersion(),
					AppliedAt: optTime(r.GetAppliedAt()), AppliedBy: r.GetAppliedBy()}, true)
			})
		},
	}

	dry := &cobra.Command{
		Use:   "dry-run -f FILE",
		Short: "Tell how many known devices a policy would relabel or move, by label",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			doc, err := readDoc(file)
			if err != nil {
				return err
			}
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				r, err := cl.DryRunPolicy(ctx, &adminv1.DryRunPolicyRequest{Document: string(doc)})
				if err != nil {
					return c.policyError("policy dry-run", err)
				}
				for _, w := range r.GetWarnings() {
					fmt.Fprintln(c.stderr, "warning:", w)
				}
				return printDryRun(c, r)
			})
		},
	}
	dry.Flags().StringVarP(&file, "file", "f", "", "policy document, YAML or JSON ('-' for stdin)")
	_ = dry.MarkFlagRequired("file")
	pol.AddCommand(apply, get, dry)

	explain := &cobra.Command{
		Use:   "explain DEVICE",
		Short: "Decide again for a device and show why: inputs, rule, candidates, choice",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				r, err := cl.Explain(ctx, &adminv1.ExplainRequest{DeviceId: args[0]})
				if err != nil {
					return c.rpcError("explain", err)
				}
				return printExplain(c, r)
			})
		},
	}
	return []*cobra.Command{pol, explain}
}

// printApplied confirms a stored policy.
func printApplied(c *ctlFlags, version, based int64, migrate bool) error {
	if migrate {
		fmt.Fprintf(c.stdout, "policy applied: version %d (was %d); the rebalancer moves the devices it relabels\n", version, based)
		return nil
	}
	fmt.Fprintf(c.stdout, "policy applied: version %d (was %d)\n", version, based)
	return nil
}

// printPolicy writes the policy in force (found false: none was applied,
// the built-in default is in force) as YAML with a comment, or as JSON.
func printPolicy(c *ctlFlags, sp registry.StoredPolicy, found bool) error {
	if !found {
		if c.output != "json" {
			fmt.Fprintln(c.stdout, "# no policy applied: the built-in default is in force")
		}
		sp = registry.StoredPolicy{Document: []byte(defaultPolicyDocument)}
	}
	if c.output == "json" {
		return json.NewEncoder(c.stdout).Encode(map[string]any{"version": sp.Version, "applied_at": sp.AppliedAt, "applied_by": sp.AppliedBy, "document": sp.Document})
	}
	y, err := yaml.JSONToYAML(sp.Document)
	if err != nil {
		return err
	}
	if sp.Version != 0 {
		fmt.Fprintf(c.stdout, "# version %d, applied %s by %s\n", sp.Version, sp.AppliedAt.Format(time.RFC3339), sp.AppliedBy)
	}
	_, err = c.stdout.Write(y)
	return err
}

// dryRunResult is `policy dry-run -o json`, as it always printed.
type dryRunResult struct {
	Devices, LabelChanges, GroupChanges int
	ByLabel                             []dryRunLabel
}

// dryRunLabel is one label of a dryRunResult.
type dryRunLabel struct {
	Label                               string
	Devices, LabelChanges, GroupChanges int
}

// printDryRun writes what a policy would change.
func printDryRun(c *ctlFlags, r *adminv1.DryRunPolicyResponse) error {
	res := dryRunResult{Devices: int(r.GetDevices()), LabelChanges: int(r.GetLabelChanges()), GroupChanges: int(r.GetGroupChanges())}
	for _, l := range r.GetByLabel() {
		res.ByLabel = append(res.ByLabel, dryRunLabel{Label: l.GetLabel(), Devices: int(l.GetDevices()), LabelChanges: int(l.GetLabelChanges()), GroupChanges: int(l.GetGroupChanges())})
	}
	if c.output == "json" {
		return json.NewEncoder(c.stdout).Encode(res)
	}
	fmt.Fprintf(c.stdout, "known devices: %d; label changes: %d; group changes: %d\n", res.Devices, res.LabelChanges, res.GroupChanges)
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LABEL\tDEVICES\tLABEL CHANGES\tGROUP CHANGES")
	for _, l := range res.ByLabel {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", l.Label, l.Devices, l.LabelChanges, l.GroupChanges)
	}
	return tw.Flush()
}

// printExplain writes a placement decision, explained.
func printExplain(c *ctlFlags, r *adminv1.ExplainResponse) error {
	if c.output == "json" {
		b, err := protojson.MarshalOptions{Multiline: true}.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(c.stdout, string(b))
		return err
	}
	w := c.stdout
	in := r.GetInput()
	fmt.Fprintf(w, "device %s\n", r.GetDeviceId())
	fmt.Fprintf(w, "  inputs:   model=%q firmware=%q attributes={%s}\n", in.GetDevice().GetModel(), in.GetDevice().GetFirmware(), kvString(in.GetDevice().GetAttributes()))
	fmt.Fprintf(w, "            tenant=%q {%s} services requested=%v entitled=%v\n", in.GetTenant().GetId(), kvString(in.GetTenant().GetAttributes()), in.GetServices().GetRequested(), in.GetServices().GetEntitled())
	fmt.Fprintf(w, "            history: last group %q, last label %q\n", in.GetHistory().GetLastGroup(), in.GetHistory().GetLastLabel())
	rule := r.GetRule()
	if rule == "" {
		rule = "(none: default label)"
	}
	fmt.Fprintf(w, "  policy:   version %d; rule %s -> label %s", r.GetPolicyVersion(), rule, r.GetLabel())
	if r.GetFromLabel() != "" && r.GetFromLabel() != r.GetLabel() {
		fmt.Fprintf(w, " (placed under fallback %s)", r.GetFromLabel())
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  GROUP\tLABEL\tUTILIZATION\tCAPACITY\tVERDICT")
	for _, cg := range r.GetCandidates() {
		verdict := "kept"
		if !cg.GetKept() {
			verdict = "dropped: " + cg.GetDropped()
		}
		if cg.GetGroupId() == r.GetGroupId() {
			verdict = "CHOSEN"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%.1f%%\t%d\t%s\n", cg.GetGroupId(), cg.GetLabel(), 100*cg.GetUtilization(), cg.GetCapacity(), verdict)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "  choice:   %s (%s)\n", orDash(r.GetGroupId()), r.GetReason())
	fmt.Fprintf(w, "  recorded: group %s, label %s, at %s: %s\n", r.GetRecordedGroupId(), r.GetRecordedLabel(), r.GetRecordedAt().AsTime().Format(time.RFC3339), r.GetRecordedReason())
	return nil
}

// policyError lists every problem of a refused document on its line, from
// the status's BadRequest detail, as explainPolicyError does for a local
// validation.
func (c *ctlFlags) policyError(what string, err error) error {
	st := status.Convert(err)
	switch st.Code() {
	case codes.InvalidArgument:
		var lines []string
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				for _, v := range br.GetFieldViolations() {
					lines = append(lines, "  "+policy.Problem{Where: v.GetField(), Reason: v.GetDescription()}.String())
				}
			}
		}
		if len(lines) > 0 {
			return fmt.Errorf("policy refused; the policy in force stays:\n%s", strings.Join(lines, "\n"))
		}
		return fmt.Errorf("policy refused; the policy in force stays: %s", st.Message())
	case codes.Aborted:
		return fmt.Errorf("%w (someone applied another policy meanwhile)", c.rpcError(what, err))
	}
	return c.rpcError(what, err)
}

// readDoc reads a policy document from a file or stdin ("-").
func readDoc(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(path)
}

// explainPolicyError lists every problem of a refused document on its line.
func explainPolicyError(err error) error {
	var ve *policy.ValidationError
	if errors.As(err, &ve) {
		lines := make([]string, len(ve.Problems))
		for i, p := range ve.Problems {
			lines[i] = "  " + p.String()
		}
		return fmt.Errorf("policy refused; the policy in force stays:\n%s", strings.Join(lines, "\n"))
	}
	if errors.Is(err, registry.ErrConflict) {
		return fmt.Errorf("%w (someone applied another policy meanwhile)", err)
	}
	return err
}
