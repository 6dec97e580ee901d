package codec_test

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/grpc/encoding"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/codec"
)

// answer is an Assign answer like the control plane's: nested messages,
// repeated endpoints, a timestamp.
func answer(token string) *controlplanev1.AssignResponse {
	return &controlplanev1.AssignResponse{
		Destination: &controlplanev1.Destination{
			GroupId: "group-1", Label: "default", Token: token, Reservation: "cp-1/exec-1/42",
			TokenExpiresAt: &timestamppb.Timestamp{Seconds: 1796320633, Nanos: 5},
			Endpoints: []*controlplanev1.Endpoint{
				{ExecutorId: "exec-1", Address: "127.0.0.1:1", Utilization: 0.25, TlsServerName: "exec-1.berth"},
				{ExecutorId: "exec-2", Address: "127.0.0.1:2", Utilization: 0.5},
			},
		},
		Reason: "default label default; balance",
	}
}

func TestSameBytesAsProtobuf(t *testing.T) {
	var c codec.Codec
	for _, m := range []proto.Message{
		answer("tok"),
		answer(strings.Repeat("t", 64<<10)), // above the pooling threshold
		&controlplanev1.AssignRequest{DeviceId: "dev-1", TenantId: "t", Services: []string{"scan", "print"}},
		&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, // no fast path
	} {
		data, err := c.Marshal(m)
		if err != nil {
			t.Fatalf("Marshal(%T): %v", m, err)
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if got := data.Materialize(); !bytes.Equal(got, want) {
			t.Errorf("Marshal(%T) = %x, want protobuf-go's %x", m, got, want)
		}
		data.Free()
	}
}

func TestRoundTrip(t *testing.T) {
	var c codec.Codec
	req := &controlplanev1.AssignRequest{
		DeviceId: "dev-1",
		Spec:     &controlplanev1.DeviceSpec{Model: "LP-2200", Attributes: map[string]string{"site": "s1", "floor": "2"}},
		Services: []string{"scan"},
	}
	for _, tt := range []struct {
		in, out proto.Message
	}{
		{in: req, out: &controlplanev1.AssignRequest{}},
		{in: answer(strings.Repeat("t", 64<<10)), out: &controlplanev1.AssignResponse{}},
		{in: &healthpb.HealthCheckRequest{Service: "berth"}, out: &healthpb.HealthCheckRequest{}},
	} {
		data, err := c.Marshal(tt.in)
		if err != nil {
			t.Fatalf("Marshal(%T): %v", tt.in, err)
		}
		if err := c.Unmarshal(data, tt.out); err != nil {
			t.Fatalf("Unmarshal(%T): %v", tt.out, err)
		}
		data.Free()
		if !proto.Equal(tt.in, tt.out) {
			t.Errorf("round trip of %T: got %v, want %v", tt.in, tt.out, tt.in)
		}
	}
}

// A message decoded into one that already holds fields ends up as the
// wire says, as with proto.Unmarshal (the fast path would merge).
func TestUnmarshalReplaces(t *testing.T) {
	var c codec.Codec
	data, err := c.Marshal(&controlplanev1.AssignRequest{DeviceId: "dev-2"})
	if err != nil {
		t.Fatal(err)
	}
	got := &controlplanev1.AssignRequest{DeviceId: "dev-1", Services: []string{"scan"}, TenantId: "t"}
	if err := c.Unmarshal(data, got); err != nil {
		t.Fatal(err)
	}
	if want := (&controlplanev1.AssignRequest{DeviceId: "dev-2"}); !proto.Equal(got, want) {
		t.Errorf("Unmarshal into a used message = %v, want %v", got, want)
	}
}

// Fields a newer peer sends and this build does not know survive a
// decode and an encode, as with protobuf-go.
func TestUnknownFieldsKept(t *testing.T) {
	var c codec.Codec
	wire, err := proto.Marshal(&executorv1.Hello{Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	wire = protowire.AppendTag(wire, 999, protowire.BytesType)
	wire = protowire.AppendString(wire, "from the future")
	var h executorv1.Hello
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &h); err != nil {
		t.Fatal(err)
	}
	if h.GetToken() != "tok" || len(h.ProtoReflect().GetUnknown()) == 0 {
		t.Fatalf("decoded %v, unknown %x; want the token and the unknown field", &h, h.ProtoReflect().GetUnknown())
	}
	out, err := c.Marshal(&h)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.Materialize(); !bytes.Equal(got, wire) {
		t.Errorf("re-encoded %x, want %x", got, wire)
	}
}

func TestRefusesWhatIsNotProtobuf(t *testing.T) {
	var c codec.Codec
	if _, err := c.Marshal("a string"); err == nil {
		t.Error("Marshal(string) succeeded")
	}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{1})}, new(int)); err == nil {
		t.Error("Unmarshal into *int succeeded")
	}
	// Bytes that are not a valid message are refused on both paths.
	bad := mem.BufferSlice{mem.SliceBuffer([]byte{0x0a, 0x05, 'a'})}
	if err := c.Unmarshal(bad, &controlplanev1.AssignRequest{}); err == nil {
		t.Error("Unmarshal of a truncated AssignRequest succeeded")
	}
	if err := c.Unmarshal(bad, &healthpb.HealthCheckRequest{}); err == nil {
		t.Error("Unmarshal of a truncated HealthCheckRequest succeeded")
	}
}

// The codec answers to grpc-go's content-subtype for protobuf, so that
// peers using grpc-go's own codec (or any other language's) see no
// difference.
func TestName(t *testing.T) {
	if got, want := (codec.Codec{}).Name(), encoding.GetCodecV2("proto").Name(); got != want {
		t.Errorf("Name() = %q, want %q", got, want)
	}
}
