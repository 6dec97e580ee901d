package access

import (
	"context"

	"google.golang.org/grpc/credentials"
)

// APIKeyCredentials presents key on every call as `authorization: Bearer
// <key>`. It does not demand TLS, so that a loopback dev cluster works
// without; off loopback the connection must be TLS, or the key travels in
// clear.
func APIKeyCredentials(key string) credentials.PerRPCCredentials { return bearer(key) }

type bearer string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (bearer) RequireTransportSecurity() bool { return false }
