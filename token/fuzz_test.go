package token_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/berthproject/berth/token"
)

// fuzzNow is the fuzz targets' clock: tokens are signed and verified at it.
var fuzzNow = time.Unix(1_800_000_000, 0)

// fuzzTokens signs the tokens the fuzz targets start from with a fixed key,
// and returns them with a verifier of that key.
func fuzzTokens(f *testing.F) (*token.Verifier, []string) {
	f.Helper()
	priv := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	clock := func() time.Time { return fuzzNow }
	s, err := token.NewSigner(priv, clock)
	if err != nil {
		f.Fatal(err)
	}
	v, err := token.NewVerifier(clock, priv.Public().(ed25519.PublicKey))
	if err != nil {
		f.Fatal(err)
	}
	var toks []string
	add := func(tok string, _ time.Time, err error) {
		if err != nil {
			f.Fatal(err)
		}
		toks = append(toks, tok)
	}
	add(s.Sign("dev-1", "g1", "default", time.Minute))
	add(s.SignWeighted("printer-42", "group-eu", "gold", 2.5, time.Hour))
	add(s.SignBound("sensor:7", "g2", "std", 1, time.Minute, token.Binding{Thumbprint: "dGh1bWI", Enrollment: "factory-1"}))
	add(s.SignService("service/notifier", time.Minute))
	return v, toks
}

// FuzzVerify: Verify never panics on any string, every refusal wraps one of
// the package's sentinel errors, and what it accepts is spelled the one way
// the signer spells tokens (three canonical base64url segments) and carries
// complete claims. (The seeds' tokens are signed afresh by each fuzzing
// process, with a random id, so they cannot be compared by value.)
func FuzzVerify(f *testing.F) {
	v, toks := fuzzTokens(f)
	for _, tok := range toks {
		f.Add(tok)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		c, err := v.Verify(raw)
		if err != nil {
			if !errors.Is(err, token.ErrMissing) && !errors.Is(err, token.ErrInvalid) && !errors.Is(err, token.ErrExpired) {
				t.Fatalf("Verify(%q) = %v: wraps no sentinel error", raw, err)
			}
			return
		}
		segs := strings.Split(raw, ".")
		if len(segs) != 3 {
			t.Fatalf("Verify(%q) accepted %d segments", raw, len(segs))
		}
		for _, s := range segs {
			b, err := base64.RawURLEncoding.Strict().DecodeString(s)
			if err != nil || base64.RawURLEncoding.EncodeToString(b) != s {
				t.Fatalf("Verify(%q) accepted a segment %q that is not canonical base64url", raw, s)
			}
		}
		if c.DeviceID == "" || !c.ExpiresAt.After(fuzzNow) {
			t.Fatalf("Verify(%q) accepted incomplete claims %+v", raw, c)
		}
	})
}

// b64url is the base64url alphabet, in order.
const b64url = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// FuzzTokenModified: a token with any one byte changed, or cut short, or
// with bytes added, or its signature's last character spelled with other
// padding bits (the same signature bytes), fails verification.
func FuzzTokenModified(f *testing.F) {
	v, toks := fuzzTokens(f)
	for i := range toks {
		f.Add(uint8(i), uint16(0), byte('x'), uint8(0))
		f.Add(uint8(i), uint16(len(toks[i])-1), byte('B'), uint8(0)) // the signature's last character
		f.Add(uint8(i), uint16(len(toks[i])/2), byte('.'), uint8(1))
		f.Add(uint8(i), uint16(10), byte('='), uint8(2))
		f.Add(uint8(i), uint16(0), byte(1), uint8(3))
	}
	f.Fuzz(func(t *testing.T, which uint8, pos uint16, b byte, op uint8) {
		tok := toks[int(which)%len(toks)]
		i := int(pos) % len(tok)
		var bad string
		switch op % 4 {
		case 0: // replace one byte
			if tok[i] == b {
				return
			}
			bad = tok[:i] + string([]byte{b}) + tok[i+1:]
		case 1: // cut
			bad = tok[:i]
		case 2: // insert
			bad = tok[:i] + string([]byte{b}) + tok[i:]
		case 3: // set the padding bits of the last character: a 64-byte
			// signature leaves 4 of its 6 bits unused
			last := strings.IndexByte(b64url, tok[len(tok)-1])
			if last < 0 || b&0x0f == 0 {
				return
			}
			bad = tok[:len(tok)-1] + string(b64url[last|int(b&0x0f)])
		}
		if c, err := v.Verify(bad); err == nil {
			t.Fatalf("token modified at %d (op %d, byte %q) still verifies: %q → %+v", i, op%4, b, bad, c)
		}
	})
}
