package controlplane

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthproject/berth/fleet"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	"github.com/berthproject/berth/placement"
)

// TestAnswer: the answer holds the decision's group, label, reason and
// endpoints in order, the token and its expiry, the ticket and the shared
// hints, whether the endpoints fit in the answer's own arrays or not.
func TestAnswer(t *testing.T) {
	hints := &controlplanev1.ReconnectHints{BaseDelay: durationpb.New(time.Second), Multiplier: 2}
	exp := time.Date(2026, 1, 2, 3, 4, 5, 6789, time.UTC)
	for _, n := range []int{0, 1, answerEndpoints, answerEndpoints + 1, 3 * answerEndpoints} {
		t.Run(fmt.Sprint(n, " endpoints"), func(t *testing.T) {
			d := placement.Decision{Group: fleet.Group{ID: "g1"}, Label: "gold", Reason: "because"}
			want := &controlplanev1.AssignResponse{
				Destination: &controlplanev1.Destination{GroupId: "g1", Label: "gold", Token: "tok", TokenExpiresAt: timestamppb.New(exp), Reservation: "r1/e0/7"},
				Reconnect:   hints,
				Reason:      "because",
			}
			for i := range n {
				e := &fleet.Executor{ID: fmt.Sprint("e", i), Address: fmt.Sprint("10.0.0.1:", i), TLSName: fmt.Sprint("e", i, ".example"), Capacity: 10, Connections: i}
				d.Endpoints = append(d.Endpoints, placement.Endpoint{Executor: e, Pending: 1})
				want.Destination.Endpoints = append(want.Destination.Endpoints, &controlplanev1.Endpoint{
					ExecutorId: e.ID, Address: e.Address, TlsServerName: e.TLSName, Utilization: float64(i+1) / 10})
			}
			got := answer(d, "tok", exp, "r1/e0/7", hints)
			if !proto.Equal(got, want) {
				t.Errorf("answer = %v\nwant %v", got, want)
			}
			if got.GetReconnect() != hints {
				t.Error("answer does not share the reconnect hints")
			}
			seen := map[*controlplanev1.Endpoint]bool{}
			for _, e := range got.GetDestination().GetEndpoints() {
				if seen[e] {
					t.Fatalf("endpoint %v listed twice", e)
				}
				seen[e] = true
			}
		})
	}
}
