package fleet

import (
	"encoding/json"
	"testing"
)

func TestTicketRoundTripAndMalformed(t *testing.T) {
	tk := Ticket{Replica: "cp-1a2b", Executor: "group-1-exec-1", Seq: 1764763200000000001}
	back, err := ParseTicket(tk.String())
	if err != nil || back != tk {
		t.Fatalf("ParseTicket(%q) = %v, %v; want %v", tk.String(), back, err, tk)
	}
	for _, bad := range []string{"", "cp", "cp/e", "cp/e/", "cp/e/0", "cp/e/-1", "cp/e/x", "cp/e/1/2", "/e/1", "cp//1", "../e/1", "cp/e/18446744073709551616"} {
		if got, err := ParseTicket(bad); err == nil {
			t.Errorf("ParseTicket(%q) = %v, want an error", bad, got)
		}
	}
}

func TestSeqSet(t *testing.T) {
	var s SeqSet
	if err := json.Unmarshal([]byte(`[[3,5],[9,9],[20,30]]`), &s); err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	for n, want := range map[uint64]bool{2: false, 3: true, 5: true, 6: false, 9: true, 10: false, 25: true, 31: false} {
		if s.Contains(n) != want {
			t.Errorf("%v contains %d: %v, want %v", s, n, !want, want)
		}
	}
	for _, bad := range []SeqSet{{{5, 3}}, {{3, 5}, {5, 6}}, {{7, 8}, {1, 2}}} {
		if bad.Validate() == nil {
			t.Errorf("%v validates, want an error", bad)
		}
	}
	big := make(SeqSet, MaxAdmittedRanges+1)
	for i := range big {
		big[i] = [2]uint64{uint64(2 * i), uint64(2 * i)}
	}
	if big.Validate() == nil {
		t.Errorf("%d ranges validate, want an error", len(big))
	}
}
