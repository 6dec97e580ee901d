package identity

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/berthproject/berth/registry"
)

// SignatureHeader is the request metadata of a symmetric-key device's
// proof: "<enrollment id>.<expiry, unix seconds>.<signature>", the signature
// being the unpadded base64url HMAC-SHA256, under the device key, of
// "<device id>|<expiry>". The device key is DeviceKey(enrollment key,
// device id). No key travels.
const SignatureHeader = "berth-device-sig"

// MaxSignatureLife bounds how far ahead a signature's expiry may be.
const MaxSignatureLife = time.Hour

// maxSignatureLen bounds the header's length (id, expiry, 43-byte MAC).
const maxSignatureLen = registry.MaxIDLen + 64

// DeviceKey derives a device's key from its enrollment's key:
// HMAC-SHA256(enrollment key, device id).
func DeviceKey(enrollmentKey []byte, deviceID string) []byte {
	m := hmac.New(sha256.New, enrollmentKey)
	m.Write([]byte(deviceID))
	return m.Sum(nil)
}

// Sign returns the SignatureHeader value proving deviceID with its device
// key, valid until exp.
func Sign(enrollmentID string, deviceKey []byte, deviceID string, exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	return enrollmentID + "." + e + "." + base64.RawURLEncoding.EncodeToString(mac(deviceKey, deviceID, e))
}

func mac(deviceKey []byte, deviceID, exp string) []byte {
	m := hmac.New(sha256.New, deviceKey)
	m.Write([]byte(deviceID + "|" + exp))
	return m.Sum(nil)
}

// signature authenticates a SignatureHeader value for requested.
func (a *Authenticator) signature(v, requested string) (Identity, error) {
	if len(v) > maxSignatureLen {
		return Identity{}, fmt.Errorf("%w: %s too long", ErrUnauthenticated, SignatureHeader)
	}
	// The enrollment id may hold dots; the expiry and the MAC do not.
	i := strings.LastIndexByte(v, '.')
	if i < 0 {
		return Identity{}, fmt.Errorf("%w: %s: want <enrollment>.<expiry>.<signature>", ErrUnauthenticated, SignatureHeader)
	}
	head, sig := v[:i], v[i+1:]
	j := strings.LastIndexByte(head, '.')
	if j < 0 {
		return Identity{}, fmt.Errorf("%w: %s: want <enrollment>.<expiry>.<signature>", ErrUnauthenticated, SignatureHeader)
	}
	enrID, expS := head[:j], head[j+1:]
	exp, err := strconv.ParseInt(expS, 10, 64)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %s: expiry is not unix seconds", ErrUnauthenticated, SignatureHeader)
	}
	now := a.now()
	if !now.Before(time.Unix(exp, 0)) {
		return Identity{}, fmt.Errorf("%w: signature expired", ErrUnauthenticated)
	}
	if time.Unix(exp, 0).After(now.Add(MaxSignatureLife)) {
		return Identity{}, fmt.Errorf("%w: signature expiry more than %v ahead", ErrUnauthenticated, MaxSignatureLife)
	}
	if requested == "" {
		return Identity{}, fmt.Errorf("%w: device_id is required with a signature", ErrUnauthenticated)
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: signature is not base64url", ErrUnauthenticated)
	}
	e, ok := a.trust.Enrollment(enrID)
	if !ok || e.Kind != registry.EnrollmentSymmetric {
		// The same words as a bad signature: unknown ids are not told apart.
		return Identity{}, fmt.Errorf("%w: signature does not verify", ErrUnauthenticated)
	}
	if !hmac.Equal(got, mac(DeviceKey(e.Key, requested), requested, expS)) {
		return Identity{}, fmt.Errorf("%w: signature does not verify", ErrUnauthenticated)
	}
	if e.Disabled {
		return Identity{}, fmt.Errorf("%w: enrollment %s is disabled", ErrForbidden, e.ID)
	}
	if a.trust.Revoked(requested) {
		return Identity{}, fmt.Errorf("%w: device %s is revoked", ErrForbidden, requested)
	}
	return Identity{DeviceID: requested, Kind: KindSymmetric, Enrollment: e.ID}, nil
}
