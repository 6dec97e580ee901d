package registry_test

import (
	"strings"
	"testing"

	"github.com/berthproject/berth/registry"
)

// FuzzCheckID: ValidID and CheckID never panic and agree; an id they accept
// is 1 to MaxIDLen bytes of [A-Za-z0-9._:@-], not "." or "..", so as the
// last segment of a key (presence, assignment, queue) it can neither add a
// segment nor climb out of its directory.
func FuzzCheckID(f *testing.F) {
	f.Fuzz(func(t *testing.T, id string) {
		valid := registry.ValidID(id)
		if err := registry.CheckID("device_id", id); (err == nil) != valid {
			t.Fatalf("ValidID(%q) = %v but CheckID = %v", id, valid, err)
		}
		if !valid {
			return
		}
		if len(id) == 0 || len(id) > registry.MaxIDLen || id == "." || id == ".." {
			t.Fatalf("ValidID accepted %q", id)
		}
		for _, r := range id {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._:@-", r)) {
				t.Fatalf("ValidID accepted %q, with %q", id, r)
			}
		}
	})
}
