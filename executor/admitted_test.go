package executor_test

import (
	"testing"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/registry"
)

// TestRecordReportsAdmittedReservations: a device's reservation ticket
// reaches the record in the same update as the count that includes it; a
// ticket for another executor, a malformed one, a lower number and the
// departure of the device leave the mark where it is.
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
	hello("d3", "cp-a/other-exec/2000") // reserved elsewhere
	hello("d4", "cp-a/"+testExecutor+"/1001")
	hello("d5", "not a ticket")
	h.reg.waitRecord(t, "five devices", func(e registry.Executor) bool { return e.Connections == 5 })
	rec := h.reg.record()
	if got := rec.Admitted; len(got) != 2 || got["cp-a"] != 1005 || got["cp-b"] != 7 {
		t.Errorf("Admitted = %v, want cp-a:1005 cp-b:7", got)
	}
	// Every record the executor handed over counts each device whose
	// reservation it reports.
	h.reg.mu.Lock()
	for _, r := range h.reg.history {
		if r.Admitted["cp-a"] >= 1005 && r.Connections < 1 || r.Admitted["cp-b"] >= 7 && r.Connections < 2 {
			t.Errorf("record %+v reports a reservation without counting its device", r)
		}
	}
	h.reg.mu.Unlock()
	d1.leave(t)
	h.reg.waitRecord(t, "four devices", func(e registry.Executor) bool { return e.Connections == 4 })
	if got := h.reg.record().Admitted["cp-a"]; got != 1005 {
		t.Errorf("after a device left, Admitted[cp-a] = %d, want 1005 kept", got)
	}
}
