package device

import (
	"context"
	"errors"
	"fmt"
	"time"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

var errNoEndpoints = errors.New("device: destination has no endpoints")

// errStayed reports that a rebalancing redirect could not be followed and
// the device kept its stream.
var errStayed = errors.New("device: redirect not followed; stream kept")

// run is the Device's one background loop: assign, connect, serve, back off,
// again, until ctx is done. Every stream it opens is closed before it
// returns; then it closes the Messages channel and the conns it created.
func (d *Device) run(ctx context.Context) {
	var (
		s       *stream
		dest    *controlplanev1.Destination
		retries int
	)
	defer func() {
		d.transition(Closed, nil, context.Cause(ctx), SessionInfo{})
		if s != nil {
			s.close()
		}
		if d.ownConn != nil {
			d.closeErr = d.ownConn.Close()
		}
		close(d.msgs)
		close(d.done)
	}()

	for ctx.Err() == nil {
		if s == nil {
			var err error
			group := dest.GetGroupId()
			s, dest, err = d.establish(ctx, dest)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if !d.backoff(ctx, retries, err, SessionInfo{GroupID: firstNonEmpty(dest.GetGroupId(), group)}, nil) {
					return
				}
				retries++
				continue
			}
			d.connected(s, dest)
		}

		next, nextDest, err := d.serve(ctx, s, dest)
		if errors.Is(err, errStayed) {
			// A move the device could not make: it keeps its stream.
			continue
		}
		dest = nextDest
		if next != nil {
			// Make-before-break: the new stream is welcomed; now drop the old.
			old := s
			s = next
			d.connected(next, dest)
			old.close()
			retries = 0
			continue
		}
		if ctx.Err() != nil {
			return
		}
		old := s
		s = nil
		if time.Since(old.info.ConnectedSince) >= d.stableAfter(old.info) {
			retries = 0
		}
		d.log.Info("stream lost", "executor", old.info.ExecutorID, "err", err)
		if !d.backoff(ctx, retries, err, old.info, old) {
			return
		}
		retries++
	}
}

// establish gets a stream for the device: it calls Assign first when dest is
// nil, its token has expired, or every endpoint of it failed last time (the
// group may be full or gone, and the control plane knows better); then it
// tries dest's endpoints in order. When that Assign fails but the old token
// is still valid, the old endpoints are tried anyway, so devices can come
// back to executors while the control plane is away. It returns the
// destination to keep using: nil when the group refused the token, so that
// the next attempt calls Assign again.
func (d *Device) establish(ctx context.Context, dest *controlplanev1.Destination) (*stream, *controlplanev1.Destination, error) {
	if dest == nil || expired(dest, time.Now()) || d.exhausted {
		d.transition(Assigning, nil, nil, SessionInfo{})
		fresh, err := d.assign(ctx)
		switch {
		case err == nil:
			dest = fresh
		case dest == nil || expired(dest, time.Now()):
			return nil, nil, err
		default:
			d.log.Info("assign failed; trying the last destination while its token lasts", "err", err)
		}
	}
	d.transition(Connecting, nil, nil, SessionInfo{GroupID: dest.GetGroupId()})
	s, err := d.dial(ctx, dest)
	if err != nil {
		d.exhausted = true
		if refused(err) {
			return nil, nil, err
		}
		return nil, dest, err
	}
	d.exhausted = false
	return s, dest, nil
}

// connected records a welcomed stream.
func (d *Device) connected(s *stream, dest *controlplanev1.Destination) {
	d.previous = &controlplanev1.PreviousAssignment{GroupId: s.info.GroupID, Label: dest.GetLabel()}
	d.log.Info("connected", "group", s.info.GroupID, "executor", s.info.ExecutorID,
		"address", s.info.Address, "session", s.info.SessionID)
	d.transition(Connected, s, nil, s.info)
}

// assign calls ControlPlaneService.Assign within AssignTimeout and returns
// the destination. It remembers the answer's reconnect hints.
func (d *Device) assign(ctx context.Context) (*controlplanev1.Destination, error) {
	d.stats.assigns.Add(1)
	actx, cancel := context.WithTimeout(ctx, d.cfg.AssignTimeout)
	defer cancel()
	if k := d.cfg.SymmetricKey; k != nil {
		actx = metadata.NewOutgoingContext(actx, k.metadata(d.cfg.DeviceID, time.Now()))
	}
	resp, err := d.cp.Assign(actx, &controlplanev1.AssignRequest{
		DeviceId: d.cfg.DeviceID,
		Spec:     d.spec,
		TenantId: d.cfg.TenantID,
		UserId:   d.cfg.UserID,
		Services: d.cfg.Services,
		Previous: d.previous,
	})
	if err != nil {
		d.stats.failures.Add(1)
		return nil, fmt.Errorf("device: assign: %w", err)
	}
	dest := resp.GetDestination()
	if len(dest.GetEndpoints()) == 0 || dest.GetToken() == "" {
		d.stats.failures.Add(1)
		return nil, fmt.Errorf("device: assign: answer without endpoints or token: %w", errNoEndpoints)
	}
	d.hints = resp.GetReconnect()
	d.log.Debug("assigned", "group", dest.GetGroupId(), "label", dest.GetLabel(),
		"endpoints", len(dest.GetEndpoints()), "reason", resp.GetReason())
	return dest, nil
}

// dial tries dest's endpoints in order and returns the first welcomed stream.
// It stops early when an endpoint refuses the token: every endpoint of the
// group would.
func (d *Device) dial(ctx context.Context, dest *controlplanev1.Destination) (*stream, error) {
	var errs []error
	for _, ep := range dest.GetEndpoints() {
		s, err := d.openStream(ctx, dest, ep)
		if err == nil {
			d.stats.connects.Add(1)
			return s, nil
		}
		d.stats.failures.Add(1)
		d.log.Debug("endpoint failed", "executor", ep.GetExecutorId(), "address", ep.GetAddress(), "err", err)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if refused(err) {
			return nil, err
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, errNoEndpoints
	}
	return nil, fmt.Errorf("device: every endpoint of group %s failed: %w", dest.GetGroupId(), errors.Join(errs...))
}

// serve waits while s is the device's stream. It returns when ctx is done,
// when s ends, or when a redirect was followed. After a successful redirect
// next is the new, welcomed stream (s is still open: the caller closes it).
// nextDest is the destination to use from now on (nil: call Assign).
func (d *Device) serve(ctx context.Context, s *stream, dest *controlplanev1.Destination) (next *stream, nextDest *controlplanev1.Destination, err error) {
	select {
	case <-ctx.Done():
		return nil, dest, ctx.Err()
	case <-s.ended:
		d.stats.failures.Add(1)
		if refused(s.err) {
			return nil, nil, s.err
		}
		return nil, dest, s.err
	case r := <-s.redirects:
		return d.follow(ctx, s, r, dest)
	}
}

// follow obeys a Redirect received on s while s stays open: it waits a random
// part of max_delay, gets a destination (the redirect's, or a new Assign when
// it carries none or an expired one) and opens a stream there. Should s end
// during the wait, the Device reports Backoff and finishes the wait anyway, so
// that devices leaving a stopping executor stay spread out. When a
// rebalancing redirect (REBALANCE) cannot be followed while s is still open,
// the device keeps s and follow returns errStayed: moving is optional,
// staying connected is not.
func (d *Device) follow(ctx context.Context, s *stream, r *executorv1.Redirect, dest *controlplanev1.Destination) (*stream, *controlplanev1.Destination, error) {
	d.log.Info("redirected", "reason", r.GetReason(), "message", r.GetMessage(),
		"to_group", r.GetDestination().GetGroupId())
	if md := r.GetMaxDelay().AsDuration(); md > 0 {
		timer := time.NewTimer(time.Duration(d.rnd() * float64(md)))
		defer timer.Stop()
		ended := s.ended
	wait:
		for {
			select {
			case <-ctx.Done():
				return nil, dest, ctx.Err()
			case <-ended:
				ended = nil
				d.stats.failures.Add(1)
				d.transition(Backoff, nil, s.err, s.info)
			case <-timer.C:
				break wait
			}
		}
	}
	stay := func(err error) bool {
		if r.GetReason() != executorv1.RedirectReason_REDIRECT_REASON_REBALANCE || ctx.Err() != nil {
			return false
		}
		select {
		case <-s.ended:
			return false
		default:
		}
		d.log.Info("redirect not followed; keeping the stream", "to_group", r.GetDestination().GetGroupId(), "err", err)
		return true
	}
	target := r.GetDestination()
	if len(target.GetEndpoints()) == 0 || target.GetToken() == "" || expired(target, time.Now()) {
		var err error
		if target, err = d.assign(ctx); err != nil {
			if stay(err) {
				return nil, dest, errStayed
			}
			return nil, nil, err
		}
	}
	ns, err := d.dial(ctx, target)
	if err != nil {
		if stay(err) {
			return nil, dest, errStayed
		}
		if refused(err) {
			return nil, nil, err
		}
		return nil, target, err
	}
	return ns, target, nil
}

// backoff enters the Backoff state, closes old (the stream just lost, if
// any) and waits the backoff delay for attempt retries+1. It returns false
// when ctx ended the wait.
func (d *Device) backoff(ctx context.Context, retries int, cause error, where SessionInfo, old *stream) bool {
	cfg := d.backoffConfig()
	delay := backoffDelay(cfg, retries, d.rnd)
	if hint := retryDelay(cause); hint > 0 {
		delay = max(delay, jitter(hint, cfg.Jitter, d.rnd))
	}
	d.transition(Backoff, nil, cause, where)
	if old != nil {
		old.close()
	}
	d.log.Debug("backing off", "delay", delay, "retries", retries, "err", cause)
	return sleep(ctx, delay)
}

// backoffConfig is Config.Backoff overridden by the last Assign's hints.
func (d *Device) backoffConfig() backoff.Config {
	return applyHints(d.cfg.Backoff, d.hints)
}

// stableAfter is how long a stream must have lived for its loss to restart
// the backoff from the base delay: a heartbeat interval (the executor proved
// it serves the stream), and at least the base delay.
func (d *Device) stableAfter(info SessionInfo) time.Duration {
	return max(info.HeartbeatInterval, d.backoffConfig().BaseDelay)
}

// refused reports whether err says the group will not take the device's
// token, so that only a new Assign can help.
func refused(err error) bool {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.FailedPrecondition:
		return true
	}
	return false
}

// expired reports whether dest's token has expired at now.
func expired(dest *controlplanev1.Destination, now time.Time) bool {
	t := dest.GetTokenExpiresAt()
	return t != nil && !now.Before(t.AsTime())
}

// sleep waits for d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
