// Command berth is the one binary of berth: `berth dev` runs a whole cluster
// on an embedded etcd; `berth controlplane` and `berth executor` are the
// production servers; `berth ctl` is for operators; `berth simulate` runs a
// fleet of devices; `berth bench` measures.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "berth:", err)
		os.Exit(exitCode(err))
	}
}

// run is main without the process: it parses args and runs the command.
// An error found before the command ran (flags, arguments) is a
// usageError.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root, g := newRoot(stdout, stderr)
	var running bool
	markUsageErrors(root, &running)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err != nil && !running {
		var ue usageError
		if !errors.As(err, &ue) {
			err = usageError{err}
		}
	}
	if stopErr := g.stopProfile(); err == nil {
		err = stopErr
	}
	return err
}
