package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berthproject/berth/access"
	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	"github.com/berthproject/berth/registry"
)

// apiKeyFlags describe a new key.
type apiKeyFlags struct {
	name                   string
	roles, tenants, topics []string
}

func (k *apiKeyFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&k.name, "name", "", "whose key it is (shown in audit entries)")
	f.StringSliceVar(&k.roles, "role", nil, "role(s): admin, operator, viewer, service (repeat or comma separate)")
	f.StringSliceVar(&k.tenants, "tenant", nil, "limit a service key to devices of these tenants")
	f.StringSliceVar(&k.topics, "topic", nil, "limit a service key's subscriptions to these topics")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.MarkFlagRequired("role")
}

// printSecret shows a new key's secret, once.
func printSecret(c *ctlFlags, id, secret string) {
	fmt.Fprintf(c.stdout, "api key %s created; its secret, shown only now:\n%s\n", id, secret)
}

// newCtlAPIKeyCmd returns `ctl apikey create|list|revoke`, through
// AdminService (role admin).
func newCtlAPIKeyCmd(c *ctlFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "apikey", Short: "Create, list and revoke API keys of services and operators (role admin)"}
	var kf apiKeyFlags
	create := &cobra.Command{
		Use:   "create --name NAME --role ROLE",
		Short: "Create an API key; its secret is printed once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				r, err := cl.CreateAPIKey(ctx, &adminv1.CreateAPIKeyRequest{Name: kf.name, Roles: kf.roles, Tenants: kf.tenants, Topics: kf.topics})
				if err != nil {
					return c.rpcError("create api key", err)
				}
				if c.output == "json" {
					return c.printProto(r)
				}
				printSecret(c, r.GetKey().GetId(), r.GetSecret())
				return nil
			})
		},
	}
	kf.add(create)
	list := &cobra.Command{
		Use:   "list",
		Short: "List API keys (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				keys, err := listAll(ctx, c, 0, func(ctx context.Context, size int32, token string) ([]*adminv1.APIKey, string, error) {
					r, err := cl.ListAPIKeys(ctx, &adminv1.ListAPIKeysRequest{PageSize: size, PageToken: token})
					if err != nil {
						return nil, "", c.rpcError("list api keys", err)
					}
					return r.GetKeys(), r.GetNextPageToken(), nil
				})
				if err != nil {
					return err
				}
				return printRows(c, keys, []string{"ID", "NAME", "ROLES", "TENANTS", "TOPICS", "CREATED", "BY", "REVOKED"}, func(k *adminv1.APIKey) []string {
					return []string{k.GetId(), k.GetName(), strings.Join(k.GetRoles(), ","), orDash(strings.Join(k.GetTenants(), ",")),
						orDash(strings.Join(k.GetTopics(), ",")), k.GetCreatedAt().AsTime().Format(time.RFC3339), orDash(k.GetCreatedBy()), yesNo(k.GetDisabled())}
				})
			})
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an API key: every control plane refuses it within about 2 seconds",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				if _, err := cl.RevokeAPIKey(ctx, &adminv1.RevokeAPIKeyRequest{Id: args[0]}); err != nil {
					return c.rpcError("revoke api key", err)
				}
				fmt.Fprintf(c.stdout, "api key %s revoked\n", args[0])
				return nil
			})
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

// newCtlAuditCmd returns `ctl audit`: the audit trail, newest first
// (roles admin and operator).
func newCtlAuditCmd(c *ctlFlags) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit trail, newest first: who changed what, when, from where, and how it ended",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				entries, err := listAll(ctx, c, limit, func(ctx context.Context, size int32, token string) ([]*adminv1.AuditEntry, string, error) {
					r, err := cl.ListAudit(ctx, &adminv1.ListAuditRequest{PageSize: size, PageToken: token})
					if err != nil {
						return nil, "", c.rpcError("audit", err)
					}
					return r.GetEntries(), r.GetNextPageToken(), nil
				})
				if err != nil {
					return err
				}
				return printRows(c, entries, []string{"AT", "WHO", "METHOD", "TARGET", "PEER", "OUTCOME"}, func(e *adminv1.AuditEntry) []string {
					method := e.GetMethod()
					if i := strings.LastIndex(method, "/"); i >= 0 {
						method = method[i+1:]
					}
					return []string{e.GetAt().AsTime().Format(time.RFC3339), e.GetWho(), method, orDash(e.GetTarget()), orDash(e.GetPeer()), e.GetOutcome()}
				})
			})
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 100, "most entries to show (0: all)")
	return cmd
}

// newRegistryAPIKeyCmd returns `ctl registry apikey create`: the
// break-glass way to make the first admin key, writing etcd directly.
func newRegistryAPIKeyCmd(c *ctlFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "apikey", Short: "Break-glass: create an API key in etcd directly (the first admin key)"}
	var kf apiKeyFlags
	create := &cobra.Command{
		Use:   "create --name NAME --role ROLE",
		Short: "Create an API key in etcd; its secret is printed once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withRegistry(cmd.Context(), func(ctx context.Context, reg *registry.Registry) error {
				k, secret, err := access.NewAPIKey(kf.name, kf.roles, kf.tenants, kf.topics, "ctl registry: "+whoami(), time.Now())
				if err != nil {
					return err
				}
				if err := reg.CreateAPIKey(ctx, k); err != nil {
					return err
				}
				if c.output == "json" {
					return printJSON(c, map[string]string{"id": k.ID, "secret": secret})
				}
				printSecret(c, k.ID, secret)
				return nil
			})
		},
	}
	kf.add(create)
	cmd.AddCommand(create)
	return cmd
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// printJSON writes v as indented JSON.
func printJSON(c *ctlFlags, v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
