package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthproject/berth/internal/testutil"
)

// Bounds of the README test's steps.
const (
	readmeStepTimeout  = 60 * time.Second // one command to completion
	readmeWaitTimeout  = 90 * time.Second // a background command's line
	readmeStopTimeout  = 15 * time.Second // a background command's exit
	readmeReadyTimeout = 90 * time.Second // berth dev ready
)

// TestReadme runs the README's marked shell blocks in order, as a newcomer
// would after `make install`, against a `berth dev` the test starts on a
// free port with a fresh data directory and configuration directory:
// `berth` on PATH is the binary built from this tree, and ctl finds the
// cluster through the context file berth dev writes. Each command must
// exit as the README says and print the lines it shows; none may warn
// unless the README shows the warning. Finally, devices that Assign after
// the README's policy was applied must connect.
func TestReadme(t *testing.T) {
	if testing.Short() {
		t.Skip("starts berth dev")
	}
	blocks, err := parseReadme("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		if b.lang == "sh" && b.marker == "" {
			t.Errorf("README.md:%d: a sh block without a <!-- readme-test … --> marker (run it, or say why not)", b.line)
		}
	}
	if t.Failed() {
		return
	}

	root := t.TempDir()
	work := filepath.Join(root, "work")
	for _, d := range []string{work, filepath.Join(root, "home"), filepath.Join(root, "config")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	sh := &readmeShell{t: t, dir: work, env: readmeEnv(root)}

	// berth dev, as the README's first block starts it, on a free port.
	dev := sh.background(0, fmt.Sprintf("berth dev --listen %s --data-dir %s --log-level warn", freeLoopback(t), filepath.Join(root, "dev")))
	dev.waitFor(t, readmeReadyTimeout, "berth dev context: …")
	ctxFile := filepath.Join(root, "config", "berth", "context.json")
	if fi, err := os.Stat(ctxFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("berth dev's context file %s: %v (mode %v), want mode 0600", ctxFile, err, fi.Mode().Perm())
	}

	ran := 0
	for _, b := range blocks {
		switch b.marker {
		case "file":
			writeFile(t, filepath.Join(work, b.arg), strings.Join(b.body, "\n")+"\n")
		case "run":
			for _, s := range b.steps() {
				sh.run(s)
				ran++
			}
		case "background":
			for _, s := range b.steps() {
				p := sh.background(s.line, s.cmd)
				for _, want := range s.expect {
					p.waitFor(t, readmeWaitTimeout, want)
				}
				ran++
			}
		}
		if t.Failed() {
			return
		}
	}
	if ran < 30 {
		t.Errorf("ran %d README commands; the README has lost its runnable examples", ran)
	}

	// Assign still places new devices under the README's policy: its
	// labels are carried by groups.
	after := sh.background(0, "berth simulate --devices 5 --id-prefix after-policy- --status-every 0")
	after.waitFor(t, readmeWaitTimeout, "simulate: devices=5 connected=5 …")

	// berth dev removes its context file when it stops.
	dev.stop(t)
	if _, err := os.Stat(ctxFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("context file after berth dev stopped: %v, want it removed", err)
	}
}

// readmeEnv is the environment of the README's commands: this process's,
// without BERTH_* variables, with the built berth first on PATH and a home
// and configuration directory of their own.
func readmeEnv(root string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "BERTH_"), k == "HOME", k == "XDG_CONFIG_HOME", k == "PATH":
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"PATH="+filepath.Dir(binary)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"HOME="+filepath.Join(root, "home"),
		"XDG_CONFIG_HOME="+filepath.Join(root, "config"))
}

// freeLoopback is a free loopback address.
func freeLoopback(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// readmeShell runs the README's commands with bash in one directory,
// carrying the environment (variables set or exported) from one command
// to the next, as one shell session would.
type readmeShell struct {
	t   *testing.T
	dir string
	env []string
}

// run runs one command to completion and checks its exit code and output.
func (sh *readmeShell) run(s readmeStep) {
	t := sh.t
	t.Helper()
	envFile := filepath.Join(t.TempDir(), "env")
	script := "set -a\n" + s.cmd + "\n__rc=$?\nenv -0 > " + envFile + "\nexit $__rc\n"
	ctx, cancel := context.WithTimeout(context.Background(), readmeStepTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir, cmd.Env = sh.dir, sh.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	code := cmd.ProcessState.ExitCode()
	switch {
	case ctx.Err() != nil:
		t.Errorf("README.md:%d: %s\ndid not finish within %v; output:\n%s", s.line, s.cmd, readmeStepTimeout, out.String())
		return
	case code != s.exit:
		t.Errorf("README.md:%d: %s\nexit %d (%v), want %d; output:\n%s", s.line, s.cmd, code, err, s.exit, out.String())
		return
	}
	if m := missingLines(out.String(), s.expect); m != "" {
		t.Errorf("README.md:%d: %s\nprinted no line like %q (in the order the README shows); output:\n%s", s.line, s.cmd, m, out.String())
	}
	if strings.Contains(out.String(), "warning:") && !strings.Contains(strings.Join(s.expect, "\n"), "warning:") {
		t.Errorf("README.md:%d: %s\nwarns, and the README does not show it:\n%s", s.line, s.cmd, out.String())
	}
	t.Logf("README.md:%d: %s (exit %d, %v)", s.line, s.cmd, code, time.Since(start).Round(time.Millisecond))
	b, err := os.ReadFile(envFile)
	if err != nil {
		t.Errorf("README.md:%d: the shell's environment: %v", s.line, err)
		return
	}
	var env []string
	for _, kv := range strings.Split(string(b), "\x00") {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "_" || k == "__rc" || k == "SHLVL" || k == "PWD" || k == "OLDPWD" {
			continue
		}
		env = append(env, kv)
	}
	sh.env = env
}

// readmeProc is a command left running in the background.
type readmeProc struct {
	line int
	cmd  *exec.Cmd
	out  *testutil.SyncBuffer
	done chan struct{}
}

// background starts a command in its own process group; the test's
// cleanup interrupts it and waits, bounded, for it to exit.
func (sh *readmeShell) background(line int, command string) *readmeProc {
	t := sh.t
	t.Helper()
	cmd := exec.Command("bash", "-c", "exec "+command)
	cmd.Dir, cmd.Env = sh.dir, sh.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &readmeProc{line: line, cmd: cmd, out: &testutil.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("README.md:%d: %s: %v", line, command, err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// waitFor waits until the process printed a line like want ("…": anything).
func (p *readmeProc) waitFor(t *testing.T, timeout time.Duration, want string) {
	t.Helper()
	exited := false
	err := testutil.Poll(contextWithTimeout(t, timeout), pollEvery, func() bool {
		select {
		case <-p.done:
			exited = true
			return true
		default:
		}
		return missingLines(p.out.String(), []string{want}) == ""
	})
	if exited && missingLines(p.out.String(), []string{want}) != "" {
		t.Fatalf("README.md:%d: %s\nexited before printing a line like %q; output:\n%s", p.line, strings.Join(p.cmd.Args[2:], " "), want, tail(p.out.String()))
	}
	if err != nil {
		t.Fatalf("README.md:%d: %s\nprinted no line like %q within %v; output:\n%s", p.line, strings.Join(p.cmd.Args[2:], " "), want, timeout, tail(p.out.String()))
	}
}

// stop interrupts the process group, as Ctrl-C would, and kills it if it
// has not exited within readmeStopTimeout.
func (p *readmeProc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(readmeStopTimeout):
		t.Errorf("README.md:%d: %s did not stop within %v of an interrupt", p.line, strings.Join(p.cmd.Args[2:], " "), readmeStopTimeout)
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// contextWithTimeout is a context ending after d or with the test.
func contextWithTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// tail is the end of a long output.
func tail(s string) string {
	if len(s) > 4000 {
		return "…" + s[len(s)-4000:]
	}
	return s
}
