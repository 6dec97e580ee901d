package controlplane_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/berthproject/berth/controlplane"
	"github.com/berthproject/berth/fleet"
	controlplanev1 "github.com/berthproject/berth/gen/berth/controlplane/v1"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// BenchmarkAssign measures an Assign of a known device, without gRPC.
func BenchmarkAssign(b *testing.B) {
	var groups []registry.Group
	var execs []registry.Executor
	for g := range 8 {
		id := fmt.Sprintf("g%d", g)
		groups = append(groups, registry.Group{ID: id, Labels: []string{"default"}, Capacity: 1 << 20, State: registry.GroupActive})
		for e := range 4 {
			// Admitted: executors that report reservations, as berth's do.
			execs = append(execs, registry.Executor{ID: fmt.Sprintf("%s-%d", id, e), GroupID: id, Address: "127.0.0.1:1", Capacity: 1 << 18,
				Admitted: map[string]fleet.SeqSet{}})
		}
	}
	key, err := token.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	signer, err := token.NewSigner(key, nil)
	if err != nil {
		b.Fatal(err)
	}
	cache := &fakeCache{snap: registry.NewSnapshot(1, groups, execs), records: map[string]registry.Assignment{}}
	srv, err := controlplane.New(controlplane.DefaultConfig(), cache, &fakeStore{cache: cache}, signer, nil)
	if err != nil {
		b.Fatal(err)
	}
	reqs := make([]*controlplanev1.AssignRequest, 1000)
	for i := range reqs {
		reqs[i] = &controlplanev1.AssignRequest{DeviceId: fmt.Sprintf("dev-%d", i), Spec: &controlplanev1.DeviceSpec{Model: "m", Firmware: "1"}, TenantId: "t"}
		if _, err := srv.Assign(context.Background(), reqs[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := srv.Assign(context.Background(), reqs[i%len(reqs)]); err != nil {
			b.Fatal(err)
		}
	}
}
