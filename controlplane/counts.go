package controlplane

// Reservations returns how many reservations the replica holds: made on
// Assign (or learnt from other replicas' records) less than
// ReservationMaxAge ago and not yet seen admitted when placement last
// looked at their executor. It bounds what placement counts as pending.
func (s *Server) Reservations() int { return s.res.held() }

// Refusals returns the refused Assigns by reason ("unauthenticated",
// "permission denied"), as logged.
func (s *Server) Refusals() map[string]uint64 { return s.refused.Counts() }

// held counts the reservations younger than maxAge and not seen admitted.
func (r *reservations) held() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	cut := r.now().Add(-r.maxAge)
	n := 0
	list := func(l *reservationList) {
		for _, x := range l.rs[l.head:] {
			if !x.gone && x.at.After(cut) {
				n++
			}
		}
	}
	for _, x := range r.byExec {
		list(&x.own)
		for _, l := range x.others {
			list(l)
		}
	}
	for _, rs := range r.byGroup {
		for _, x := range rs {
			if x.at.After(cut) {
				n++
			}
		}
	}
	return n
}
