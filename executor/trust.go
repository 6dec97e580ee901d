package executor

import (
	"context"
	"crypto/subtle"
	"fmt"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/identity"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// checkBinding refuses a token bound to a client certificate (RFC 8705
// cnf x5t#S256) on a connection that does not present that certificate:
// UNAUTHENTICATED, for a missing certificate as for another one, since
// either way the caller holds a token without the proof that goes with it,
// a credential that is not whole; PERMISSION_DENIED is kept for a known
// identity without the right (a revoked device).
func checkBinding(ctx context.Context, c token.Claims) error {
	want := c.Binding.Thumbprint
	if want == "" {
		return nil
	}
	cert := identity.PeerCertificate(ctx)
	if cert == nil {
		return streamErrorf(errUnbound, "token is bound to a client certificate; connect over TLS with that certificate")
	}
	if subtle.ConstantTimeCompare([]byte(identity.Thumbprint(cert)), []byte(want)) != 1 {
		return streamErrorf(errUnbound, "token is bound to another client certificate")
	}
	return nil
}

// checkTrustLocked refuses a revoked device or a token whose enrollment is
// disabled or gone. Called under s.mu, so that a revocation applied before
// it refuses the stream and one applied after it finds the session.
func (s *Server) checkTrustLocked(ss *session) error {
	if s.trust == nil {
		return nil
	}
	if s.trust.Revoked(ss.deviceID) {
		return streamErrorf(errRevoked, "device %s is revoked", ss.deviceID)
	}
	if ss.enrollment != "" {
		if e, ok := s.trust.Enrollment(ss.enrollment); !ok || e.Disabled {
			return streamErrorf(errRevoked, "enrollment %s is disabled", ss.enrollment)
		}
	}
	return nil
}

// trustChanged closes the streams of a device just revoked or of an
// enrollment just disabled or deleted, with Goodbye{REVOKED}.
func (s *Server) trustChanged(c registry.TrustChange) {
	s.mu.Lock()
	var victims []*session
	var msg string
	switch {
	case c.RevokedDevice != "":
		if ss := s.sessions[c.RevokedDevice]; ss != nil {
			victims = append(victims, ss)
		}
		msg = fmt.Sprintf("device %s is revoked", c.RevokedDevice)
	case c.ClosedEnrollment != "":
		for _, ss := range s.sessions {
			if ss.enrollment == c.ClosedEnrollment {
				victims = append(victims, ss)
			}
		}
		msg = fmt.Sprintf("enrollment %s is disabled", c.ClosedEnrollment)
	}
	s.mu.Unlock()
	for _, ss := range victims {
		if ss.close(closeReason{
			err:     streamErrorf(errRevoked, "%s", msg),
			goodbye: &executorv1.Goodbye{Reason: executorv1.GoodbyeReason_GOODBYE_REASON_REVOKED, Message: msg},
		}, closeGrace) {
			s.stats.revoked.Add(1)
			s.log.Info("stream closed: identity revoked", "device", ss.deviceID, "session", ss.id, "reason", msg)
		}
	}
}
