package registry

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Key kinds of device identity: enrollments and revoked devices.
const (
	enrollmentsDir = "/enrollments/"
	revokedDir     = "/revoked/"
)

// EnrollmentKind says how the devices of an enrollment prove who they are.
type EnrollmentKind string

// Enrollment kinds.
const (
	// EnrollmentX509 devices present a client certificate that chains to
	// the enrollment's CA.
	EnrollmentX509 EnrollmentKind = "x509"
	// EnrollmentSymmetric devices sign with a key derived from the
	// enrollment's key: HMAC-SHA256(enrollment key, device id).
	EnrollmentSymmetric EnrollmentKind = "symmetric"
)

// SymmetricKeySize is the size of a symmetric enrollment's key in bytes.
const SymmetricKeySize = 32

// MaxCAPEM bounds an X.509 enrollment's CA bundle, in bytes.
const MaxCAPEM = 64 << 10

// Enrollment is a group of devices that prove their identity the same way,
// stored at /berth/enrollments/<id>. A symmetric enrollment's key is stored
// as is (the control plane needs it to check signatures): whoever reads
// etcd can derive every device key of it.
type Enrollment struct {
	// ID names the enrollment.
	ID string `json:"id"`
	// Kind is x509 or symmetric.
	Kind EnrollmentKind `json:"kind"`
	// CAPEM holds the CA certificates (PEM) of an x509 enrollment.
	CAPEM string `json:"ca_pem,omitempty"`
	// Key is a symmetric enrollment's key (SymmetricKeySize bytes).
	Key []byte `json:"key,omitempty"`
	// Disabled enrollments authenticate no device.
	Disabled bool `json:"disabled,omitempty"`
	// CreatedAt is when it was created.
	CreatedAt time.Time `json:"created_at"`
}

// validKeyID is ValidID without "." and "..", which would name no key of
// their own under a directory.
func validKeyID(id string) bool { return ValidID(id) && id != "." && id != ".." }

// Validate checks e.
func (e Enrollment) Validate() error {
	if !validKeyID(e.ID) {
		return fmt.Errorf("%w: enrollment id %q: want 1-128 of [A-Za-z0-9._:@-]", ErrInvalid, e.ID)
	}
	switch e.Kind {
	case EnrollmentX509:
		if len(e.Key) != 0 {
			return fmt.Errorf("%w: enrollment %s: an x509 enrollment holds no key", ErrInvalid, e.ID)
		}
		if _, err := ParseCAPool(e.CAPEM); err != nil {
			return fmt.Errorf("%w: enrollment %s: %v", ErrInvalid, e.ID, err)
		}
	case EnrollmentSymmetric:
		if len(e.Key) != SymmetricKeySize {
			return fmt.Errorf("%w: enrollment %s: key of %d bytes, want %d", ErrInvalid, e.ID, len(e.Key), SymmetricKeySize)
		}
		if e.CAPEM != "" {
			return fmt.Errorf("%w: enrollment %s: a symmetric enrollment holds no CA", ErrInvalid, e.ID)
		}
	default:
		return fmt.Errorf("%w: enrollment %s: kind %q: want x509 or symmetric", ErrInvalid, e.ID, e.Kind)
	}
	return nil
}

// ParseCAPool parses a PEM bundle of CA certificates (at least one, at most
// MaxCAPEM bytes, nothing but CERTIFICATE blocks).
func ParseCAPool(bundle string) (*x509.CertPool, error) {
	if len(bundle) > MaxCAPEM {
		return nil, fmt.Errorf("CA bundle of %d bytes; at most %d", len(bundle), MaxCAPEM)
	}
	pool := x509.NewCertPool()
	rest := []byte(bundle)
	n := 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("CA bundle holds a %s block; want only CERTIFICATE", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA certificate %d: %w", n+1, err)
		}
		if !c.IsCA {
			return nil, fmt.Errorf("certificate %d (%s) is not a CA", n+1, c.Subject)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("no CA certificate in the bundle")
	}
	return pool, nil
}

// Revocation marks a device revoked, at /berth/revoked/<device>: it gets no
// assignment and executors close its streams.
type Revocation struct {
	// DeviceID is the revoked device.
	DeviceID string `json:"device"`
	// Reason is free text for operators.
	Reason string `json:"reason,omitempty"`
	// At is when it was revoked.
	At time.Time `json:"at"`
}

// MaxRevocationReason bounds a revocation's reason, in bytes.
const MaxRevocationReason = 256

func (r *Registry) enrollmentKey(id string) string { return r.prefix + enrollmentsDir + id }
func (r *Registry) revokedKey(id string) string    { return r.prefix + revokedDir + id }

// CreateEnrollment stores a new enrollment; ErrConflict when one of that id
// exists.
func (r *Registry) CreateEnrollment(ctx context.Context, e Enrollment) error {
	if err := e.Validate(); err != nil {
		return err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("registry: encode enrollment %s: %w", e.ID, err)
	}
	key := r.enrollmentKey(e.ID)
	tr, err := r.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(clientv3.OpPut(key, string(b))).Commit()
	if err != nil {
		return fmt.Errorf("registry: put enrollment %s: %w", e.ID, err)
	}
	if !tr.Succeeded {
		return fmt.Errorf("%w: enrollment %s exists", ErrConflict, e.ID)
	}
	return nil
}

// Enrollments lists every enrollment, sorted by id.
func (r *Registry) Enrollments(ctx context.Context) ([]Enrollment, error) {
	return listJSON[Enrollment](ctx, r, r.prefix+enrollmentsDir)
}

// SetEnrollmentDisabled disables or enables an enrollment, atomically
// against other writes of it, and returns it as stored. ErrNotFound when it
// does not exist.
func (r *Registry) SetEnrollmentDisabled(ctx context.Context, id string, disabled bool) (Enrollment, error) {
	key := r.enrollmentKey(id)
	for {
		resp, err := r.cli.Get(ctx, key)
		if err != nil {
			return Enrollment{}, fmt.Errorf("registry: get enrollment %s: %w", id, err)
		}
		if len(resp.Kvs) == 0 {
			return Enrollment{}, fmt.Errorf("%w: enrollment %s", ErrNotFound, id)
		}
		var e Enrollment
		if err := json.Unmarshal(resp.Kvs[0].Value, &e); err != nil {
			return Enrollment{}, fmt.Errorf("registry: decode enrollment %s: %w", id, err)
		}
		e.Disabled = disabled
		b, err := json.Marshal(e)
		if err != nil {
			return Enrollment{}, fmt.Errorf("registry: encode enrollment %s: %w", id, err)
		}
		tr, err := r.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(key, string(b))).Commit()
		if err != nil {
			return Enrollment{}, fmt.Errorf("registry: put enrollment %s: %w", id, err)
		}
		if tr.Succeeded {
			return e, nil
		}
	}
}

// DeleteEnrollment removes an enrollment and reports whether it existed.
func (r *Registry) DeleteEnrollment(ctx context.Context, id string) (bool, error) {
	resp, err := r.cli.Delete(ctx, r.enrollmentKey(id))
	if err != nil {
		return false, fmt.Errorf("registry: delete enrollment %s: %w", id, err)
	}
	return resp.Deleted > 0, nil
}

// PutRevocation revokes a device.
func (r *Registry) PutRevocation(ctx context.Context, rv Revocation) error {
	if !validKeyID(rv.DeviceID) {
		return fmt.Errorf("%w: device id %q", ErrInvalid, rv.DeviceID)
	}
	if len(rv.Reason) > MaxRevocationReason {
		return fmt.Errorf("%w: reason of %d bytes; at most %d", ErrInvalid, len(rv.Reason), MaxRevocationReason)
	}
	return r.putJSON(ctx, r.revokedKey(rv.DeviceID), rv)
}

// DeleteRevocation lifts a device's revocation and reports whether there
// was one.
func (r *Registry) DeleteRevocation(ctx context.Context, deviceID string) (bool, error) {
	resp, err := r.cli.Delete(ctx, r.revokedKey(deviceID))
	if err != nil {
		return false, fmt.Errorf("registry: delete revocation of %s: %w", deviceID, err)
	}
	return resp.Deleted > 0, nil
}

// Revocations lists the revoked devices, sorted by device id.
func (r *Registry) Revocations(ctx context.Context) ([]Revocation, error) {
	return listJSON[Revocation](ctx, r, r.prefix+revokedDir)
}
