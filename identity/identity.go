package identity

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/berthproject/berth/registry"
)

// Errors of Authenticate. Their messages (and the wrapping ones) are safe
// to show the caller: they name no key and no CA.
var (
	// ErrUnauthenticated means the credentials are missing, wrong or
	// expired.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden means the caller is known but may not have what it
	// asked for: another device's id, a disabled enrollment, a revoked
	// device.
	ErrForbidden = errors.New("permission denied")
)

// Trust is what Authenticate reads: enrollments and revocations.
// *registry.TrustView is one.
type Trust interface {
	Enrollment(id string) (registry.TrustedEnrollment, bool)
	X509Enrollments() []registry.TrustedEnrollment
	Revoked(deviceID string) bool
}

var _ Trust = (*registry.TrustView)(nil)

// Kind says how an identity was proven.
type Kind string

// Kinds of identity.
const (
	// KindOpen: no credentials, accepted because enrollment is open.
	KindOpen Kind = "open"
	// KindX509: a client certificate.
	KindX509 Kind = "x509"
	// KindSymmetric: a signature with a derived key.
	KindSymmetric Kind = "symmetric"
)

// Identity is who a caller proved to be.
type Identity struct {
	// DeviceID is the device.
	DeviceID string
	// Kind is how it was proven.
	Kind Kind
	// Enrollment is the enrollment that vouched for it ("" when open).
	Enrollment string
	// Thumbprint is the x5t#S256 of the client certificate (KindX509).
	Thumbprint string
}

// Authenticator checks device credentials.
type Authenticator struct {
	trust Trust
	open  bool
	now   func() time.Time
	// chains remembers verified certificate chains, when trust tells its
	// enrollments' generation: a device presents the same certificate on
	// every Assign, and verifying its chain is most of an Assign's cost.
	chains *chainCache
}

// generations is a Trust that says when its enrollments change.
// *registry.TrustView implements it.
type generations interface {
	EnrollmentGeneration() uint64
}

// New returns an Authenticator over trust. open lets callers without
// credentials through with the device id they ask for. now may be nil.
func New(trust Trust, open bool, now func() time.Time) (*Authenticator, error) {
	if trust == nil {
		return nil, errors.New("identity: a trust view is required")
	}
	if now == nil {
		now = time.Now
	}
	a := &Authenticator{trust: trust, open: open, now: now}
	if _, ok := trust.(generations); ok {
		a.chains = newChainCache(maxCachedChains)
	}
	return a, nil
}

// Open reports whether callers without credentials are let through.
func (a *Authenticator) Open() bool { return a.open }

// Authenticate says who the caller of ctx is: by its TLS client
// certificate when it presented one, else by the signature in its
// SignatureHeader metadata, else (open enrollment only) as the device it
// asks for. requested is the device id of the request ("" when it names
// none: only a certificate names the device then). Errors wrap
// ErrUnauthenticated or ErrForbidden.
func (a *Authenticator) Authenticate(ctx context.Context, requested string) (Identity, error) {
	if chain := peerChain(ctx); len(chain) > 0 {
		return a.certificate(chain[0], chain[1:], requested)
	}
	// Only the one header is read: FromIncomingContext would copy every
	// header of every call.
	if v := metadata.ValueFromIncomingContext(ctx, SignatureHeader); len(v) > 0 {
		if len(v) > 1 {
			return Identity{}, fmt.Errorf("%w: %s sent %d times", ErrUnauthenticated, SignatureHeader, len(v))
		}
		return a.signature(v[0], requested)
	}
	if !a.open {
		return Identity{}, fmt.Errorf("%w: device credentials required: a client certificate or a %s signature", ErrUnauthenticated, SignatureHeader)
	}
	if requested == "" {
		return Identity{}, fmt.Errorf("%w: device_id is required without a certificate", ErrUnauthenticated)
	}
	if a.trust.Revoked(requested) {
		return Identity{}, fmt.Errorf("%w: device %s is revoked", ErrForbidden, requested)
	}
	return Identity{DeviceID: requested, Kind: KindOpen}, nil
}

// PeerCertificate returns the leaf client certificate of ctx's TLS
// connection, nil without TLS or without a client certificate.
func PeerCertificate(ctx context.Context) *x509.Certificate {
	if chain := peerChain(ctx); len(chain) > 0 {
		return chain[0]
	}
	return nil
}

// maxChain bounds the certificates of a client's chain that are looked at.
const maxChain = 8

// peerChain returns the certificates the TLS client of ctx presented, leaf
// first (nil without TLS or without a client certificate). The TLS
// handshake proved that the client holds the leaf's private key; whether
// the chain is trusted is for the caller to say.
func peerChain(ctx context.Context) []*x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil
	}
	c := info.State.PeerCertificates
	return c[:min(len(c), maxChain)]
}

// Thumbprint is a certificate's x5t#S256 (RFC 8705): the unpadded
// base64url SHA-256 of its DER encoding.
func Thumbprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// DeviceURIPrefix starts the SAN URI that names a device in its
// certificate: berth://device/<id>.
const DeviceURIPrefix = "berth://device/"

// DeviceIDOf reads the device id of a certificate: its first SAN URI
// berth://device/<id>, else its subject's common name.
func DeviceIDOf(cert *x509.Certificate) string {
	for _, u := range cert.URIs {
		if s := u.String(); strings.HasPrefix(s, DeviceURIPrefix) {
			return strings.TrimPrefix(s, DeviceURIPrefix)
		}
	}
	return cert.Subject.CommonName
}

// certificate authenticates a client certificate: it must chain, now, for
// client authentication, through the intermediates the client sent, to the
// CA of an x509 enrollment.
func (a *Authenticator) certificate(cert *x509.Certificate, intermediates []*x509.Certificate, requested string) (Identity, error) {
	now := a.now()
	var inter *x509.CertPool
	if len(intermediates) > 0 {
		inter = x509.NewCertPool()
		for _, c := range intermediates {
			inter.AddCert(c)
		}
	}
	thumb := Thumbprint(cert)
	var gen uint64
	if a.chains != nil {
		// Read before the enrollments: a change after it makes what is
		// cached below stale at once.
		gen = a.trust.(generations).EnrollmentGeneration()
		if enr, ok := a.chains.get(chainKey(thumb, intermediates), gen, now); ok {
			return a.identify(cert, thumb, enr, requested)
		}
	}
	var disabled string
	var lastErr error
	var found *registry.TrustedEnrollment
	var chain []*x509.Certificate
	ens := a.trust.X509Enrollments()
	for i := range ens {
		chains, err := cert.Verify(x509.VerifyOptions{Roots: ens[i].Pool, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err != nil {
			lastErr = err
			continue
		}
		if ens[i].Disabled {
			disabled = ens[i].ID
			continue
		}
		found, chain = &ens[i], chains[0]
		break
	}
	if found == nil {
		if disabled != "" {
			return Identity{}, fmt.Errorf("%w: enrollment %s is disabled", ErrForbidden, disabled)
		}
		var inv x509.CertificateInvalidError
		if errors.As(lastErr, &inv) && inv.Reason == x509.Expired {
			return Identity{}, fmt.Errorf("%w: client certificate expired or not yet valid", ErrUnauthenticated)
		}
		return Identity{}, fmt.Errorf("%w: client certificate does not chain to an enrollment's CA for client authentication", ErrUnauthenticated)
	}
	if a.chains != nil {
		a.chains.put(chainKey(thumb, intermediates), cachedChain{enrollment: found.ID, generation: gen, notBefore: latestNotBefore(chain), notAfter: earliestNotAfter(chain)})
	}
	return a.identify(cert, thumb, found.ID, requested)
}

// identify names the device of a certificate whose chain verified against
// enrollment: its id must be valid and the one requested (if any), and the
// device not revoked (checked on every call, never cached).
func (a *Authenticator) identify(cert *x509.Certificate, thumb, enrollment, requested string) (Identity, error) {
	id := DeviceIDOf(cert)
	if err := registry.CheckID("the certificate's device id", id); err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	if requested != "" && requested != id {
		return Identity{}, fmt.Errorf("%w: the client certificate is device %s's, not %s's", ErrForbidden, id, requested)
	}
	if a.trust.Revoked(id) {
		return Identity{}, fmt.Errorf("%w: device %s is revoked", ErrForbidden, id)
	}
	return Identity{DeviceID: id, Kind: KindX509, Enrollment: enrollment, Thumbprint: thumb}, nil
}
