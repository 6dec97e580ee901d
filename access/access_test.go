package access_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/berthproject/berth/access"
	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/registry"
)

// TestTableCoversEveryMethod fails when an RPC of a protected service has
// no rule: add one to access.Table (the guard refuses it meanwhile).
func TestTableCoversEveryMethod(t *testing.T) {
	for _, sd := range []grpc.ServiceDesc{adminv1.AdminService_ServiceDesc, messagingv1.MessagingService_ServiceDesc} {
		var names []string
		for _, m := range sd.Methods {
			names = append(names, m.MethodName)
		}
		for _, s := range sd.Streams {
			names = append(names, s.StreamName)
		}
		for _, n := range names {
			full := "/" + sd.ServiceName + "/" + n
			if !access.IsProtected(full) {
				t.Errorf("%s is not protected", full)
			}
			if _, ok := access.Table[full]; !ok {
				t.Errorf("%s has no entry in access.Table", full)
			}
		}
	}
	for m := range access.Table {
		if !access.IsProtected(m) {
			t.Errorf("table entry %s is not of a protected service", m)
		}
	}
}

func TestAllowed(t *testing.T) {
	tests := []struct {
		name   string
		roles  []access.Role
		method string
		want   string // "" allowed, else a part of the refusal
	}{
		{"viewer reads", []access.Role{access.Viewer}, adminv1.AdminService_ListGroups_FullMethodName, ""},
		{"viewer applies", []access.Role{access.Viewer}, adminv1.AdminService_ApplyPolicy_FullMethodName, "needs role operator or admin"},
		{"operator applies", []access.Role{access.Operator}, adminv1.AdminService_ApplyPolicy_FullMethodName, ""},
		{"operator keys", []access.Role{access.Operator}, adminv1.AdminService_CreateAPIKey_FullMethodName, "needs role admin"},
		{"admin keys", []access.Role{access.Admin}, adminv1.AdminService_RevokeAPIKey_FullMethodName, ""},
		{"service sends", []access.Role{access.Service}, messagingv1.MessagingService_Send_FullMethodName, ""},
		{"operator sends", []access.Role{access.Operator}, messagingv1.MessagingService_Send_FullMethodName, "needs role service or admin"},
		{"service admin", []access.Role{access.Service}, adminv1.AdminService_ListGroups_FullMethodName, "needs role"},
		{"no roles", nil, adminv1.AdminService_ListGroups_FullMethodName, "needs role"},
		{"method not in the table", []access.Role{access.Admin}, "/berth.admin.v1.AdminService/Unknown", "not open to any role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := access.Allowed(&access.Identity{Roles: tt.roles}, tt.method)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("Allowed = %q; want %q", got, tt.want)
			}
		})
	}
}

func TestNewAPIKey(t *testing.T) {
	tests := []struct {
		name    string
		keyName string
		roles   []string
		tenants []string
		ok      bool
	}{
		{"admin", "ops", []string{"admin"}, nil, true},
		{"service of tenants", "billing", []string{"service"}, []string{"t1", "t2"}, true},
		{"no roles", "x", nil, nil, false},
		{"unknown role", "x", []string{"root"}, nil, false},
		{"no name", "", []string{"admin"}, nil, false},
		{"bad tenant", "x", []string{"service"}, []string{"../t"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, secret, err := access.NewAPIKey(tt.keyName, tt.roles, tt.tenants, nil, "me", time.Now())
			if got := err == nil; got != tt.ok {
				t.Fatalf("NewAPIKey err = %v; want ok %v", err, tt.ok)
			}
			if !tt.ok {
				return
			}
			id, part, _ := strings.Cut(secret, ".")
			if id != k.ID || access.HashSecret(part) != k.SecretHash || strings.Contains(k.SecretHash, part) {
				t.Errorf("key %+v, secret %q: want the id before the dot and only the hash stored", k, secret)
			}
		})
	}
}

// fakeKeys, fakeAssignments and fakeAudit stand in for the registry.
type fakeKeys map[string]registry.APIKey

func (f fakeKeys) APIKey(id string) (registry.APIKey, bool) { k, ok := f[id]; return k, ok }
func (f fakeKeys) Loaded() bool                             { return true }

// loadingKeys are keys not read yet.
type loadingKeys struct{ fakeKeys }

func (loadingKeys) Loaded() bool { return false }

type fakeAssignments map[string]string

func (f fakeAssignments) Assignment(id string) (registry.Assignment, bool) {
	t, ok := f[id]
	return registry.Assignment{DeviceID: id, Inputs: &registry.DeviceInputs{Tenant: t}}, ok
}

type fakeAudit struct{ entries []registry.AuditEntry }

func (f *fakeAudit) AppendAudit(_ context.Context, e registry.AuditEntry, _ int) error {
	f.entries = append(f.entries, e)
	return nil
}

var (
	_ access.Keys        = fakeKeys(nil)
	_ access.Assignments = fakeAssignments(nil)
	_ access.AuditLog    = (*fakeAudit)(nil)
)

func TestAuthenticateKey(t *testing.T) {
	live, liveSecret, _ := access.NewAPIKey("live", []string{"viewer"}, nil, nil, "", time.Now())
	gone, goneSecret, _ := access.NewAPIKey("gone", []string{"admin"}, nil, nil, "", time.Now())
	gone.Disabled = true
	g, err := access.New(access.Config{}, access.Deps{Keys: fakeKeys{live.ID: live, gone.ID: gone}, Assignments: fakeAssignments{}, Audit: &fakeAudit{}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, header string
		want         codes.Code
	}{
		{"live key", "Bearer " + liveSecret, codes.OK},
		{"revoked key", "Bearer " + goneSecret, codes.Unauthenticated},
		{"wrong secret", "Bearer " + live.ID + ".AAAA", codes.Unauthenticated},
		{"malformed", "Bearer nodot", codes.Unauthenticated},
		{"no header", "", codes.Unauthenticated},
		{"other scheme", "Basic " + liveSecret, codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.header != "" {
				ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", tt.header))
			}
			ctx, err := g.Authenticate(ctx)
			if got := status.Code(err); got != tt.want {
				t.Fatalf("Authenticate = %v; want %v", err, tt.want)
			}
			if err == nil && access.FromContext(ctx).Name != "apikey:"+live.ID+" (live)" {
				t.Errorf("identity %+v", access.FromContext(ctx))
			}
			if err != nil && strings.Contains(status.Convert(err).Message(), liveSecret) {
				t.Errorf("the refusal %v repeats the secret", err)
			}
		})
	}
	// Every refusal above is counted (five of the six cases).
	if got := g.Refusals()["unauthenticated"]; got != 5 {
		t.Errorf("Refusals()[unauthenticated] = %d; want 5", got)
	}
}

// A replica that has not read its API keys yet cannot tell an unknown key
// from one it has not read: UNAVAILABLE (retry), not UNAUTHENTICATED.
func TestAuthenticateBeforeKeysLoaded(t *testing.T) {
	live, liveSecret, _ := access.NewAPIKey("live", []string{"viewer"}, nil, nil, "", time.Now())
	g, err := access.New(access.Config{}, access.Deps{Keys: loadingKeys{fakeKeys{}}, Assignments: fakeAssignments{}, Audit: &fakeAudit{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+liveSecret))
	if _, err := g.Authenticate(ctx); status.Code(err) != codes.Unavailable {
		t.Errorf("Authenticate(key %s) before the keys were read = %v; want UNAVAILABLE", live.ID, err)
	}
	if got := g.Refusals()["unauthenticated"]; got != 0 {
		t.Errorf("Refusals()[unauthenticated] = %d; want 0 (not a refusal)", got)
	}
}

func TestTarget(t *testing.T) {
	tests := []struct {
		req  proto.Message
		want string
	}{
		{&adminv1.DrainExecutorRequest{ExecutorId: "ex-1"}, "ex-1"},
		{&adminv1.PutGroupRequest{GroupId: "g1"}, "g1"},
		{&adminv1.RevokeAPIKeyRequest{Id: "abc"}, "abc"},
		{&adminv1.CreateAPIKeyRequest{Name: "billing"}, "billing"},
		{&adminv1.PauseRebalanceRequest{}, ""},
	}
	for _, tt := range tests {
		if got := access.Target(tt.req); got != tt.want {
			t.Errorf("Target(%T) = %q; want %q", tt.req, got, tt.want)
		}
	}
}

// certs makes a CA, a client certificate it signs for name (as a SAN URI)
// and one signed by another CA.
func certs(t *testing.T, name string) (pool *x509.CertPool, good, stranger *x509.Certificate) {
	t.Helper()
	ca := func(cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
			NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c, key
	}
	leaf := func(parent *x509.Certificate, pk *ecdsa.PrivateKey) *x509.Certificate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		u, _ := url.Parse("berth://service/" + name)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "cn-" + name}, URIs: []*url.URL{u},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, pk)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	caCert, caKey := ca("operators")
	otherCert, otherKey := ca("other")
	pool = x509.NewCertPool()
	pool.AddCert(caCert)
	return pool, leaf(caCert, caKey), leaf(otherCert, otherKey)
}

func TestAuthenticateCertificate(t *testing.T) {
	pool, good, stranger := certs(t, "deployer")
	g, err := access.New(access.Config{OperatorCAs: pool, CertRoles: map[string][]access.Role{"deployer": {access.Operator}}},
		access.Deps{Keys: fakeKeys{}, Assignments: fakeAssignments{}, Audit: &fakeAudit{}})
	if err != nil {
		t.Fatal(err)
	}
	withCert := func(c *x509.Certificate) context.Context {
		addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
		return peer.NewContext(context.Background(), &peer.Peer{Addr: addr,
			AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}}}})
	}
	ctx, err := g.Authenticate(withCert(good))
	if err != nil {
		t.Fatalf("a certificate of the operator CA: %v", err)
	}
	if id := access.FromContext(ctx); id.Name != "cert:deployer" || !id.Has(access.Operator) {
		t.Errorf("identity %+v; want cert:deployer, operator", id)
	}
	if _, err := g.Authenticate(withCert(stranger)); status.Code(err) != codes.Unauthenticated {
		t.Errorf("a certificate of another CA: %v; want UNAUTHENTICATED", err)
	}
}

func TestCertName(t *testing.T) {
	u, _ := url.Parse("berth://service/billing")
	other, _ := url.Parse("spiffe://x/y")
	tests := []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"uri", &x509.Certificate{URIs: []*url.URL{other, u}, Subject: pkix.Name{CommonName: "cn"}}, "billing"},
		{"cn", &x509.Certificate{URIs: []*url.URL{other}, Subject: pkix.Name{CommonName: "cn"}}, "cn"},
	}
	for _, tt := range tests {
		if got := access.CertName(tt.cert); got != tt.want {
			t.Errorf("%s: CertName = %q; want %q", tt.name, got, tt.want)
		}
	}
}

// TestAuthorizeHeader checks an HTTP Authorization header as a gRPC call:
// the same keys, roles and tenant limits, and refusals counted.
func TestAuthorizeHeader(t *testing.T) {
	now := time.Now()
	viewer, viewerSecret, _ := access.NewAPIKey("viewer", []string{"viewer"}, nil, nil, "", now)
	svc, svcSecret, _ := access.NewAPIKey("svc", []string{"service"}, nil, nil, "", now)
	limited, limitedSecret, _ := access.NewAPIKey("limited", []string{"viewer"}, []string{"t-a"}, nil, "", now)
	g, err := access.New(access.Config{}, access.Deps{Keys: fakeKeys{viewer.ID: viewer, svc.ID: svc, limited.ID: limited},
		Assignments: fakeAssignments{"d-a": "t-a", "d-b": "t-b"}, Audit: &fakeAudit{}})
	if err != nil {
		t.Fatal(err)
	}
	groups, getDevice := adminv1.AdminService_ListGroups_FullMethodName, messagingv1.MessagingService_GetDevice_FullMethodName
	tests := []struct {
		name, header, method string
		req                  any
		want                 codes.Code
	}{
		{"viewer lists groups", "Bearer " + viewerSecret, groups, nil, codes.OK},
		{"viewer reads a device", "Bearer " + viewerSecret, getDevice, &messagingv1.GetDeviceRequest{DeviceId: "d-b"}, codes.OK},
		{"no header", "", groups, nil, codes.Unauthenticated},
		{"other scheme", "Basic " + viewerSecret, groups, nil, codes.Unauthenticated},
		{"wrong secret", "Bearer " + viewer.ID + ".AAAA", groups, nil, codes.Unauthenticated},
		{"service lists groups", "Bearer " + svcSecret, groups, nil, codes.PermissionDenied},
		{"limited viewer, own tenant", "Bearer " + limitedSecret, getDevice, &messagingv1.GetDeviceRequest{DeviceId: "d-a"}, codes.OK},
		{"limited viewer, other tenant", "Bearer " + limitedSecret, getDevice, &messagingv1.GetDeviceRequest{DeviceId: "d-b"}, codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := g.AuthorizeHeader(context.Background(), tt.header, tt.method, tt.req)
			if got := status.Code(err); got != tt.want {
				t.Fatalf("AuthorizeHeader = %v; want %v", err, tt.want)
			}
			if (id != nil) != (tt.want == codes.OK) {
				t.Errorf("identity %+v with %v", id, err)
			}
		})
	}
	if r := g.Refusals(); r["unauthenticated"] != 3 || r["permission denied"] != 2 {
		t.Errorf("refusals %v; want 3 unauthenticated, 2 permission denied", r)
	}
}
