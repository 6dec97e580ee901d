package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Roles of the child processes of bench push that are not berth's own
// servers (those run as `berth controlplane` and `berth executor`).
const (
	// RoleBare serves the baseline: a plain grpc-go server pushing to its
	// clients' streams (barePush).
	RoleBare = "bare"
	// RoleDevices runs the devices (pushFleet).
	RoleDevices = "devices"
)

// PushChildConfig is what a bench push child is told on its command line.
type PushChildConfig struct {
	// Role is RoleBare or RoleDevices.
	Role string
	// Listen is the bare server's address.
	Listen string
	// Devices is the number of devices (devices role).
	Devices int
	// ControlPlane is where devices call Assign; without it they connect
	// to Targets (devices role).
	ControlPlane string
	// Targets are the servers devices connect to without Assign, comma
	// separated (devices role).
	Targets string
	// InFlight bounds the devices connecting at once.
	InFlight int
}

// Args returns the flags that ParsePushChildArgs turns back into c.
func (c PushChildConfig) Args() []string {
	return []string{
		"--role=" + c.Role, "--listen=" + c.Listen, fmt.Sprintf("--devices=%d", c.Devices),
		"--controlplane=" + c.ControlPlane, "--targets=" + c.Targets, fmt.Sprintf("--in-flight=%d", c.InFlight),
	}
}

// ParsePushChildArgs parses the flags of a bench push child.
func ParsePushChildArgs(args []string) (PushChildConfig, error) {
	var c PushChildConfig
	fs := flag.NewFlagSet("push child", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.Role, "role", "", "bare or devices")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:0", "address of the bare server")
	fs.IntVar(&c.Devices, "devices", 0, "devices")
	fs.StringVar(&c.ControlPlane, "controlplane", "", "control plane the devices call Assign on")
	fs.StringVar(&c.Targets, "targets", "", "servers the devices connect to without Assign")
	fs.IntVar(&c.InFlight, "in-flight", 256, "devices connecting at once")
	if err := fs.Parse(args); err != nil {
		return c, fmt.Errorf("bench push child: %w", err)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("bench push child: unexpected arguments %q", fs.Args())
	}
	switch {
	case c.Role == RoleBare:
		if err := checkLoopback(c.Listen); err != nil {
			return c, fmt.Errorf("bench push child: %w", err)
		}
	case c.Role != RoleDevices:
		return c, fmt.Errorf("bench push child: --role %q: want %s or %s", c.Role, RoleBare, RoleDevices)
	case c.Devices <= 0 || c.InFlight <= 0:
		return c, errors.New("bench push child: --devices and --in-flight must be positive")
	case c.ControlPlane == "" && c.Targets == "":
		return c, errors.New("bench push child: devices need --controlplane or --targets")
	}
	return c, nil
}

// childStats is what a bench push child answers to "stats".
type childStats struct {
	// Streams is the number of device streams open.
	Streams int64 `json:"streams"`
	// Acks counts the messages acknowledged (devices role).
	Acks int64 `json:"acks"`
	// Ended counts the streams the other side ended (devices role).
	Ended int64 `json:"ended"`
}

// pushReady is the first line a bench push child prints.
type pushReady struct {
	Addr string `json:"addr,omitempty"`
}

// RunPushChild is the body of a bench push child: it serves its role,
// prints one JSON line once ready ({"addr": …} for the bare server), then
// answers each "stats" line of in with a JSON line of counts, until in says
// "quit" or ends, or ctx ends.
func RunPushChild(ctx context.Context, cfg PushChildConfig, in io.Reader, out io.Writer, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, err := RaiseFileLimit(); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	var stats func() childStats
	var lean func(ctx context.Context, line string) (any, error)
	var ready pushReady
	switch cfg.Role {
	case RoleBare:
		lis, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return fmt.Errorf("bench push child: %w", err)
		}
		// A plain grpc-go server: no interceptors, default limits; it
		// tolerates the control-plane-style client keepalive.
		gs := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}))
		b := newBarePush()
		b.register(gs)
		done := make(chan error, 1)
		go func() { done <- gs.Serve(lis) }()
		defer func() {
			gs.Stop()
			<-done
		}()
		ready.Addr = lis.Addr().String()
		stats = func() childStats { return childStats{Streams: int64(b.count())} }
		lean = b.runLean
	case RoleDevices:
		fl, err := openPushFleet(ctx, cfg)
		if err != nil {
			return err
		}
		defer fl.close()
		log.Info("devices connected", "devices", cfg.Devices)
		stats = func() childStats {
			return childStats{Streams: fl.open.Load(), Acks: fl.acks.Load(), Ended: fl.ended.Load()}
		}
	default:
		return fmt.Errorf("bench push child: role %q", cfg.Role)
	}
	enc := json.NewEncoder(out)
	if err := enc.Encode(ready); err != nil {
		return fmt.Errorf("bench push child: %w", err)
	}
	lines := make(chan string)
	go func() {
		// Abandoned when ctx ends: the process is about to exit.
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			select {
			case lines <- strings.TrimSpace(sc.Text()):
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case line, ok := <-lines:
			switch {
			case !ok || line == cmdQuit:
				return nil
			case line == cmdStats:
				if err := enc.Encode(stats()); err != nil {
					return fmt.Errorf("bench push child: %w", err)
				}
			case lean != nil && strings.HasPrefix(line, cmdLean+" "):
				res, err := lean(ctx, line)
				if err != nil {
					return err
				}
				if err := enc.Encode(res); err != nil {
					return fmt.Errorf("bench push child: %w", err)
				}
			}
		}
	}
}

// pushProc is a child process of bench push: a berth server or a push
// child. Its stdout is read line by line.
type pushProc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string   // stdout; closed at EOF
	done  chan struct{} // closed once the process was waited for
	err   error
	once  sync.Once
}

// startPushProc runs command+args with env added.
func startPushProc(ctx context.Context, name string, command, args, env []string, stderr io.Writer) (*pushProc, error) {
	if len(command) == 0 {
		return nil, errors.New("bench: no command to start children with")
	}
	cmd := exec.CommandContext(ctx, command[0], append(append([]string{}, command[1:]...), args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = stderr
	cmd.WaitDelay = childStopTimeout
	dieWithParent(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", name, err)
	}
	p := &pushProc{name: name, cmd: cmd, stdin: stdin, lines: make(chan string, 16), done: make(chan struct{})}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	return p, nil
}

// next returns the next stdout line, within timeout.
func (p *pushProc) next(ctx context.Context, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-p.lines:
		if !ok {
			return "", fmt.Errorf("%s exited: %v", p.name, p.wait())
		}
		return line, nil
	case <-t.C:
		return "", fmt.Errorf("%s: no answer within %v", p.name, timeout)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// waitLine returns the first submatch of re in the next line that matches.
func (p *pushProc) waitLine(ctx context.Context, timeout time.Duration, re *regexp.Regexp) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		line, err := p.next(ctx, time.Until(deadline))
		if err != nil {
			return "", err
		}
		if m := re.FindStringSubmatch(line); m != nil {
			return m[1], nil
		}
	}
}

// readJSON decodes the next stdout line into v.
func (p *pushProc) readJSON(ctx context.Context, timeout time.Duration, v any) error {
	line, err := p.next(ctx, timeout)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(line), v); err != nil {
		return fmt.Errorf("%s said %q: %w", p.name, line, err)
	}
	return nil
}

// stats asks a push child for its counts.
func (p *pushProc) stats(ctx context.Context) (childStats, error) {
	var st childStats
	if _, err := io.WriteString(p.stdin, cmdStats+"\n"); err != nil {
		return st, fmt.Errorf("bench: asking %s for stats: %w", p.name, err)
	}
	return st, p.readJSON(ctx, childStatsTimeout, &st)
}

// wait waits for the process to exit and returns its error.
func (p *pushProc) wait() error {
	p.once.Do(func() { p.err = p.cmd.Wait() })
	return p.err
}

// stop asks the process to end (quit on its input, then SIGTERM) and waits
// for it; after childStopTimeout it is killed.
func (p *pushProc) stop() error {
	_, _ = io.WriteString(p.stdin, cmdQuit+"\n")
	p.stdin.Close()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.wait() }()
	t := time.NewTimer(childStopTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		for range p.lines {
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ProcessState.Sys().(syscall.WaitStatus).Signaled() {
			return nil // ended by our SIGTERM
		}
		if err != nil {
			return fmt.Errorf("bench: %s: %w", p.name, err)
		}
		return nil
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-done
		for range p.lines {
		}
		return fmt.Errorf("bench: %s did not stop within %v; killed", p.name, childStopTimeout)
	}
}
