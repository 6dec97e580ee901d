package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version and commit name this build; `make build` and `make install` set
// them with -ldflags "-X main.version=… -X main.commit=…". Left empty, they
// come from the module and VCS information Go stamps into the binary.
var (
	version string
	commit  string
)

// buildInfo is what `berth version` prints.
type buildInfo struct {
	Version, Commit, GoVersion, Platform string
	Modified                             bool
}

// readBuildInfo collects the version of this binary: -ldflags first, then
// runtime/debug.ReadBuildInfo.
func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, Commit: commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if b.Version == "" {
			b.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.Commit == "" {
					b.Commit = s.Value
				}
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if b.Version == "" || b.Version == "(devel)" {
		b.Version = "devel"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	return b
}

// String is the line `berth version` prints.
func (b buildInfo) String() string {
	s := fmt.Sprintf("berth %s commit %s", b.Version, b.Commit)
	if b.Modified {
		s += " (modified)"
	}
	return s + " " + b.GoVersion + " " + b.Platform
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print berth's version, the commit it was built from and the Go version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintln(g.stdout, readBuildInfo())
			return nil
		},
	}
}
