package executor

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/token"
)

// maxLoggedID bounds a claimed device id in a log line: it is the
// caller's word, not checked yet.
const maxLoggedID = 128

// refusedToken logs and counts a stream refused for its assignment token:
// missing, forged or minted for another device. An expired token or one
// for another group is genuine (a device reconnecting late, or after a
// move) and is neither logged nor counted here; Stats.Refused counts it.
func (s *Server) refusedToken(ctx context.Context, device string, err error) {
	var why string
	switch {
	case errors.Is(err, token.ErrMissing):
		why = "assignment token missing"
	case errors.Is(err, token.ErrInvalid):
		why = "assignment token invalid"
	case errors.Is(err, errWrongDevice):
		why = "assignment token for another device"
	default:
		return
	}
	if len(device) > maxLoggedID {
		device = device[:maxLoggedID] + "…"
	}
	s.authLog.Refused(why, "device", device, "peer", peerAddr(ctx), "err", err.Error())
}

// refusedService logs and counts an ExecutorInternalService call refused
// for its service token; err is the status the caller gets.
func (s *Server) refusedService(ctx context.Context, err error) {
	msg := status.Convert(err).Message()
	why, _, _ := strings.Cut(msg, ":")
	s.authLog.Refused(why, "peer", peerAddr(ctx), "code", status.Code(err).String(), "err", msg)
}

// peerAddr is the caller's address, or "" when unknown.
func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
