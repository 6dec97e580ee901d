package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"
)

// Bounds of the conversation with a child.
const (
	childReadyTimeout = 60 * time.Second
	childStatsTimeout = 60 * time.Second
	childStopTimeout  = 15 * time.Second
)

// child is a running Serve process.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan []byte   // the child's stdout, line by line; closed at EOF
	done  chan struct{} // closed once the process was waited for
	err   error         // Wait's error, set before done is closed
	addr  string
}

// startChild starts command+cfg.Args() and waits for its ready line. ctx
// ending kills the child.
func startChild(ctx context.Context, command, env []string, stderr io.Writer, cfg ServeConfig) (*child, error) {
	if len(command) == 0 {
		return nil, errors.New("bench: no child command")
	}
	args := append(append([]string{}, command[1:]...), cfg.Args()...)
	cmd := exec.CommandContext(ctx, command[0], args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = stderr
	cmd.WaitDelay = childStopTimeout
	dieWithParent(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("bench: start %s: %w", command[0], err)
	}
	pw.Close()
	c := &child{cmd: cmd, stdin: stdin, lines: make(chan []byte, 1), done: make(chan struct{})}
	go func() {
		defer close(c.lines)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			c.lines <- append([]byte(nil), sc.Bytes()...)
		}
	}()
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	var ready readyLine
	if err := c.read(ctx, childReadyTimeout, &ready); err != nil {
		c.kill()
		return nil, fmt.Errorf("bench: %s child did not start: %w", cfg.Mode, err)
	}
	c.addr = ready.Addr
	return c, nil
}

// read decodes the child's next output line into v.
func (c *child) read(ctx context.Context, timeout time.Duration, v any) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-c.lines:
		if !ok {
			<-c.done
			return fmt.Errorf("child exited: %v", c.err)
		}
		if err := json.Unmarshal(line, v); err != nil {
			return fmt.Errorf("child said %q: %w", line, err)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("no answer within %v", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stats asks the child for its ServerStats.
func (c *child) stats(ctx context.Context) (ServerStats, error) {
	var st ServerStats
	if _, err := io.WriteString(c.stdin, cmdStats+"\n"); err != nil {
		return st, fmt.Errorf("bench: asking child for stats: %w", err)
	}
	if err := c.read(ctx, childStatsTimeout, &st); err != nil {
		return st, fmt.Errorf("bench: child stats: %w", err)
	}
	return st, nil
}

// stop asks the child to quit and waits for it; after childStopTimeout it
// kills it. It returns the child's exit error, if any.
func (c *child) stop() error {
	_, _ = io.WriteString(c.stdin, cmdQuit+"\n")
	c.stdin.Close()
	t := time.NewTimer(childStopTimeout)
	defer t.Stop()
	select {
	case <-c.done:
		for range c.lines {
		}
		if c.err != nil {
			return fmt.Errorf("bench: child %s: %w", c.addr, c.err)
		}
		return nil
	case <-t.C:
		c.kill()
		return fmt.Errorf("bench: child %s did not stop within %v; killed", c.addr, childStopTimeout)
	}
}

// kill kills the child and waits for it.
func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	c.stdin.Close()
	<-c.done
	for range c.lines {
	}
}
