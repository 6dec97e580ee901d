package bench

import (
	"fmt"
	"sync"
	"time"
)

// CPU is the processor time used during a measured period, by the load
// generator (this process) and by the servers under test (their
// processes), as the kernel accounts it (user and system time, all
// threads). Both are zero when not measured.
type CPU struct {
	// Generator is this process's time. When the servers run in this
	// process (InProcess), it is everything's.
	Generator time.Duration
	// Servers is the server processes' time, summed.
	Servers time.Duration
	// InProcess is set when the servers ran in this process: Generator
	// then includes them and Servers is zero.
	InProcess bool
	// Known is set when the figures were read.
	Known bool
}

// add accumulates o into c.
func (c *CPU) add(o CPU) {
	if !o.Known {
		return
	}
	c.Generator += o.Generator
	c.Servers += o.Servers
	c.InProcess = c.InProcess || o.InProcess
	c.Known = true
}

// PerOp is d spread over ops, in microseconds (0 without ops).
func PerOp(d time.Duration, ops uint64) float64 {
	if ops == 0 {
		return 0
	}
	return float64(d) / float64(time.Microsecond) / float64(ops)
}

// Busy is d as a share of the CPU time cpus processors offer in elapsed.
func Busy(d, elapsed time.Duration, cpus int) float64 {
	if elapsed <= 0 || cpus <= 0 {
		return 0
	}
	return float64(d) / (float64(elapsed) * float64(cpus))
}

// cpuProbe reads the processor time used so far by this process and by
// the server processes pids (none: the servers run in this process).
type cpuProbe struct {
	pids []int
}

// read returns the times used so far; ok is false when they cannot be read
// (not Linux, or a server process gone).
func (p *cpuProbe) read() (gen, srv time.Duration, ok bool) {
	gen, err := processCPU(0)
	if err != nil {
		return 0, 0, false
	}
	for _, pid := range p.pids {
		d, err := processCPU(pid)
		if err != nil {
			return 0, 0, false
		}
		srv += d
	}
	return gen, srv, true
}

// window samples p at from and at to on a goroutine of its own; the
// returned function waits for the second sample (or returns at once when
// stop is closed first) and gives the difference.
func (p *cpuProbe) window(from, to time.Time, stop <-chan struct{}) func() CPU {
	if p == nil {
		return func() CPU { return CPU{} }
	}
	var (
		wg  sync.WaitGroup
		out CPU
	)
	wg.Go(func() {
		wait := func(at time.Time) bool {
			t := time.NewTimer(time.Until(at))
			defer t.Stop()
			select {
			case <-t.C:
				return true
			case <-stop:
				return false
			}
		}
		if !wait(from) {
			return
		}
		g0, s0, ok := p.read()
		if !ok || !wait(to) {
			return
		}
		g1, s1, ok := p.read()
		if !ok {
			return
		}
		out = CPU{Generator: g1 - g0, Servers: s1 - s0, InProcess: len(p.pids) == 0, Known: true}
	})
	return func() CPU {
		wg.Wait()
		return out
	}
}

// cpuLine describes c over ops calls in elapsed on cpus processors, for a
// report ("" when not measured).
func cpuLine(c CPU, ops uint64, elapsed time.Duration, cpus int) string {
	if !c.Known {
		return ""
	}
	if c.InProcess {
		return fmt.Sprintf("all in one process: %.1f µs of CPU per call, %.0f%% of %d CPUs busy",
			PerOp(c.Generator, ops), 100*Busy(c.Generator, elapsed, cpus), cpus)
	}
	return fmt.Sprintf("load generator %.1f µs of CPU per call (%.0f%% of %d CPUs), server %.1f µs per call (%.0f%%)",
		PerOp(c.Generator, ops), 100*Busy(c.Generator, elapsed, cpus), cpus,
		PerOp(c.Servers, ops), 100*Busy(c.Servers, elapsed, cpus))
}
