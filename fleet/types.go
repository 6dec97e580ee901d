package fleet

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// ErrInvalid means a value failed validation. Values are validated before
// they are written to the registry, which returns the same error for its
// own checks: the text keeps the registry's wording that operators and
// services have always been shown.
var ErrInvalid = errors.New("registry: invalid value")

// GroupState is the administrative state of a processing group.
type GroupState string

// Group states.
const (
	// GroupActive groups take new devices.
	GroupActive GroupState = "active"
	// GroupDraining groups keep their devices but take no new ones.
	GroupDraining GroupState = "draining"
	// GroupDisabled groups take no devices at all.
	GroupDisabled GroupState = "disabled"
)

// Valid reports whether s is a known state.
func (s GroupState) Valid() bool {
	switch s {
	case GroupActive, GroupDraining, GroupDisabled:
		return true
	}
	return false
}

// Group is a processing group: a set of executors that serve devices with
// the same labels.
type Group struct {
	// ID names the group.
	ID string `json:"id"`
	// Labels the group carries; the placement policy assigns each device a
	// label and only groups with that label are candidates.
	Labels []string `json:"labels"`
	// Capacity is the number of devices the group is sized for.
	Capacity int `json:"capacity"`
	// State is the administrative state.
	State GroupState `json:"state"`
}

// HasLabel reports whether g carries label.
func (g Group) HasLabel(label string) bool {
	for _, l := range g.Labels {
		if l == label {
			return true
		}
	}
	return false
}

// Executor is one stream server of a group, as it reports itself.
type Executor struct {
	// ID names the executor; unique in the cluster.
	ID string `json:"id"`
	// GroupID is the group the executor serves.
	GroupID string `json:"group"`
	// Address is host:port of its gRPC server: devices connect to it, and
	// control planes too unless InternalAddress is set.
	Address string `json:"address"`
	// InternalAddress, when set, is host:port of its internal listener,
	// which serves control planes only (ExecutorInternalService): control
	// planes dial it instead of Address, so that devices and control planes
	// reach the executor over separate networks. Empty (records of
	// executors without --internal-listen, and older ones): Address serves
	// both.
	InternalAddress string `json:"internal_address,omitempty"`
	// TLSName, when set, is the name its TLS server certificate is
	// verified by; devices get it in Assign's endpoints. Empty: plaintext.
	TLSName string `json:"tls_name,omitempty"`
	// Capacity is the most streams it admits.
	Capacity int `json:"capacity"`
	// Connections is its live stream count.
	Connections int `json:"connections"`
	// Load is its traffic load, in the unit the executor reports (messages
	// per second over the last interval).
	Load float64 `json:"load"`
	// Draining is set while it redirects its devices away before stopping,
	// and while an operator's drain mark names it (DrainMarked).
	Draining bool `json:"draining"`
	// DrainMarked is set while an operator's drain mark names the executor
	// (`berth ctl executor drain`): it keeps its devices, Assign no longer
	// names it, and the rebalancer moves its devices away at its rate.
	DrainMarked bool `json:"drain_marked,omitempty"`
	// Admitted holds, per control plane replica, the sequence numbers of
	// that replica's reservations on this executor whose devices this
	// executor admitted recently (in the last minute at least); it is
	// written in the same record as Connections, so a reservation in it is
	// in Connections (or its device came and left). A record without it
	// (nil) is from an executor that does not report reservations: replicas
	// then fall back to a time rule. The map and its sets are shared by
	// copies of the record and never modified after it was decoded or
	// handed to the registry.
	Admitted map[string]SeqSet `json:"admitted"`
	// UpdatedAt is when the executor wrote this record (its own clock).
	UpdatedAt time.Time `json:"updated_at"`
	// ObservedAt is when this process saw the record (its own clock). It is
	// set by the registry's cache and never stored.
	ObservedAt time.Time `json:"-"`
	// Revision is the etcd revision of the record; MovedAway counts the
	// devices this executor's record counts that have since been seen on
	// another executor (a newer session of the device replaced the one
	// here, after the record was written). The registry's cache sets both,
	// never stored, and lowers Connections and Load by MovedAway, so that
	// the devices of an executor that died, or is slow to write its record,
	// are counted once, where they are now, without waiting for its lease
	// to expire.
	Revision  int64 `json:"-"`
	MovedAway int   `json:"-"`
	// MovedLoad is the load Load was lowered by with MovedAway.
	MovedLoad float64 `json:"-"`
}

// Assignment records which group a device was assigned to.
type Assignment struct {
	// DeviceID is the device.
	DeviceID string `json:"device"`
	// GroupID is the group it was assigned to.
	GroupID string `json:"group"`
	// Label is the label the placement picked.
	Label string `json:"label"`
	// AssignedAt is when the assignment was made.
	AssignedAt time.Time `json:"assigned_at"`
	// Rule names the policy rule that gave the label ("" for the default).
	Rule string `json:"rule,omitempty"`
	// Reason says why the group was chosen.
	Reason string `json:"reason,omitempty"`
	// PolicyVersion is the version of the policy that decided.
	PolicyVersion int64 `json:"policy_version,omitempty"`
	// Writer names the control plane replica that wrote the record; other
	// replicas count the device as pending until executor counts include
	// it.
	Writer string `json:"writer,omitempty"`
	// Reservation is the writer's reservation ticket for the device
	// ("<replica>/<executor>/<sequence>", see ParseTicket): other replicas
	// count the device as pending on that executor until its record's
	// Admitted entry for the writer reaches the sequence number. Empty:
	// pending on the group for a time instead.
	Reservation string `json:"reservation,omitempty"`
	// Inputs are what the device declared when the record was written, so
	// that dry runs and explanations can decide again without the device.
	Inputs *DeviceInputs `json:"inputs,omitempty"`
	// MovedAt is when the rebalancer last moved the device (zero: never,
	// or an Assign rewrote the record since).
	MovedAt time.Time `json:"moved_at,omitzero"`
	// Thumbprint and Enrollment are the identity the device proved at its
	// last Assign (the x5t#S256 of its client certificate, the enrollment
	// that vouched for it; both empty under open enrollment): the tokens the
	// rebalancer mints to move it are bound to them as Assign's are.
	Thumbprint string `json:"x5t,omitempty"`
	Enrollment string `json:"enrollment,omitempty"`
}

// DeviceInputs are what a device declares in Assign.
type DeviceInputs struct {
	// Model, Firmware and Attributes are its spec.
	Model      string            `json:"model,omitempty"`
	Firmware   string            `json:"firmware,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
	// Tenant and User it belongs to.
	Tenant string `json:"tenant,omitempty"`
	User   string `json:"user,omitempty"`
	// Services it asks for.
	Services []string `json:"services,omitempty"`
	// Weight is its load weight (1 for an average device).
	Weight float64 `json:"weight,omitempty"`
}

// MaxIDLen is the longest id of a group, executor or device, in bytes.
const MaxIDLen = 128

// idByte says which bytes an id may hold: [A-Za-z0-9._:@-]. Ids become
// etcd key segments, so no slashes or control characters.
var idByte = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("._:@-", byte(c)) >= 0
	}
	return t
}()

// ValidID reports whether id can be used as a group, executor or device id:
// 1-128 of [A-Za-z0-9._:@-], and neither "." nor "..", which read as path
// steps wherever an id becomes part of a path or key. (It runs on every
// Assign, twice with a certificate: a table, not a regular expression.)
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen || id == "." || id == ".." {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !idByte[id[i]] {
			return false
		}
	}
	return true
}

// Validate checks g before it is written.
func (g Group) Validate() error {
	if !ValidID(g.ID) {
		return fmt.Errorf("%w: group id %q: want 1-128 of [A-Za-z0-9._:@-]", ErrInvalid, g.ID)
	}
	if g.Capacity <= 0 {
		return fmt.Errorf("%w: group %s: capacity %d must be positive", ErrInvalid, g.ID, g.Capacity)
	}
	if !g.State.Valid() {
		return fmt.Errorf("%w: group %s: state %q: want active, draining or disabled", ErrInvalid, g.ID, g.State)
	}
	for _, l := range g.Labels {
		if !ValidID(l) {
			return fmt.Errorf("%w: group %s: label %q: want 1-128 of [A-Za-z0-9._:@-]", ErrInvalid, g.ID, l)
		}
	}
	return nil
}

// Validate checks e before it is written.
func (e Executor) Validate() error {
	switch {
	case !ValidID(e.ID):
		return fmt.Errorf("%w: executor id %q", ErrInvalid, e.ID)
	case !ValidID(e.GroupID):
		return fmt.Errorf("%w: executor %s: group id %q", ErrInvalid, e.ID, e.GroupID)
	case e.Address == "":
		return fmt.Errorf("%w: executor %s: empty address", ErrInvalid, e.ID)
	case e.InternalAddress != "" && !validHostPort(e.InternalAddress):
		return fmt.Errorf("%w: executor %s: internal address %q: want host:port", ErrInvalid, e.ID, e.InternalAddress)
	case e.Capacity <= 0:
		return fmt.Errorf("%w: executor %s: capacity %d must be positive", ErrInvalid, e.ID, e.Capacity)
	case !validTLSName(e.TLSName):
		return fmt.Errorf("%w: executor %s: TLS name %q: want at most 253 of [A-Za-z0-9.:-]", ErrInvalid, e.ID, e.TLSName)
	case len(e.Admitted) > MaxAdmittedReplicas:
		return fmt.Errorf("%w: executor %s: reservations of %d replicas; at most %d", ErrInvalid, e.ID, len(e.Admitted), MaxAdmittedReplicas)
	}
	for r, set := range e.Admitted {
		if !ValidID(r) {
			return fmt.Errorf("%w: executor %s: reservations of replica %q", ErrInvalid, e.ID, r)
		}
		if err := set.Validate(); err != nil {
			return fmt.Errorf("%w: executor %s: reservations of replica %s: %v", ErrInvalid, e.ID, r, err)
		}
	}
	return nil
}

// ControlAddress is the address control planes dial to reach the
// executor: InternalAddress when it has one, else Address.
func (e Executor) ControlAddress() string {
	if e.InternalAddress != "" {
		return e.InternalAddress
	}
	return e.Address
}

// validHostPort reports whether s is host:port with both parts set.
func validHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	return err == nil && host != "" && port != ""
}

// validTLSName reports whether s may name a TLS server (a DNS name or an
// IP address); empty is allowed (no TLS).
func validTLSName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// Validate checks a before it is written.
func (a Assignment) Validate() error {
	switch {
	case !ValidID(a.DeviceID):
		return fmt.Errorf("%w: device id %q", ErrInvalid, a.DeviceID)
	case !ValidID(a.GroupID):
		return fmt.Errorf("%w: assignment of %s: group id %q", ErrInvalid, a.DeviceID, a.GroupID)
	}
	if a.Reservation != "" {
		if _, err := ParseTicket(a.Reservation); err != nil {
			return fmt.Errorf("%w: assignment of %s: reservation %q: %v", ErrInvalid, a.DeviceID, a.Reservation, err)
		}
	}
	return nil
}
