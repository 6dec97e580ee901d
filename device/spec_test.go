package device

import (
	"testing"

	"google.golang.org/protobuf/proto"

	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
)

func TestSpecProto(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		want *controlplanev1.DeviceSpec
	}{
		{name: "zero", spec: Spec{}, want: nil},
		{name: "empty attributes", spec: Spec{Attributes: map[string]string{}}, want: nil},
		{name: "model only", spec: Spec{Model: "HL-1"}, want: &controlplanev1.DeviceSpec{Model: "HL-1"}},
		{
			name: "every field",
			spec: Spec{Model: "HL-1", Firmware: "1.0", Attributes: map[string]string{"site": "osaka"}},
			want: &controlplanev1.DeviceSpec{Model: "HL-1", Firmware: "1.0", Attributes: map[string]string{"site": "osaka"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.spec.proto()
			if (got == nil) != (tt.want == nil) || !proto.Equal(got, tt.want) {
				t.Errorf("proto() = %v, want %v", got, tt.want)
			}
			if got, want := tt.spec.IsZero(), tt.want == nil; got != want {
				t.Errorf("IsZero() = %v, want %v", got, want)
			}
		})
	}
}

// TestConnectCopiesSpec checks that a caller changing its Spec's attributes
// after Connect does not change what the Device sends.
func TestConnectCopiesSpec(t *testing.T) {
	attrs := map[string]string{"site": "osaka"}
	cfg := Config{ControlPlane: "127.0.0.1:1", DeviceID: "dev-1", Spec: Spec{Model: "HL-1", Attributes: attrs}}
	d, err := Connect(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Connect() = %v", err)
	}
	defer d.Close()
	attrs["site"] = "kyoto"
	attrs["extra"] = "x"
	want := &controlplanev1.DeviceSpec{Model: "HL-1", Attributes: map[string]string{"site": "osaka"}}
	if !proto.Equal(d.spec, want) {
		t.Errorf("spec sent = %v, want %v", d.spec, want)
	}
}
