// Package token mints and verifies assignment tokens: short-lived JWS
// signatures (EdDSA over Ed25519) that bind a device to the processing group
// the control plane assigned it to. The control plane holds the private key
// and signs; executors hold only the public key and verify.
package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Errors returned by Verify. Callers branch on them with errors.Is.
var (
	// ErrMissing means the token is empty.
	ErrMissing = errors.New("token: missing")
	// ErrInvalid means the token is malformed or its signature does not verify.
	ErrInvalid = errors.New("token: invalid signature or format")
	// ErrExpired means the token was valid but its expiry has passed.
	ErrExpired = errors.New("token: expired")
)

// issuer is the "iss" claim of every berth assignment token.
const issuer = "berth-controlplane"

// Claims are what an assignment token asserts.
type Claims struct {
	// DeviceID is the device the token was minted for ("sub").
	DeviceID string
	// GroupID is the processing group the device was assigned to.
	GroupID string
	// Label is the label the placement picked.
	Label string
	// IssuedAt and ExpiresAt bound the token's validity.
	IssuedAt, ExpiresAt time.Time
	// ID is unique per token ("jti").
	ID string
	// Weight is the device's load weight ("wgt"; 1 when absent): executors
	// sum it into the load they report.
	Weight float64
	// Role is RoleControlPlane for service tokens, "" for assignment
	// tokens.
	Role string
	// Binding is the identity the token was issued to (zero: none, as
	// with open enrollment).
	Binding Binding
}

// Binding ties an assignment token to the identity that asked for it.
type Binding struct {
	// Thumbprint is the x5t#S256 of the device's client certificate (RFC
	// 8705 "cnf"): the token is good only on a connection presenting that
	// certificate.
	Thumbprint string
	// Enrollment is the enrollment that vouched for the device ("enr"), so
	// that disabling it closes the device's streams.
	Enrollment string
}

// confirmation is the RFC 8705 "cnf" claim.
type confirmation struct {
	X5tS256 string `json:"x5t#S256,omitempty"`
}

// RoleControlPlane marks a service token: the bearer is a control plane,
// which may call executors' internal service.
const RoleControlPlane = "controlplane"

// jwtClaims is the wire form of Claims.
type jwtClaims struct {
	jwt.RegisteredClaims
	Group  string        `json:"grp"`
	Label  string        `json:"lbl,omitempty"`
	Weight float64       `json:"wgt,omitempty"`
	Role   string        `json:"role,omitempty"`
	Cnf    *confirmation `json:"cnf,omitempty"`
	Enr    string        `json:"enr,omitempty"`
}

// Signer mints tokens with a private key.
type Signer struct {
	key ed25519.PrivateKey
	now func() time.Time
	// header is the base64url of the JWS header and the dot after it:
	// the same for every token of this key.
	header []byte
}

// NewSigner returns a Signer for key. now may be nil (time.Now).
func NewSigner(key ed25519.PrivateKey, now func() time.Time) (*Signer, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("token: private key has %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	if now == nil {
		now = time.Now
	}
	kid := KeyID(key.Public().(ed25519.PublicKey))
	h, err := signingHeader(kid)
	if err != nil {
		return nil, err
	}
	return &Signer{key: key, now: now, header: append(h, '.')}, nil
}

// signingHeader is the JWS header segment of every token of the key named
// kid: base64url of the header golang-jwt writes ({"alg":"EdDSA","kid":…,
// "typ":"JWT"}, a map's keys in order).
func signingHeader(kid string) ([]byte, error) {
	h, err := json.Marshal(map[string]string{"alg": jwt.SigningMethodEdDSA.Alg(), "kid": kid, "typ": "JWT"})
	if err != nil {
		return nil, fmt.Errorf("token: header: %w", err)
	}
	return base64.RawURLEncoding.AppendEncode(nil, h), nil
}

// Sign mints a token for device in group, valid for ttl from now, for a
// device of weight 1. It returns the token and its expiry.
func (s *Signer) Sign(deviceID, groupID, label string, ttl time.Duration) (string, time.Time, error) {
	return s.SignWeighted(deviceID, groupID, label, 1, ttl)
}

// SignWeighted is Sign for a device of the given load weight.
func (s *Signer) SignWeighted(deviceID, groupID, label string, weight float64, ttl time.Duration) (string, time.Time, error) {
	return s.SignBound(deviceID, groupID, label, weight, ttl, Binding{})
}

// SignBound is SignWeighted for a token bound to the device's identity.
func (s *Signer) SignBound(deviceID, groupID, label string, weight float64, ttl time.Duration, b Binding) (string, time.Time, error) {
	if weight == 1 {
		weight = 0 // the default; kept off the wire
	}
	c := jwtClaims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: deviceID},
		Group:            groupID,
		Label:            label,
		Weight:           weight,
		Enr:              b.Enrollment,
	}
	if b.Thumbprint != "" {
		c.Cnf = &confirmation{X5tS256: b.Thumbprint}
	}
	return s.sign(c, ttl, true)
}

// sign completes c (issuer, times, and a random id when withID) and signs it.
// It returns the token and its expiry, as the wire carries it (seconds).
//
// The token is the JWS compact serialization (RFC 7515) golang-jwt's
// SignedString writes, byte for byte (TestSignedAsGolangJWT), but written
// here: the header is the signer's, encoded once, and the claims are
// appended field by field as encoding/json spells jwtClaims, where
// SignedString marshals a header map and the claims by reflection on every
// call. A token is signed for every new device and every refresh.
func (s *Signer) sign(c jwtClaims, ttl time.Duration, withID bool) (string, time.Time, error) {
	now := s.now()
	c.Issuer = issuer
	c.IssuedAt = jwt.NewNumericDate(now)
	c.ExpiresAt = jwt.NewNumericDate(now.Add(ttl))
	if withID {
		var jti [12]byte
		if _, err := rand.Read(jti[:]); err != nil {
			return "", time.Time{}, fmt.Errorf("token: random id: %w", err)
		}
		c.ID = hex.EncodeToString(jti[:])
	}
	var claims [320]byte
	payload, err := appendClaims(claims[:0], &c)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("token: sign: %w", err)
	}
	enc := base64.RawURLEncoding
	buf := make([]byte, 0, len(s.header)+enc.EncodedLen(len(payload))+1+enc.EncodedLen(ed25519.SignatureSize))
	buf = enc.AppendEncode(append(buf, s.header...), payload)
	sig := ed25519.Sign(s.key, buf)
	buf = enc.AppendEncode(append(buf, '.'), sig)
	return string(buf), c.ExpiresAt.Time, nil
}

// appendClaims appends c as encoding/json marshals it (the same fields, in
// the same order, with the same spelling; TestClaimsAsEncodingJSON).
func appendClaims(b []byte, c *jwtClaims) ([]byte, error) {
	if len(c.Audience) > 0 || c.NotBefore != nil {
		// Never set by this package's signers; encoding/json handles
		// them.
		out, err := json.Marshal(c)
		return append(b, out...), err
	}
	b = append(b, '{')
	sep := func(b []byte) []byte {
		if b[len(b)-1] != '{' {
			b = append(b, ',')
		}
		return b
	}
	str := func(b []byte, key, v string) []byte {
		return appendJSONString(append(append(append(sep(b), '"'), key...), '"', ':'), v)
	}
	date := func(b []byte, key string, d *jwt.NumericDate) []byte {
		return strconv.AppendInt(append(append(append(sep(b), '"'), key...), '"', ':'), d.Unix(), 10)
	}
	if c.Issuer != "" {
		b = str(b, "iss", c.Issuer)
	}
	if c.Subject != "" {
		b = str(b, "sub", c.Subject)
	}
	if c.ExpiresAt != nil {
		b = date(b, "exp", c.ExpiresAt)
	}
	if c.IssuedAt != nil {
		b = date(b, "iat", c.IssuedAt)
	}
	if c.ID != "" {
		b = str(b, "jti", c.ID)
	}
	b = str(b, "grp", c.Group)
	if c.Label != "" {
		b = str(b, "lbl", c.Label)
	}
	if c.Weight != 0 {
		if math.IsNaN(c.Weight) || math.IsInf(c.Weight, 0) {
			return b, fmt.Errorf("weight %v is not a number JSON can carry", c.Weight)
		}
		b = appendJSONFloat(append(sep(b), `"wgt":`...), c.Weight)
	}
	if c.Role != "" {
		b = str(b, "role", c.Role)
	}
	if c.Cnf != nil {
		b = append(sep(b), `"cnf":{`...)
		if c.Cnf.X5tS256 != "" {
			b = appendJSONString(append(b, `"x5t#S256":`...), c.Cnf.X5tS256)
		}
		b = append(b, '}')
	}
	if c.Enr != "" {
		b = str(b, "enr", c.Enr)
	}
	return append(b, '}'), nil
}

// appendJSONString appends v quoted as encoding/json quotes it: as is when
// every byte is printable ASCII that needs no escape (ids, labels,
// thumbprints), else by encoding/json itself.
func appendJSONString(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(v) // a string always marshals
			return append(b, q...)
		}
	}
	return append(append(append(b, '"'), v...), '"')
}

// appendJSONFloat appends f as encoding/json writes a float64.
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 to e-9, as encoding/json does.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// ServiceTokenTTL is the default life of a service token: control planes
// mint a new one at half of it, and executors remember a verified one until
// it expires.
const ServiceTokenTTL = 10 * time.Minute

// SignService mints a service token for a control plane replica (subject),
// valid for ttl: it lets the replica call executors' internal service.
func (s *Signer) SignService(subject string, ttl time.Duration) (string, time.Time, error) {
	return s.sign(jwtClaims{RegisteredClaims: jwt.RegisteredClaims{Subject: subject}, Role: RoleControlPlane}, ttl, false)
}

// Verifier checks tokens with one or more public keys (several during a key
// rotation).
type Verifier struct {
	keys map[string]ed25519.PublicKey
	// headers maps the header segment this package's signers write for
	// each key (base64url of the canonical header, see signingHeader) to
	// the key: a token with such a header is verified without golang-jwt.
	headers map[string]ed25519.PublicKey
	now     func() time.Time
	parser  *jwt.Parser
}

// NewVerifier returns a Verifier that accepts tokens signed by any of keys.
// now may be nil (time.Now).
func NewVerifier(now func() time.Time, keys ...ed25519.PublicKey) (*Verifier, error) {
	if len(keys) == 0 {
		return nil, errors.New("token: verifier needs at least one public key")
	}
	if now == nil {
		now = time.Now
	}
	m := make(map[string]ed25519.PublicKey, len(keys))
	headers := make(map[string]ed25519.PublicKey, len(keys))
	for _, k := range keys {
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("token: public key has %d bytes, want %d", len(k), ed25519.PublicKeySize)
		}
		m[KeyID(k)] = k
		h, err := signingHeader(KeyID(k))
		if err != nil {
			return nil, err
		}
		headers[string(h)] = k
	}
	v := &Verifier{keys: m, headers: headers, now: now}
	// Expiry is checked by Verify itself, so that an expired but authentic
	// token can be told apart from a forged one. Strict decoding refuses
	// base64url with non-zero padding bits: without it, a token whose last
	// character was changed to another encoding of the same bits verified,
	// so one token had several spellings (found by FuzzTokenModified).
	v.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(issuer),
		jwt.WithoutClaimsValidation(),
		jwt.WithStrictDecoding(),
	)
	return v, nil
}

// Verify checks raw's signature and expiry and returns its claims. Errors wrap
// ErrMissing, ErrInvalid or ErrExpired.
func (v *Verifier) Verify(raw string) (Claims, error) {
	if raw == "" {
		return Claims{}, ErrMissing
	}
	if !compact(raw) {
		return Claims{}, fmt.Errorf("%w: not three base64url segments", ErrInvalid)
	}
	c, err := v.parse(raw)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if c.Issuer != issuer || c.Subject == "" || (c.Group == "" && c.Role == "") || c.ExpiresAt == nil {
		return Claims{}, fmt.Errorf("%w: incomplete claims", ErrInvalid)
	}
	out := Claims{
		DeviceID:  c.Subject,
		GroupID:   c.Group,
		Label:     c.Label,
		ExpiresAt: c.ExpiresAt.Time,
		ID:        c.ID,
		Weight:    c.Weight,
		Role:      c.Role,
		Binding:   Binding{Enrollment: c.Enr},
	}
	if c.Cnf != nil {
		out.Binding.Thumbprint = c.Cnf.X5tS256
	}
	if out.Weight <= 0 {
		out.Weight = 1
	}
	if c.IssuedAt != nil {
		out.IssuedAt = c.IssuedAt.Time
	}
	if !v.now().Before(out.ExpiresAt) {
		return out, fmt.Errorf("%w at %s", ErrExpired, out.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return out, nil
}

// parse checks raw's signature and decodes its claims. A token whose
// header is the one this package's signers write for one of the keys (all
// of berth's) is checked here: the signature over the first two segments
// with that key, both decoded strictly, then the claims decoded, which is
// what golang-jwt does for such a header without building a header map
// and a token. Any other header goes through golang-jwt's parser.
func (v *Verifier) parse(raw string) (jwtClaims, error) {
	var c jwtClaims
	dot1 := strings.IndexByte(raw, '.')
	dot2 := strings.LastIndexByte(raw, '.')
	if dot1 < 0 || dot2 <= dot1 {
		return c, errors.New("not three segments")
	}
	if k, ok := v.headers[raw[:dot1]]; ok {
		enc := base64.RawURLEncoding.Strict()
		sig, err := enc.DecodeString(raw[dot2+1:])
		if err != nil {
			return c, fmt.Errorf("signature segment: %w", err)
		}
		if !ed25519.Verify(k, []byte(raw[:dot2]), sig) {
			return c, errors.New("signature does not verify")
		}
		payload, err := enc.DecodeString(raw[dot1+1 : dot2])
		if err != nil {
			return c, fmt.Errorf("claims segment: %w", err)
		}
		if err := json.Unmarshal(payload, &c); err != nil {
			return c, fmt.Errorf("claims: %w", err)
		}
		return c, nil
	}
	_, err := v.parser.ParseWithClaims(raw, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		k, ok := v.keys[kid]
		if !ok {
			return nil, fmt.Errorf("unknown key id %q", kid)
		}
		return k, nil
	})
	return c, err
}

// compact reports whether raw is spelled as a token is: three non-empty
// segments of the base64url alphabet (no padding) separated by dots. The
// base64 decoder skips CR and LF even when strict, so without this a token
// with a line break inserted verified (found by FuzzTokenModified): one
// token, many spellings.
func compact(raw string) bool {
	segs, run := 1, 0
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c == '.':
			if run == 0 {
				return false
			}
			segs, run = segs+1, 0
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			run++
		default:
			return false
		}
	}
	return segs == 3 && run > 0
}

// KeyID names a public key: the first 8 bytes of it, in hex. It travels in
// the token header so that a verifier with several keys picks the right one.
func KeyID(pub ed25519.PublicKey) string {
	return hex.EncodeToString(pub[:8])
}

// GenerateKey returns a fresh Ed25519 key pair.
func GenerateKey() (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("token: generate key: %w", err)
	}
	return priv, nil
}

// MarshalPrivateKey encodes key as a PKCS #8 PEM block.
func MarshalPrivateKey(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("token: marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// MarshalPublicKey encodes key as a PKIX PEM block.
func MarshalPublicKey(key ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, fmt.Errorf("token: marshal public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePrivateKey decodes a PKCS #8 PEM Ed25519 private key.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("token: no PEM block in private key")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("token: parse private key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("token: private key is %T, want Ed25519", k)
	}
	return priv, nil
}

// ParsePublicKey decodes a PKIX PEM Ed25519 public key.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("token: no PEM block in public key")
	}
	k, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("token: parse public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("token: public key is %T, want Ed25519", k)
	}
	return pub, nil
}

// ReadPrivateKeyFile reads a PEM private key from path.
func ReadPrivateKeyFile(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	return ParsePrivateKey(data)
}

// ReadPublicKeyFile reads a PEM public key from path.
func ReadPublicKeyFile(path string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	return ParsePublicKey(data)
}
