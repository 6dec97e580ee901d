package executor_test

import (
	"testing"

	"github.com/berthproject/berth/fleet"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/registry"
)

// TestRecordReportsAdmittedReservations: a device's reservation ticket
// reaches the record in the same update as the count that includes it, as
// ranges per replica; a ticket for another executor and a malformed one are
// ignored, and the departure of the device leaves the numbers in place.
func TestRecordReportsAdmittedReservations(t *testing.T) {
	h := start(t, nil)
	h.reg.waitRecord(t, "an empty reservation map before any device", func(e registry.Executor) bool {
		return e.Admitted != nil && len(e.Admitted) == 0
	})
	hello := func(id, ticket string) *device {
		d := h.open(t, id, &executorv1.ConnectRequest{Frame: &executorv1.ConnectRequest_Hello{Hello: &executorv1.Hello{
			DeviceId: id, Token: h.token(t, id), Reservation: ticket}}})
		d.next(t, "Welcome", func(f *executorv1.ConnectResponse) bool { return f.GetWelcome() != nil })
		return d
	}
	d1 := hello("d1", "cp-a/"+testExecutor+"/1005")
	hello("d2", "cp-b/"+testExecutor+"/7")
	hello("d3", "cp-a/other-exec/1004") // reserved elsewhere
	hello("d4", "cp-a/"+testExecutor+"/1003")
	hello("d5", "not a ticket")
	hello("d6", "cp-a/"+testExecutor+"/1004")
	h.reg.waitRecord(t, "six devices", func(e registry.Executor) bool { return e.Connections == 6 })
	rec := h.reg.record()
	want := map[string]fleet.SeqSet{"cp-a": {{1003, 1005}}, "cp-b": {{7, 7}}}
	if len(rec.Admitted) != len(want) || !equalSets(rec.Admitted["cp-a"], want["cp-a"]) || !equalSets(rec.Admitted["cp-b"], want["cp-b"]) {
		t.Errorf("Admitted = %v, want %v", rec.Admitted, want)
	}
	// Every record the executor handed over counts each device whose
	// reservation it lists.
	h.reg.mu.Lock()
	for _, r := range h.reg.history {
		listed := 0
		for _, set := range r.Admitted {
			for _, x := range set {
				listed += int(x[1] - x[0] + 1)
			}
		}
		if listed > r.Connections {
			t.Errorf("record %+v lists %d reservations, counts %d devices", r, listed, r.Connections)
		}
	}
	h.reg.mu.Unlock()
	d1.leave(t)
	h.reg.waitRecord(t, "five devices", func(e registry.Executor) bool { return e.Connections == 5 })
	if got := h.reg.record().Admitted["cp-a"]; !equalSets(got, want["cp-a"]) {
		t.Errorf("after a device left, Admitted[cp-a] = %v, want %v kept", got, want["cp-a"])
	}
}

func equalSets(a, b fleet.SeqSet) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
