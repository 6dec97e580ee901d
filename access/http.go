package access

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// AuthorizeHeader checks an HTTP request's Authorization header value
// ("Bearer <key>") as the interceptors check a gRPC call of fullMethod
// with req: the same API keys, roles and tenant limits, counted and logged
// the same way. It returns the caller, or a status: UNAUTHENTICATED (no
// key, or one unknown, wrong or revoked), PERMISSION_DENIED (a key without
// the role, or outside its tenants) or UNAVAILABLE (keys not read yet).
// Reads only: nothing is audited. The operations listener's fleet page
// uses it.
func (g *Guard) AuthorizeHeader(ctx context.Context, authorization, fullMethod string, req any) (*Identity, error) {
	if authorization == "" {
		g.refused.Refused("unauthenticated", "method", fullMethod, "why", "no Authorization header")
		return nil, status.Error(codes.Unauthenticated, "no credentials: present an API key as `Authorization: Bearer <key>`")
	}
	// Only the header, never the caller's peer: a client certificate on
	// the operations listener names no one here.
	md := metadata.Pairs("authorization", authorization)
	actx, err := g.Authenticate(metadata.NewIncomingContext(context.WithoutCancel(ctx), md))
	if err != nil {
		return nil, err
	}
	id := FromContext(actx)
	if _, err := g.authorize(id, fullMethod, req); err != nil {
		return nil, err
	}
	return id, nil
}
