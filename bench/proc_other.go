//go:build !linux

package bench

import (
	"errors"
	"os/exec"
	"time"
)

// readRSS is only implemented on Linux.
func readRSS() (int64, error) { return 0, errors.ErrUnsupported }

// RaiseFileLimit is only implemented on Linux; elsewhere it reports no
// limit it knows of.
func RaiseFileLimit() (uint64, error) { return 0, errors.ErrUnsupported }

// dieWithParent is only implemented on Linux.
func dieWithParent(*exec.Cmd) {}

// processCPU is only implemented on Linux.
func processCPU(int) (time.Duration, error) { return 0, errors.ErrUnsupported }
