package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	"github.com/berthproject/berth/registry"
)

// newCtlTenantCmds returns `tenants` and `tenant put|delete`.
func newCtlTenantCmds(c *ctlFlags) (tenants, tenant *cobra.Command) {
	var limit int
	tenants = &cobra.Command{
		Use:   "tenants",
		Short: "List tenants",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				ts, err := listAll(ctx, c, limit, func(ctx context.Context, size int32, token string) ([]*adminv1.Tenant, string, error) {
					r, err := cl.ListTenants(ctx, &adminv1.ListTenantsRequest{PageSize: size, PageToken: token})
					return r.GetTenants(), r.GetNextPageToken(), err
				})
				if err != nil {
					return c.rpcError("tenants", err)
				}
				rows := make([]registry.Tenant, len(ts))
				for i, t := range ts {
					rows[i] = registry.Tenant{ID: t.GetTenantId(), Attributes: t.GetAttributes(), Services: t.GetServices()}
				}
				return printTenants(c, rows)
			})
		},
	}
	tenants.Flags().IntVar(&limit, "limit", 0, "list at most this many (0: all)")

	tenant = &cobra.Command{Use: "tenant", Short: "Change one tenant"}
	var attrs map[string]string
	var services []string
	put := &cobra.Command{
		Use:   "put TENANT",
		Short: "Create or replace a tenant's attributes and entitled services",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				if _, err := cl.PutTenant(ctx, &adminv1.PutTenantRequest{TenantId: args[0], Attributes: attrs, Services: services}); err != nil {
					return c.rpcError("tenant put", err)
				}
				fmt.Fprintf(c.stdout, "tenant %s stored\n", args[0])
				return nil
			})
		},
	}
	put.Flags().StringToStringVar(&attrs, "attr", nil, "attributes, key=value (repeat or comma separate)")
	put.Flags().StringSliceVar(&services, "services", nil, "services the tenant is entitled to")
	del := &cobra.Command{
		Use:   "delete TENANT",
		Short: "Remove a tenant (its devices then read as a tenant with no attributes)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				if _, err := cl.DeleteTenant(ctx, &adminv1.DeleteTenantRequest{TenantId: args[0]}); err != nil {
					return c.rpcError("tenant delete", err)
				}
				fmt.Fprintf(c.stdout, "tenant %s deleted\n", args[0])
				return nil
			})
		},
	}
	tenant.AddCommand(put, del)
	return tenants, tenant
}
