package controlplane

// Reservations returns how many reservations the replica holds: made on
// Assign (or learnt from other replicas' records) less than
// ReservationMaxAge ago. Some of them are in executors' counts already; the
// number bounds what placement counts as pending.
func (s *Server) Reservations() int { return s.res.held() }

// Refusals returns the refused Assigns by reason ("unauthenticated",
// "permission denied"), as logged.
func (s *Server) Refusals() map[string]uint64 { return s.refused.Counts() }

// held counts the reservations younger than maxAge.
func (r *reservations) held() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	cut := r.now().Add(-r.maxAge)
	n := 0
	for _, m := range []map[string][]reservation{r.byExec, r.byGroup} {
		for _, rs := range m {
			for i := len(rs) - 1; i >= 0 && rs[i].at.After(cut); i-- {
				n++
			}
		}
	}
	return n
}
