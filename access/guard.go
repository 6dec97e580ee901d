package access

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/internal/refusallog"
	"github.com/berthproject/berth/registry"
)

// Keys finds stored API keys by id. *registry.APIKeyView implements it.
type Keys interface {
	APIKey(id string) (registry.APIKey, bool)
	// Loaded reports whether the keys were read at least once: before,
	// an unknown key may be one not read yet.
	Loaded() bool
}

// Assignments finds a device's assignment record, whose tenant limits
// service callers. *registry.Cache implements it.
type Assignments interface {
	Assignment(deviceID string) (registry.Assignment, bool)
}

// AuditLog stores audit entries, keeping at most limit.
// *registry.Registry implements it.
type AuditLog interface {
	AppendAudit(ctx context.Context, e registry.AuditEntry, limit int) error
}

var (
	_ Keys        = (*registry.APIKeyView)(nil)
	_ Assignments = (*registry.Cache)(nil)
	_ AuditLog    = (*registry.Registry)(nil)
)

// auditTimeout bounds the write of one audit entry.
const auditTimeout = 2 * time.Second

// Config tunes a Guard.
type Config struct {
	// OperatorCAs, when set, authenticate callers by client certificate:
	// a certificate that chains to one of them names the caller (SAN URI
	// berth://service/<name>, else its CN). Nil: API keys only.
	OperatorCAs *x509.CertPool
	// CertRoles gives the roles of each certificate name; a name without
	// an entry authenticates but may call nothing.
	CertRoles map[string][]Role
	// AuditLimit bounds the audit trail (0: registry.DefaultAuditLimit).
	AuditLimit int
}

// Deps are what a Guard reads and writes.
type Deps struct {
	// Keys are the API keys. Required.
	Keys Keys
	// Assignments give devices' tenants. Required.
	Assignments Assignments
	// Audit stores the audit trail. Required.
	Audit AuditLog
	// Log may be nil.
	Log *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Guard authenticates and authorizes the callers of the protected
// services, and audits their changes.
type Guard struct {
	cfg     Config
	deps    Deps
	refused *refusallog.Log // refused callers, logged at warn, rate-limited
}

// New returns a Guard. It starts nothing and does no I/O.
func New(cfg Config, deps Deps) (*Guard, error) {
	if deps.Keys == nil || deps.Assignments == nil || deps.Audit == nil {
		return nil, errors.New("access: a guard needs keys, assignments and an audit log")
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	return &Guard{cfg: cfg, deps: deps, refused: refusallog.New(deps.Log, "caller refused", refusallog.DefaultInterval, deps.Now)}, nil
}

// Refusals counts the callers refused so far, by reason
// ("unauthenticated", "permission denied").
func (g *Guard) Refusals() map[string]uint64 { return g.refused.Counts() }

// ServerOptions are the interceptors to add to a server: for the calls of
// the protected services only, authentication (go-grpc-middleware's auth
// contract: a service's AuthFuncOverride, else Authenticate) and then
// authorization and audit. Other calls pass straight through: one
// interceptor each way, deciding on the method name as it is, so that the
// calls the guard does not see (health checks, Assign) pay nothing for it.
func (g *Guard) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(g.unary), grpc.ChainStreamInterceptor(g.stream)}
}

// unary guards the unary calls of the protected services.
func (g *Guard) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !IsProtected(info.FullMethod) {
		return handler(ctx, req)
	}
	ctx, err := g.authFor(ctx, info.Server, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return g.authorizeUnary(ctx, req, info, handler)
}

// stream guards the streams of the protected services.
func (g *Guard) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !IsProtected(info.FullMethod) {
		return handler(srv, ss)
	}
	ctx, err := g.authFor(ss.Context(), srv, info.FullMethod)
	if err != nil {
		return err
	}
	w := middleware.WrapServerStream(ss)
	w.WrappedContext = ctx
	return g.authorizeStream(srv, w, info, handler)
}

// authFor authenticates a call as go-grpc-middleware's auth interceptors
// do: with the service's own AuthFuncOverride when it has one.
func (g *Guard) authFor(ctx context.Context, srv any, fullMethod string) (context.Context, error) {
	if o, ok := srv.(auth.ServiceAuthFuncOverride); ok {
		return o.AuthFuncOverride(ctx, fullMethod)
	}
	return g.Authenticate(ctx)
}

// missing answers a call without credentials.
var missing = status.Error(codes.Unauthenticated, "no credentials: present an API key as `authorization: Bearer <key>` or a client certificate of the operator CA")

// Authenticate is the auth.AuthFunc: it returns ctx with the caller's
// Identity, or UNAUTHENTICATED (counted, and logged at warn at most once a
// second with the peer, the method and why; never the credential).
func (g *Guard) Authenticate(ctx context.Context) (context.Context, error) {
	out, err := g.authenticate(ctx)
	if status.Code(err) == codes.Unauthenticated {
		method, _ := grpc.Method(ctx)
		addr := ""
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			addr = p.Addr.String()
		}
		g.refused.Refused("unauthenticated", "peer", addr, "method", method, "why", status.Convert(err).Message())
	}
	return out, err
}

func (g *Guard) authenticate(ctx context.Context) (context.Context, error) {
	if key, err := auth.AuthFromMD(ctx, "bearer"); err == nil {
		id, err := g.keyIdentity(key)
		if errors.Is(err, errKeysLoading) {
			return nil, err
		}
		if err != nil {
			return nil, status.Error(codes.Unauthenticated, strings.TrimPrefix(err.Error(), ErrUnauthenticated.Error()+": "))
		}
		return NewContext(ctx, id), nil
	}
	id, err := g.certIdentity(ctx)
	switch {
	case err != nil:
		return nil, status.Error(codes.Unauthenticated, strings.TrimPrefix(err.Error(), ErrUnauthenticated.Error()+": "))
	case id == nil:
		return nil, missing
	}
	return NewContext(ctx, id), nil
}

// errKeysLoading answers a key the replica cannot judge yet: it has not
// read the API keys since it started.
var errKeysLoading = status.Error(codes.Unavailable, "this control plane is still reading its API keys; retry")

// keyIdentity checks an API key against the stored hashes.
func (g *Guard) keyIdentity(key string) (*Identity, error) {
	kid, part, ok := splitKey(key)
	if !ok {
		return nil, fmt.Errorf("%w: malformed API key (want <id>.<secret>)", ErrUnauthenticated)
	}
	k, found := g.deps.Keys.APIKey(kid)
	// Hash even for an unknown id, so that timing tells nothing.
	match := hashMatches(part, k.SecretHash)
	if !found && !g.deps.Keys.Loaded() {
		return nil, errKeysLoading
	}
	if !found || !match || k.Disabled {
		return nil, fmt.Errorf("%w: API key %s is unknown or revoked", ErrUnauthenticated, kid)
	}
	id := &Identity{Name: fmt.Sprintf("apikey:%s (%s)", k.ID, k.Name), Tenants: k.Tenants, Topics: k.Topics}
	for _, r := range k.Roles {
		if role, err := ParseRole(r); err == nil {
			id.Roles = append(id.Roles, role)
		}
	}
	return id, nil
}

// certIdentity reads the caller's identity from its verified client
// certificate; nil without one (or without an operator CA configured).
func (g *Guard) certIdentity(ctx context.Context) (*Identity, error) {
	if g.cfg.OperatorCAs == nil {
		return nil, nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return nil, nil
	}
	leaf := ti.State.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range ti.State.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: g.cfg.OperatorCAs, Intermediates: inter, CurrentTime: g.deps.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("%w: client certificate not accepted: it does not chain to the operator CA or has expired", ErrUnauthenticated)
	}
	name := CertName(leaf)
	if name == "" {
		return nil, fmt.Errorf("%w: client certificate names no one (no berth://service/<name> URI, no CN)", ErrUnauthenticated)
	}
	return &Identity{Name: "cert:" + name, Roles: g.cfg.CertRoles[name]}, nil
}

// CertName is the name a client certificate gives its holder: the path of
// its first SAN URI berth://service/<name>, else its subject's CN.
func CertName(c *x509.Certificate) string {
	for _, u := range c.URIs {
		if name, ok := serviceURIName(u); ok {
			return name
		}
	}
	return c.Subject.CommonName
}

func serviceURIName(u *url.URL) (string, bool) {
	if u.Scheme != "berth" || u.Host != "service" {
		return "", false
	}
	name := strings.TrimPrefix(u.Path, "/")
	return name, name != ""
}

// deviceRequest is a request naming one device.
type deviceRequest interface{ GetDeviceId() string }

// authorizeUnary checks the role and the tenant, runs the call and audits
// it when it is a change.
func (g *Guard) authorizeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	id := FromContext(ctx)
	rule, err := g.authorize(id, info.FullMethod, req)
	if err != nil {
		if rule.Change {
			g.audit(ctx, id, info.FullMethod, req, err)
		}
		return nil, err
	}
	resp, err := handler(ctx, req)
	if rule.Change {
		g.audit(ctx, id, info.FullMethod, req, err)
	}
	return resp, err
}

// authorize checks id's role for method and, for a tenant-limited caller,
// the tenant of the device req names.
func (g *Guard) authorize(id *Identity, method string, req any) (Rule, error) {
	rule, err := Allowed(id, method)
	if err != nil {
		g.refused.Refused("permission denied", "caller", id.Name, "method", method)
		return rule, status.Error(codes.PermissionDenied, strings.TrimPrefix(err.Error(), ErrDenied.Error()+": "))
	}
	if len(id.Tenants) == 0 || id.Has(Admin) {
		return rule, nil
	}
	if dr, ok := req.(deviceRequest); ok {
		rec, known := g.deps.Assignments.Assignment(dr.GetDeviceId())
		tenant := ""
		if known && rec.Inputs != nil {
			tenant = rec.Inputs.Tenant
		}
		if !slices.Contains(id.Tenants, tenant) {
			g.refused.Refused("permission denied", "caller", id.Name, "method", method, "device", dr.GetDeviceId())
			return rule, status.Errorf(codes.PermissionDenied, "%s may reach devices of tenants %s only; device %s is not of them", id.Name, strings.Join(id.Tenants, ","), dr.GetDeviceId())
		}
	}
	return rule, nil
}

// authorizeStream checks the role; a Subscribe of a caller limited to
// tenants or topics is narrowed to them.
func (g *Guard) authorizeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	id := FromContext(ss.Context())
	if _, err := g.authorize(id, info.FullMethod, nil); err != nil {
		return err
	}
	if id.Has(Admin) || (len(id.Tenants) == 0 && len(id.Topics) == 0) {
		return handler(srv, ss)
	}
	return handler(srv, &limitedStream{ServerStream: ss, id: id})
}

// limitedStream narrows the subscription requests it receives to its
// caller's tenants and topics.
type limitedStream struct {
	grpc.ServerStream
	id *Identity
}

// RecvMsg implements grpc.ServerStream.
func (s *limitedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	req, ok := m.(*messagingv1.SubscribeRequest)
	if !ok {
		return nil
	}
	var err error
	if req.TenantIds, err = narrow(req.GetTenantIds(), s.id.Tenants, "tenant"); err != nil {
		return err
	}
	req.Topics, err = narrow(req.GetTopics(), s.id.Topics, "topic")
	return err
}

// narrow returns asked limited to allowed (empty allowed: no limit; empty
// asked: all of allowed), or PERMISSION_DENIED naming what is outside.
func narrow(asked, allowed []string, what string) ([]string, error) {
	if len(allowed) == 0 {
		return asked, nil
	}
	if len(asked) == 0 {
		return slices.Clone(allowed), nil
	}
	for _, a := range asked {
		if !slices.Contains(allowed, a) {
			return nil, status.Errorf(codes.PermissionDenied, "%s %q is outside this caller's %ss (%s)", what, a, what, strings.Join(allowed, ","))
		}
	}
	return asked, nil
}

// audit records one change. A failed write is logged: the change stands.
func (g *Guard) audit(ctx context.Context, id *Identity, method string, req any, callErr error) {
	e := registry.AuditEntry{At: g.deps.Now().UTC(), Method: method, Outcome: status.Code(callErr).String()}
	if id != nil {
		e.Who = id.Name
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		e.Peer = p.Addr.String()
	}
	if m, ok := req.(proto.Message); ok {
		e.Target = Target(m)
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if err := g.deps.Audit.AppendAudit(actx, e, g.cfg.AuditLimit); err != nil {
		g.deps.Log.Warn("audit entry not stored", "who", e.Who, "method", method, "target", e.Target, "outcome", e.Outcome, "err", err)
	}
}

// Target names what a request is about: its first non-empty string field
// named id or *_id, looked for in the request and then in its message
// fields (PutGroup's group, PutTenant's tenant), or a create's name.
func Target(m proto.Message) string {
	r := m.ProtoReflect()
	if t := idField(r); t != "" {
		return t
	}
	fields := r.Descriptor().Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		if f.Kind() == protoreflect.MessageKind && !f.IsList() && !f.IsMap() && r.Has(f) {
			if t := idField(r.Get(f).Message()); t != "" {
				return t
			}
		}
	}
	if f := fields.ByName("name"); f != nil && f.Kind() == protoreflect.StringKind && !f.IsList() {
		return r.Get(f).String()
	}
	return ""
}

func idField(r protoreflect.Message) string {
	fields := r.Descriptor().Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		name := string(f.Name())
		if f.Kind() == protoreflect.StringKind && !f.IsList() && (name == "id" || strings.HasSuffix(name, "_id")) {
			if v := r.Get(f).String(); v != "" {
				return v
			}
		}
	}
	return ""
}
