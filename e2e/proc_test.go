package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berthproject/berth/internal/testutil"
)

// binary is the berth binary built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "berth-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "berth")
	build := exec.Command("go", "build", "-o", binary, "../cmd/berth")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building berth:", err)
		return 1
	}
	return m.Run()
}

// proc is a berth process under test. Its stdout lines are kept so that the
// test can wait for one; stderr goes to a log file shown on failure.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	// logPath is the file its stderr goes to.
	logPath string

	mu    sync.Mutex
	lines []string
	cond  *sync.Cond
}

// start runs `berth args...`; Cleanup kills it if it still runs.
func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logFile
	p := &proc{t: t, name: name, cmd: cmd, done: make(chan struct{}), logPath: logPath}
	p.cond = sync.NewCond(&p.mu)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.cond.Broadcast()
			p.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stdout)
		p.err = cmd.Wait()
		logFile.Close()
		p.mu.Lock()
		close(p.done)
		p.cond.Broadcast()
		p.mu.Unlock()
	}()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("--- %s stderr (tail) ---\n%s", name, b)
		}
	})
	return p
}

// stderr returns what the process wrote to stderr so far.
func (p *proc) stderr() string {
	p.t.Helper()
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		p.t.Fatalf("%s: reading its stderr: %v", p.name, err)
	}
	return string(b)
}

// state returns the process's state letter from /proc (R, S, T for
// stopped, …), "" when it cannot be read.
func (p *proc) state() string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return ""
	}
	// pid (comm) state …: comm may hold spaces, so after the last ')'.
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return string(b[i+2])
	}
	return ""
}

// pause stops the process (SIGSTOP) and waits until the kernel has
// stopped it: a signal is delivered asynchronously, and on a busy machine
// the process may run a little after kill returns.
func (p *proc) pause() {
	p.t.Helper()
	p.signal(syscall.SIGSTOP)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := testutil.Poll(ctx, time.Millisecond, func() bool { return p.state() == "T" }); err != nil {
		p.t.Fatalf("%s not stopped 10 s after SIGSTOP (state %q)", p.name, p.state())
	}
}

func (p *proc) signal(sig syscall.Signal) {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(sig)
	}
}

// wait waits for the process to exit, bounded, and returns its error.
func (p *proc) wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %v", p.name, timeout)
		return nil
	}
}

// waitLine waits until a stdout line (a new one, or any seen so far when
// fromStart) satisfies match, and returns it. It fails the test after
// timeout, showing the last line seen.
func (p *proc) waitLine(timeout time.Duration, what string, match func(string) bool) string {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer timer.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	next := 0
	for {
		for ; next < len(p.lines); next++ {
			if match(p.lines[next]) {
				return p.lines[next]
			}
		}
		select {
		case <-p.done:
			p.t.Fatalf("%s exited (%v) while waiting for %s", p.name, p.err, what)
		default:
		}
		if time.Now().After(deadline) {
			last := "(none)"
			if len(p.lines) > 0 {
				last = p.lines[len(p.lines)-1]
			}
			p.t.Fatalf("%s: no %s within %v; last line: %s", p.name, what, timeout, last)
		}
		p.cond.Wait()
	}
}

// waitNext is waitLine for lines printed from now on only.
func (p *proc) waitNext(timeout time.Duration, what string, match func(string) bool) string {
	p.t.Helper()
	p.mu.Lock()
	from := len(p.lines)
	p.mu.Unlock()
	seen := 0
	return p.waitLine(timeout, what, func(l string) bool {
		seen++
		return seen > from && match(l)
	})
}

// linesFrom returns the stdout lines from index from on, and the index
// of the line after them; exited reports whether the process has exited
// (its last lines are then all in).
func (p *proc) linesFrom(from int) (lines []string, next int, exited bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		exited = true
	default:
	}
	if from < len(p.lines) {
		lines = slices.Clone(p.lines[from:])
	}
	return lines, len(p.lines), exited
}

// peakRSS returns the process's peak resident set size (VmHWM in
// /proc/<pid>/status) in KiB; ok is false when it cannot be read (the
// process has exited, or no /proc).
func (p *proc) peakRSS() (kib int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, found := strings.CutPrefix(line, "VmHWM:"); found {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n, err == nil
		}
	}
	return 0, false
}

var listenRE = regexp.MustCompile(`listening on (\S+)`)

// addr waits for the process's "listening on ADDR" line.
func (p *proc) addr() string {
	p.t.Helper()
	line := p.waitLine(30*time.Second, "listening line", listenRE.MatchString)
	return listenRE.FindStringSubmatch(line)[1]
}

// startEtcd runs a real etcd server (embedded in the test process, as the
// binaries only ever reach it over the network).
// It then makes the first admin API key the break-glass way, `berth ctl
// registry apikey create`, and puts it in BERTH_API_KEY for the test, so
// that every ctl process and messagingClient presents it.
func startEtcd(t *testing.T) string {
	t.Helper()
	ep := testutil.StartEtcd(t).Endpoint()
	bootstrapAdminKey(t, ep)
	return ep
}

// bootstrapAdminKey makes an admin API key in the etcd at ep the
// break-glass way and puts it in BERTH_API_KEY for the test.
func bootstrapAdminKey(t *testing.T, ep string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "ctl", "registry", "apikey", "create", "--etcd", ep, "--name", "e2e admin", "--role", "admin", "-o", "json").Output()
	if err != nil {
		t.Fatalf("berth ctl registry apikey create: %v", err)
	}
	var created struct{ Secret string }
	if err := json.Unmarshal(out, &created); err != nil || created.Secret == "" {
		t.Fatalf("berth ctl registry apikey create printed %q: %v", out, err)
	}
	t.Setenv("BERTH_API_KEY", created.Secret)
}

// ctl runs `berth ctl args...` against the control plane at cp (replicas
// to try in order, comma separated) to completion and returns its stdout.
func ctl(t *testing.T, cp string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"ctl", "--controlplane", cp}, args...)
	out, err := exec.CommandContext(ctx, binary, full...).CombinedOutput()
	if err != nil {
		t.Fatalf("berth %s: %v\n%s", strings.Join(full, " "), err, out)
	}
	return string(out)
}

// waitRegistered waits until every executor in ids is registered as the
// control plane at cp sees it, so that devices started next find them
// (other replicas' watch-fed caches follow within milliseconds); an
// executor prints its address before it registers.
func waitRegistered(t *testing.T, cp string, ids ...string) {
	t.Helper()
	testutil.WaitForEvery(t, 30*time.Second, pollEvery, "executors registered: "+strings.Join(ids, ","), func() bool {
		var es []struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal([]byte(ctl(t, cp, "executors", "-o", "json")), &es); err != nil {
			t.Fatalf("ctl executors -o json: %v", err)
		}
		seen := map[string]bool{}
		for _, e := range es {
			seen[e.ID] = true
		}
		for _, id := range ids {
			if !seen[id] {
				return false
			}
		}
		return true
	})
}
