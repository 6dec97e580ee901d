package token

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// claimVariants are claims as the signers make them, and with strings and
// numbers that need encoding/json's escapes and formats.
func claimVariants() []jwtClaims {
	at := time.Unix(1796319733, 987654321)
	base := jwtClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: issuer, Subject: "bench-dev-000001", ID: "eb1f6661b000158039769 8ad0",
			IssuedAt: jwt.NewNumericDate(at), ExpiresAt: jwt.NewNumericDate(at.Add(15 * time.Minute)),
		},
		Group: "group-1", Label: "default",
	}
	var out []jwtClaims
	add := func(f func(c *jwtClaims)) {
		c := base
		f(&c)
		out = append(out, c)
	}
	add(func(*jwtClaims) {})
	add(func(c *jwtClaims) { c.Label, c.ID = "", "" })
	add(func(c *jwtClaims) { c.Group = "" }) // grp is written even when empty
	add(func(c *jwtClaims) { c.Subject, c.Role, c.Group, c.Label = "cp-1", RoleControlPlane, "", "" })
	add(func(c *jwtClaims) {
		c.Cnf, c.Enr = &confirmation{X5tS256: "x4lPb3c2pH8eAb2rZJ3nZt6kQ_9d0yFZy3cR2x1wPzA"}, "factory-ca"
	})
	add(func(c *jwtClaims) { c.Cnf = &confirmation{} })
	for _, w := range []float64{0.5, 2, 123.456, 1e-7, 3.5e-9, 1e21, 1.5e300, 1e20, 0.000001} {
		add(func(c *jwtClaims) { c.Weight = w })
	}
	for _, s := range []string{`a"b`, `a\b`, "<script>&", "tab\there", "é✓", "line\u2028sep", "\x7f", string([]byte{0xff, 'a'})} {
		add(func(c *jwtClaims) { c.Subject, c.Label, c.Enr = s, s, s })
	}
	add(func(c *jwtClaims) { c.ExpiresAt, c.IssuedAt = nil, nil })
	add(func(c *jwtClaims) { c.NotBefore = jwt.NewNumericDate(at) }) // encoding/json's own path
	add(func(c *jwtClaims) { c.Audience = jwt.ClaimStrings{"executors"} })
	return out
}

func TestClaimsAsEncodingJSON(t *testing.T) {
	for _, c := range claimVariants() {
		want, err := json.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := appendClaims(nil, &c)
		if err != nil {
			t.Fatalf("appendClaims(%+v): %v", c, err)
		}
		if string(got) != string(want) {
			t.Errorf("appendClaims wrote\n%s\nencoding/json writes\n%s", got, want)
		}
	}
	for _, w := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		c := jwtClaims{Weight: w}
		if _, err := appendClaims(nil, &c); err == nil {
			t.Errorf("appendClaims with weight %v succeeded; encoding/json refuses it", w)
		}
	}
}

// The signer writes, byte for byte, the token golang-jwt's SignedString
// writes for the same claims (Ed25519 signatures are deterministic).
func TestSignedAsGolangJWT(t *testing.T) {
	priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1796319733, 987654321)
	s, err := NewSigner(priv, func() time.Time { return at })
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range claimVariants() {
		if c.Subject == "" || strings.ContainsRune(c.Subject, 0xfffd) {
			continue
		}
		c.ID = "" // sign(withID=false) keeps the claims' own
		got, exp, err := s.sign(c, 15*time.Minute, false)
		if err != nil {
			t.Fatalf("sign: %v", err)
		}
		// What sign completes, then golang-jwt's own serialization.
		c.Issuer = issuer
		c.IssuedAt = jwt.NewNumericDate(at)
		c.ExpiresAt = jwt.NewNumericDate(at.Add(15 * time.Minute))
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
		tok.Header["kid"] = KeyID(priv.Public().(ed25519.PublicKey))
		want, err := tok.SignedString(priv)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("sign wrote\n%s\ngolang-jwt writes\n%s", got, want)
		}
		if !exp.Equal(at.Add(15 * time.Minute).Truncate(time.Second)) {
			t.Errorf("expiry %v, want %v (whole seconds, as the wire carries it)", exp, at.Add(15*time.Minute).Truncate(time.Second))
		}
	}
}

// benchSigner is a fresh key and its signer, on the real clock.
func benchSigner(b *testing.B) (ed25519.PrivateKey, *Signer) {
	b.Helper()
	priv, err := GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	s, err := NewSigner(priv, nil)
	if err != nil {
		b.Fatal(err)
	}
	return priv, s
}

// benchBinding is a certificate binding as an mTLS device's token carries.
var benchBinding = Binding{Thumbprint: "x4lPb3c2pH8eAb2rZJ3nZt6kQ_9d0yFZy3cR2x1wPzA", Enrollment: "factory-ca"}

func BenchmarkSign(b *testing.B) {
	priv, s := benchSigner(b)
	bind := benchBinding
	b.Run("signer", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := s.SignBound("bench-dev-000001", "group-1", "default", 1, 15*time.Minute, bind); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The same token through golang-jwt's SignedString, as the signer
	// made it before: what writing the serialization here saves.
	b.Run("golang-jwt", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			now := time.Now()
			c := jwtClaims{
				RegisteredClaims: jwt.RegisteredClaims{
					Issuer: issuer, Subject: "bench-dev-000001", ID: "eb1f6661b000158039769ad0",
					IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(15 * time.Minute)),
				},
				Group: "group-1", Label: "default", Cnf: &confirmation{X5tS256: bind.Thumbprint}, Enr: bind.Enrollment,
			}
			tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
			tok.Header["kid"] = KeyID(priv.Public().(ed25519.PublicKey))
			if _, err := tok.SignedString(priv); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A token of one of the keys with a header other than the signers' (as
// another JWS library might write it) is verified by golang-jwt's parser;
// the signers' own header takes the direct path. Both give the same
// claims, and a forged signature fails on both.
func TestVerifyEitherHeader(t *testing.T) {
	priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	s, err := NewSigner(priv, func() time.Time { return at })
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(func() time.Time { return at }, priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	ours, _, err := s.SignBound("dev-1", "g1", "default", 2, time.Minute, Binding{Thumbprint: "dGh1bWI", Enrollment: "e1"})
	if err != nil {
		t.Fatal(err)
	}
	// The same claims under a header with its fields in another order.
	i, j := strings.IndexByte(ours, '.'), strings.LastIndexByte(ours, '.')
	h := base64.RawURLEncoding.EncodeToString([]byte(`{"typ":"JWT","kid":"` + KeyID(priv.Public().(ed25519.PublicKey)) + `","alg":"EdDSA"}`))
	input := h + ours[i:j]
	other := input + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(priv, []byte(input)))
	if _, ok := v.headers[other[:strings.IndexByte(other, '.')]]; ok {
		t.Fatal("the reordered header is the signers' own: the test would not reach golang-jwt")
	}
	a, err := v.Verify(ours)
	if err != nil {
		t.Fatalf("Verify(signer's token): %v", err)
	}
	b, err := v.Verify(other)
	if err != nil {
		t.Fatalf("Verify(token with another header): %v", err)
	}
	if a != b {
		t.Errorf("claims differ by path: direct %+v, golang-jwt %+v", a, b)
	}
	for _, tok := range []string{ours, other} {
		k := strings.LastIndexByte(tok, '.')
		sig, err := base64.RawURLEncoding.DecodeString(tok[k+1:])
		if err != nil {
			t.Fatal(err)
		}
		sig[0] ^= 1
		forged := tok[:k+1] + base64.RawURLEncoding.EncodeToString(sig)
		if _, err := v.Verify(forged); err == nil {
			t.Errorf("a token with a changed signature verified: %s", forged)
		}
	}
}

// BenchmarkVerify: a token of the signers through Verify, and the Ed25519
// verification alone (what is left besides decoding the claims).
func BenchmarkVerify(b *testing.B) {
	priv, s := benchSigner(b)
	v, err := NewVerifier(nil, priv.Public().(ed25519.PublicKey))
	if err != nil {
		b.Fatal(err)
	}
	tok, _, err := s.SignBound("bench-dev-000001", "group-1", "default", 1, 15*time.Minute, benchBinding)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("verifier", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	i := strings.LastIndexByte(tok, '.')
	sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
	if err != nil {
		b.Fatal(err)
	}
	pub := priv.Public().(ed25519.PublicKey)
	b.Run("ed25519-alone", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !ed25519.Verify(pub, []byte(tok[:i]), sig) {
				b.Fatal("the token's signature does not verify")
			}
		}
	})
}
