package main

import (
	"context"
	"errors"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berthproject/berth/registry"
)

// Exit codes of the berth command, documented in the README and in
// `berth --help`.
const (
	exitOK          = 0
	exitError       = 1 // any other error
	exitUsage       = 2 // bad flags, arguments or environment values
	exitNotFound    = 3 // NOT_FOUND: no such device, group, executor…
	exitRefused     = 4 // PERMISSION_DENIED or UNAUTHENTICATED
	exitUnavailable = 5 // UNAVAILABLE: no control plane there, not ready, etcd down
)

// exitCodesHelp is the paragraph of `berth --help` on exit codes.
const exitCodesHelp = "Exit codes: 0 success; 1 any other error; 2 usage (bad flags, arguments or BERTH_* values);\n" +
	"3 not found; 4 refused (permission denied, unauthenticated); 5 unavailable (no control plane\n" +
	"answers, not serving, etcd unreachable)."

// usageError marks an error in how berth was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// codedError is an error with a gRPC code, so that exitCode sees the code
// of a status whose message was reworded for people.
type codedError struct {
	msg  string
	code codes.Code
}

func (e *codedError) Error() string { return e.msg }

// GRPCStatus makes status.Code see the code.
func (e *codedError) GRPCStatus() *status.Status { return status.New(e.code, e.msg) }

// exitCode is the process exit code for err.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	switch status.Code(err) {
	case codes.NotFound:
		return exitNotFound
	case codes.PermissionDenied, codes.Unauthenticated:
		return exitRefused
	case codes.Unavailable:
		return exitUnavailable
	}
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return exitNotFound
	case errors.Is(err, context.DeadlineExceeded):
		// The only deadlines ctl and the break-glass commands meet are
		// a server or etcd that does not answer in time.
		return exitUnavailable
	}
	return exitError
}

// markUsageErrors makes the errors cobra finds before a command runs
// (unknown commands and flags, wrong argument counts, missing required
// flags) usage errors, by noting in every command whether its RunE began.
func markUsageErrors(root *cobra.Command, running *bool) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if run := c.RunE; run != nil {
			c.RunE = func(cmd *cobra.Command, args []string) error {
				*running = true
				return run(cmd, args)
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
