package device

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/grpc/metadata"
)

// SignatureHeader is the Assign metadata that carries a symmetric-key
// device's proof of identity (see [SymmetricKey]).
const SignatureHeader = "berth-device-sig"

// MaxSignatureLife is the longest life the control plane accepts for a
// signature.
const MaxSignatureLife = time.Hour

// DefaultSignatureLife is the life of the signatures SymmetricKey makes
// unless told otherwise: one per Assign, good for a few minutes.
const DefaultSignatureLife = 5 * time.Minute

// DeriveDeviceKey returns a device's key under a symmetric-key enrollment:
// HMAC-SHA256(enrollment key, device id). A fleet's provisioning derives
// each device's key with it and stores only that key on the device.
func DeriveDeviceKey(enrollmentKey []byte, deviceID string) []byte {
	m := hmac.New(sha256.New, enrollmentKey)
	m.Write([]byte(deviceID))
	return m.Sum(nil)
}

// SymmetricKey proves a device's identity at Assign with its derived key,
// as Azure DPS symmetric-key enrollments do: each Assign carries, in its
// SignatureHeader metadata, "<enrollment>.<expiry>.<MAC>" where MAC is the
// base64url HMAC-SHA256, under the device key, of "<device id>|<expiry>"
// (unix seconds). The key never travels; a captured signature is good for
// that device only, until its expiry.
type SymmetricKey struct {
	// EnrollmentID names the enrollment.
	EnrollmentID string
	// DeviceKey is the device's derived key (DeriveDeviceKey).
	DeviceKey []byte
	// Life is how long each signature is good for; zero means
	// DefaultSignatureLife, at most MaxSignatureLife.
	Life time.Duration
}

// validate checks k.
func (k *SymmetricKey) validate() error {
	switch {
	case k.EnrollmentID == "":
		return errors.New("SymmetricKey.EnrollmentID is required")
	case len(k.DeviceKey) == 0:
		return errors.New("SymmetricKey.DeviceKey is required")
	case k.Life < 0 || k.Life > MaxSignatureLife:
		return fmt.Errorf("SymmetricKey.Life %v: want 0 (the default, %v) to %v", k.Life, DefaultSignatureLife, MaxSignatureLife)
	}
	return nil
}

// Sign returns the SignatureHeader value for deviceID, made at now.
func (k *SymmetricKey) Sign(deviceID string, now time.Time) string {
	life := k.Life
	if life == 0 {
		life = DefaultSignatureLife
	}
	exp := strconv.FormatInt(now.Add(life).Unix(), 10)
	m := hmac.New(sha256.New, k.DeviceKey)
	m.Write([]byte(deviceID + "|" + exp))
	return k.EnrollmentID + "." + exp + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// metadata returns the metadata of one Assign of deviceID.
func (k *SymmetricKey) metadata(deviceID string, now time.Time) metadata.MD {
	return metadata.Pairs(SignatureHeader, k.Sign(deviceID, now))
}
