package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"
)

// URI schemes and hosts of the identities in client certificates.
const (
	// URIScheme is the scheme of berth's SAN URIs.
	URIScheme = "berth"
	// DeviceHost is the host of a device's SAN URI: berth://device/<id>.
	DeviceHost = "device"
	// ServiceHost is the host of a service's or operator's SAN URI:
	// berth://service/<name>.
	ServiceHost = "service"
)

// Default lifetimes.
const (
	// CAValidity is the default life of a CA certificate.
	CAValidity = 10 * 365 * 24 * time.Hour
	// LeafValidity is the default life of a server or client certificate.
	LeafValidity = 365 * 24 * time.Hour
)

// maxNameLen bounds device ids and service names, as fleet ids are.
const maxNameLen = 128

var (
	// ErrBadName is returned for a device id or service name that is not
	// 1-128 of [A-Za-z0-9._:@-], or is "." or "..".
	ErrBadName = errors.New("pki: bad name")
	// ErrNoHosts is returned for a server certificate without any host.
	ErrNoHosts = errors.New("pki: a server certificate needs at least one host")
	// ErrNotCA is returned when the issuing pair is not a CA.
	ErrNotCA = errors.New("pki: not a CA certificate")
)

// Pair is a certificate and its private key.
type Pair struct {
	// Cert is the parsed certificate.
	Cert *x509.Certificate
	// Key is its private key.
	Key crypto.Signer
}

// CertPEM returns the certificate in PEM.
func (p *Pair) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.Cert.Raw})
}

// KeyPEM returns the private key in PEM (PKCS #8).
func (p *Pair) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(p.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Fingerprint returns the SHA-256 of the certificate's DER, in hex: the
// value an RFC 8705 x5t#S256 confirmation is made from (base64url there).
func (p *Pair) Fingerprint() string {
	sum := sha256.Sum256(p.Cert.Raw)
	return fmt.Sprintf("%x", sum)
}

// DeviceURI returns berth://device/<id>.
func DeviceURI(id string) *url.URL {
	return &url.URL{Scheme: URIScheme, Host: DeviceHost, Path: "/" + id}
}

// ServiceURI returns berth://service/<name>.
func ServiceURI(name string) *url.URL {
	return &url.URL{Scheme: URIScheme, Host: ServiceHost, Path: "/" + name}
}

// ValidName reports whether s may name a device or a service in a
// certificate: 1-128 of [A-Za-z0-9._:@-], and neither "." nor "..".
func ValidName(s string) bool {
	if s == "" || len(s) > maxNameLen || s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.ContainsRune("._:@-", c):
		default:
			return false
		}
	}
	return true
}

// NewCA makes a self-signed CA named name, valid for validFor (0:
// CAValidity). It may issue leaf certificates only (path length 0).
func NewCA(name string, validFor time.Duration) (*Pair, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: empty CA name", ErrBadName)
	}
	if validFor <= 0 {
		validFor = CAValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate key: %w", err)
	}
	tmpl, err := template(name, validFor)
	if err != nil {
		return nil, err
	}
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.MaxPathLenZero = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	return sign(tmpl, tmpl, key, key)
}

// IssueServer issues a server certificate for hosts (DNS names or IP
// addresses; the first one is its CN), valid for validFor (0:
// LeafValidity).
func (p *Pair) IssueServer(hosts []string, validFor time.Duration) (*Pair, error) {
	var dns []string
	var ips []net.IP
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, h)
		}
	}
	if len(dns)+len(ips) == 0 {
		return nil, ErrNoHosts
	}
	cn := strings.TrimSpace(hosts[0])
	return p.issue(cn, validFor, x509.ExtKeyUsageServerAuth, func(t *x509.Certificate) {
		t.DNSNames, t.IPAddresses = dns, ips
	})
}

// IssueDevice issues a client certificate for device id: CN id and SAN
// URI berth://device/<id>.
func (p *Pair) IssueDevice(id string, validFor time.Duration) (*Pair, error) {
	if !ValidName(id) {
		return nil, fmt.Errorf("%w: device id %q: want 1-128 of [A-Za-z0-9._:@-]", ErrBadName, id)
	}
	return p.issue(id, validFor, x509.ExtKeyUsageClientAuth, func(t *x509.Certificate) {
		t.URIs = []*url.URL{DeviceURI(id)}
	})
}

// IssueClient issues a client certificate for a service or operator
// name: CN name and SAN URI berth://service/<name>.
func (p *Pair) IssueClient(name string, validFor time.Duration) (*Pair, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("%w: client name %q: want 1-128 of [A-Za-z0-9._:@-]", ErrBadName, name)
	}
	return p.issue(name, validFor, x509.ExtKeyUsageClientAuth, func(t *x509.Certificate) {
		t.URIs = []*url.URL{ServiceURI(name)}
	})
}

// issue signs a leaf certificate with p.
func (p *Pair) issue(cn string, validFor time.Duration, usage x509.ExtKeyUsage, fill func(*x509.Certificate)) (*Pair, error) {
	if !p.Cert.IsCA {
		return nil, ErrNotCA
	}
	if validFor <= 0 {
		validFor = LeafValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate key: %w", err)
	}
	tmpl, err := template(cn, validFor)
	if err != nil {
		return nil, err
	}
	if tmpl.NotAfter.After(p.Cert.NotAfter) {
		tmpl.NotAfter = p.Cert.NotAfter
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{usage}
	fill(tmpl)
	return sign(tmpl, p.Cert, key, p.Key)
}

// template returns a certificate template with a random serial, valid
// from a minute ago (clock skew) for validFor.
func template(cn string, validFor time.Duration) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pki: serial: %w", err)
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(validFor),
	}, nil
}

// sign makes the certificate of tmpl, issued by parent with parentKey.
func sign(tmpl, parent *x509.Certificate, key *ecdsa.PrivateKey, parentKey crypto.Signer) (*Pair, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, fmt.Errorf("pki: sign %q: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse %q: %w", tmpl.Subject.CommonName, err)
	}
	return &Pair{Cert: cert, Key: key}, nil
}
