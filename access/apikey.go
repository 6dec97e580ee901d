package access

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/berthproject/berth/registry"
)

// NewAPIKeySecret makes a key: its id (16 hex digits), the secret to hand
// out once ("<id>.<32 random bytes, base64url>") and the hash to store.
func NewAPIKeySecret() (id, secret, hash string, err error) {
	var idb [8]byte
	var sb [32]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return "", "", "", fmt.Errorf("access: random: %w", err)
	}
	if _, err := rand.Read(sb[:]); err != nil {
		return "", "", "", fmt.Errorf("access: random: %w", err)
	}
	id = hex.EncodeToString(idb[:])
	part := base64.RawURLEncoding.EncodeToString(sb[:])
	return id, id + "." + part, HashSecret(part), nil
}

// HashSecret returns the stored form of a key's secret part: its SHA-256,
// base64url. A salt adds nothing to 256 random bits.
func HashSecret(part string) string {
	sum := sha256.Sum256([]byte(part))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// splitKey splits "<id>.<secret part>".
func splitKey(key string) (id, part string, ok bool) {
	id, part, ok = strings.Cut(key, ".")
	return id, part, ok && id != "" && part != "" && len(key) <= 256
}

// hashMatches compares a presented secret part with a stored hash in
// constant time.
func hashMatches(part, stored string) bool {
	return subtle.ConstantTimeCompare([]byte(HashSecret(part)), []byte(stored)) == 1
}

// Bounds of an API key's description.
const (
	maxKeyName   = 128
	maxKeyLimits = 64
	maxTopic     = 128
)

// NewAPIKey validates a key's description and makes the key: the record
// to store (its hash, never the secret) and the secret to show once.
// Errors wrap registry.ErrInvalid and name the field.
func NewAPIKey(name string, roles, tenants, topics []string, by string, now time.Time) (registry.APIKey, string, error) {
	if name == "" || len(name) > maxKeyName || strings.ContainsFunc(name, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return registry.APIKey{}, "", fmt.Errorf("%w: name %q: want 1-%d printable characters", registry.ErrInvalid, name, maxKeyName)
	}
	if len(roles) == 0 {
		return registry.APIKey{}, "", fmt.Errorf("%w: roles: want at least one of admin, operator, viewer, service", registry.ErrInvalid)
	}
	for _, r := range roles {
		if _, err := ParseRole(r); err != nil {
			return registry.APIKey{}, "", fmt.Errorf("%w: roles: %q is not a role (admin, operator, viewer, service)", registry.ErrInvalid, r)
		}
	}
	if len(tenants) > maxKeyLimits || len(topics) > maxKeyLimits {
		return registry.APIKey{}, "", fmt.Errorf("%w: tenants and topics: at most %d each", registry.ErrInvalid, maxKeyLimits)
	}
	for _, t := range tenants {
		if !registry.ValidID(t) {
			return registry.APIKey{}, "", fmt.Errorf("%w: tenants: %q is not a valid id", registry.ErrInvalid, t)
		}
	}
	for _, t := range topics {
		if t == "" || len(t) > maxTopic {
			return registry.APIKey{}, "", fmt.Errorf("%w: topics: %q: want 1-%d bytes", registry.ErrInvalid, t, maxTopic)
		}
	}
	id, secret, hash, err := NewAPIKeySecret()
	if err != nil {
		return registry.APIKey{}, "", err
	}
	return registry.APIKey{ID: id, Name: name, Roles: roles, Tenants: tenants, Topics: topics, SecretHash: hash, CreatedAt: now.UTC(), CreatedBy: by}, secret, nil
}
