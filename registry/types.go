package registry

import (
	"errors"

	"github.com/berthproject/berth/fleet"
)

// Errors detected by this package. Callers branch on them with errors.Is.
var (
	// ErrNotFound means the key does not exist.
	ErrNotFound = errors.New("registry: not found")
	// ErrInvalid means a value failed validation and was not written. It is
	// fleet.ErrInvalid, so the values' own Validate methods return it too.
	ErrInvalid = fleet.ErrInvalid
	// ErrConflict means a compare-and-swap lost against a concurrent write.
	ErrConflict = errors.New("registry: concurrent modification")
)

// The plain data the registry stores lives in package fleet, which needs no
// etcd; these aliases keep the registry's names for it.
type (
	// GroupState is fleet.GroupState.
	GroupState = fleet.GroupState
	// Group is fleet.Group.
	Group = fleet.Group
	// Executor is fleet.Executor.
	Executor = fleet.Executor
	// Assignment is fleet.Assignment.
	Assignment = fleet.Assignment
	// DeviceInputs is fleet.DeviceInputs.
	DeviceInputs = fleet.DeviceInputs
	// History is fleet.History.
	History = fleet.History
	// Usage is fleet.Usage.
	Usage = fleet.Usage
	// StoredPolicy is fleet.StoredPolicy.
	StoredPolicy = fleet.StoredPolicy
	// Tenant is fleet.Tenant.
	Tenant = fleet.Tenant
	// Snapshot is fleet.Snapshot.
	Snapshot = fleet.Snapshot
)

// Group states, as in package fleet.
const (
	// GroupActive groups take new devices.
	GroupActive = fleet.GroupActive
	// GroupDraining groups keep their devices but take no new ones.
	GroupDraining = fleet.GroupDraining
	// GroupDisabled groups take no devices at all.
	GroupDisabled = fleet.GroupDisabled
)

// HistoryWindow is fleet.HistoryWindow.
const HistoryWindow = fleet.HistoryWindow

// ValidID reports whether id can be used as a group, executor or device id
// (fleet.ValidID).
func ValidID(id string) bool { return fleet.ValidID(id) }

// NewSnapshot builds a snapshot from lists, for tests and tools that make
// one without a cache (fleet.NewSnapshot).
func NewSnapshot(rev int64, groups []Group, execs []Executor) *Snapshot {
	return fleet.NewSnapshot(rev, groups, execs)
}
