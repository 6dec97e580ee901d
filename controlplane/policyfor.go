package controlplane

import (
	"github.com/berthproject/berth/policy"
	"github.com/berthproject/berth/registry"
)

// PolicyFor returns the compiled placement policy in force for snap, the
// one Assign decides with: compiled once per version, the last good one
// kept while a stored document does not compile.
func (s *Server) PolicyFor(snap *registry.Snapshot) *policy.Compiled { return s.policyFor(snap) }
