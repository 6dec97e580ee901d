package registry

import (
	"fmt"

	"github.com/berthproject/berth/fleet"
)

// MaxIDLen is the longest id ValidID accepts, in bytes.
const MaxIDLen = fleet.MaxIDLen

// CheckID says what is wrong with id as the value of field (a request's
// field name, such as "device_id"): missing, longer than MaxIDLen, or
// refused by ValidID. It returns nil for a valid id. The RPC edges of the
// control plane check device ids with it, so that Assign and messaging
// refuse the same ids with the same words.
func CheckID(field, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%s is required", field)
	case len(id) > MaxIDLen:
		return fmt.Errorf("%s is %d bytes; at most %d", field, len(id), MaxIDLen)
	case !ValidID(id):
		return fmt.Errorf("%s %q: want 1-128 of [A-Za-z0-9._:@-], not \".\" or \"..\"", field, id)
	}
	return nil
}
