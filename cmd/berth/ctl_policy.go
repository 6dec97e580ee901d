package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/berthproject/berth/admin"
	"github.com/berthproject/berth/placement"
	"github.com/berthproject/berth/policy"
	"github.com/berthproject/berth/registry"
)

// newCtlPolicyCmds adds policy, tenant and explain commands to ctl.
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
				if migrate {
					fmt.Fprintf(c.stdout, "policy applied: version %d (was %d); the rebalancer moves the devices it relabels\n", v, based)
					return nil
				}
				fmt.Fprintf(c.stdout, "policy applied: version %d (was %d)\n", v, based)
				return nil
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
			return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
				sp, err := reg.Policy(ctx)
				if errors.Is(err, registry.ErrNotFound) {
					fmt.Fprintln(c.stdout, "# no policy applied: the built-in default is in force")
					sp = registry.StoredPolicy{Document: []byte(`{"defaultLabel":"default"}`)}
				} else if err != nil {
					return err
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
			return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
				snap, err := reg.LoadSnapshot(ctx)
				if err != nil {
					return err
				}
				pol, warns, err := placement.ValidatePolicy(doc, snap)
				if err != nil {
					return explainPolicyError(err)
				}
				for _, w := range warns {
					fmt.Fprintln(c.stderr, "warning:", w)
				}
				recs, err := reg.Assignments(ctx)
				if err != nil {
					return err
				}
				hist, err := reg.Histories(ctx)
				if err != nil {
					return err
				}
				now := time.Now()
				r := placement.DryRun(snap, pol, func(fn func(registry.Assignment) bool) {
					for _, a := range recs {
						if !fn(a) {
							return
						}
					}
				}, func(id string) registry.History { return hist[id].Decayed(now) })
				if c.output == "json" {
					return json.NewEncoder(c.stdout).Encode(r)
				}
				fmt.Fprintf(c.stdout, "known devices: %d; label changes: %d; group changes: %d\n", r.Devices, r.LabelChanges, r.GroupChanges)
				tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "LABEL\tDEVICES\tLABEL CHANGES\tGROUP CHANGES")
				for _, l := range r.ByLabel {
					fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", l.Label, l.Devices, l.LabelChanges, l.GroupChanges)
				}
				return tw.Flush()
			})
		},
	}
	dry.Flags().StringVarP(&file, "file", "f", "", "policy document, YAML or JSON ('-' for stdin)")
	_ = dry.MarkFlagRequired("file")
	pol.AddCommand(apply, get, dry)

	tenant := &cobra.Command{Use: "tenant", Short: "Change one tenant"}
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

	tenants := &cobra.Command{
		Use:   "tenants",
		Short: "List tenants",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
				ts, err := reg.Tenants(ctx)
				if err != nil {
					return err
				}
				return printRows(c, ts, []string{"TENANT", "ATTRIBUTES", "SERVICES"}, func(t registry.Tenant) []string {
					return []string{t.ID, kvString(t.Attributes), strings.Join(t.Services, ",")}
				})
			})
		},
	}

	explain := &cobra.Command{
		Use:   "explain DEVICE",
		Short: "Decide again for a device and show why: inputs, rule, candidates, choice",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
				rec, err := reg.Assignment(ctx, args[0])
				if err != nil {
					return err
				}
				snap, err := reg.LoadSnapshot(ctx)
				if err != nil {
					return err
				}
				pol := policy.Default()
				if snap.Policy != nil {
					if pol, err = placement.CompileStored(*snap.Policy); err != nil {
						return err
					}
				}
				traffic, err := reg.History(ctx, args[0])
				if err != nil && !errors.Is(err, registry.ErrNotFound) {
					return err
				}
				r := admin.ExplainResponse(snap, pol, rec, traffic.Decayed(time.Now()))
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
			})
		},
	}
	return []*cobra.Command{pol, tenant, tenants, explain}
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
