package admin

import (
	"context"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthproject/berth/access"
	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	"github.com/berthproject/berth/registry"
)

// AccessStore stores API keys and reads the audit trail.
// *registry.Registry implements it; a Server without one (Deps.Access nil)
// answers those calls UNIMPLEMENTED.
type AccessStore interface {
	CreateAPIKey(ctx context.Context, k registry.APIKey) error
	APIKeys(ctx context.Context) ([]registry.APIKey, error)
	RevokeAPIKey(ctx context.Context, id string) (registry.APIKey, error)
	AuditEntries(ctx context.Context, before string, limit int) ([]registry.AuditEntry, string, error)
}

var _ AccessStore = (*registry.Registry)(nil)

// KeyView is the replica's watch-fed view of the API keys.
// *registry.APIKeyView implements it.
type KeyView interface {
	APIKey(id string) (registry.APIKey, bool)
}

var _ KeyView = (*registry.APIKeyView)(nil)

// settleKey waits, at most cacheSettle, until this replica's view of the
// keys shows key id as done says.
func (a *Server) settleKey(ctx context.Context, id string, done func(registry.APIKey, bool) bool) {
	if a.keys == nil {
		return
	}
	a.settleFunc(ctx, func() bool { return done(a.keys.APIKey(id)) })
}

func (a *Server) accessStore() (AccessStore, error) {
	if a.access == nil {
		return nil, status.Error(codes.Unimplemented, "this control plane keeps no API keys or audit trail")
	}
	return a.access, nil
}

// CreateAPIKey implements AdminService.CreateAPIKey.
func (a *Server) CreateAPIKey(ctx context.Context, req *adminv1.CreateAPIKeyRequest) (*adminv1.CreateAPIKeyResponse, error) {
	st, err := a.accessStore()
	if err != nil {
		return nil, err
	}
	k, secret, err := access.NewAPIKey(req.GetName(), req.GetRoles(), req.GetTenants(), req.GetTopics(), access.Who(ctx, ""), a.now())
	if err != nil {
		return nil, rebalanceStatus(err, "api key")
	}
	if err := st.CreateAPIKey(ctx, k); err != nil {
		return nil, rebalanceStatus(err, "api key")
	}
	a.log.Info("api key created", "id", k.ID, "name", k.Name, "roles", k.Roles, "by", k.CreatedBy)
	a.settleKey(ctx, k.ID, func(_ registry.APIKey, ok bool) bool { return ok })
	return &adminv1.CreateAPIKeyResponse{Key: apiKeyProto(k), Secret: secret}, nil
}

// ListAPIKeys implements AdminService.ListAPIKeys.
func (a *Server) ListAPIKeys(ctx context.Context, req *adminv1.ListAPIKeysRequest) (*adminv1.ListAPIKeysResponse, error) {
	pg, err := newPage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	st, err := a.accessStore()
	if err != nil {
		return nil, err
	}
	keys, err := st.APIKeys(ctx)
	if err != nil {
		return nil, rebalanceStatus(err, "api keys")
	}
	page, next := pageOf(pg, func(k registry.APIKey) string { return k.ID }, slices.Values(keys))
	out := &adminv1.ListAPIKeysResponse{NextPageToken: next}
	for _, k := range page {
		out.Keys = append(out.Keys, apiKeyProto(k))
	}
	return out, nil
}

// RevokeAPIKey implements AdminService.RevokeAPIKey.
func (a *Server) RevokeAPIKey(ctx context.Context, req *adminv1.RevokeAPIKeyRequest) (*adminv1.RevokeAPIKeyResponse, error) {
	st, err := a.accessStore()
	if err != nil {
		return nil, err
	}
	if !registry.ValidID(req.GetId()) {
		return nil, invalidField("id", "%q: want an API key id", req.GetId())
	}
	k, err := st.RevokeAPIKey(ctx, req.GetId())
	if err != nil {
		return nil, rebalanceStatus(err, "api key "+req.GetId())
	}
	a.log.Info("api key revoked", "id", k.ID, "name", k.Name, "by", access.Who(ctx, ""))
	a.settleKey(ctx, k.ID, func(k registry.APIKey, ok bool) bool { return !ok || k.Disabled })
	return &adminv1.RevokeAPIKeyResponse{Key: apiKeyProto(k)}, nil
}

// ListAudit implements AdminService.ListAudit.
func (a *Server) ListAudit(ctx context.Context, req *adminv1.ListAuditRequest) (*adminv1.ListAuditResponse, error) {
	pg, err := newPage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	st, err := a.accessStore()
	if err != nil {
		return nil, err
	}
	entries, next, err := st.AuditEntries(ctx, pg.after, pg.size)
	if err != nil {
		return nil, rebalanceStatus(err, "audit trail")
	}
	out := &adminv1.ListAuditResponse{}
	if next != "" {
		out.NextPageToken = pageToken(next)
	}
	for _, e := range entries {
		out.Entries = append(out.Entries, &adminv1.AuditEntry{Id: e.ID, At: timestamppb.New(e.At), Who: e.Who, Method: e.Method,
			Target: e.Target, Peer: e.Peer, Outcome: e.Outcome})
	}
	return out, nil
}

func apiKeyProto(k registry.APIKey) *adminv1.APIKey {
	return &adminv1.APIKey{Id: k.ID, Name: k.Name, Roles: k.Roles, Tenants: k.Tenants, Topics: k.Topics,
		CreatedAt: timestamppb.New(k.CreatedAt), CreatedBy: k.CreatedBy, Disabled: k.Disabled}
}
