package controlplane_test

import (
	"testing"

	"github.com/berthproject/berth/controlplane"
	"github.com/berthproject/berth/placement"
	"github.com/berthproject/berth/registry"
	"github.com/berthproject/berth/token"
)

// WithPolicies makes the server decide with the replica's shared policy
// cache: a version it compiles is the cache's policy in force.
func TestWithPolicies(t *testing.T) {
	key, err := token.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := token.NewSigner(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	groups, execs := twoGroups()
	cache := &fakeCache{snap: registry.NewSnapshot(1, groups, execs), records: map[string]registry.Assignment{}}
	shared := placement.NewPolicies(nil)
	srv, err := controlplane.New(controlplane.DefaultConfig(), cache, &fakeStore{cache: cache}, signer, nil, controlplane.WithPolicies(shared))
	if err != nil {
		t.Fatal(err)
	}
	doc := []byte(`{"defaultLabel": "std"}`)
	snap := cache.snap.WithPolicy(&registry.StoredPolicy{Document: doc, Version: 9}, nil)
	if got := srv.PolicyFor(snap).Version(); got != 9 {
		t.Fatalf("PolicyFor = version %d; want 9", got)
	}
	if got := shared.Current().Version(); got != 9 {
		t.Errorf("the shared cache's policy in force is version %d; want 9 (the server compiled into another cache)", got)
	}
}
