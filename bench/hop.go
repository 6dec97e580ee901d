package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"text/tabwriter"
	"time"
)

// HopConfig is bench hop: the latency floor of one loopback round trip
// between two processes on this machine, idle and while other processes
// keep the cores busy. It is what every process boundary of a push or an
// Assign costs at best, so that a latency target can be read against it.
type HopConfig struct {
	// Command starts a hop child (the berth binary and "bench hop child").
	Command []string
	// Rate is the round trips per second, on a fixed schedule.
	Rate int
	// Duration is the measured time of each case.
	Duration time.Duration
	// Loads are the CPU shares (0 to 1) a burner process takes from every
	// core during each case; 0 is the idle machine.
	Loads []float64
	// Payload is the bytes sent each way.
	Payload int
}

// DefaultHopConfig returns bench hop's defaults.
func DefaultHopConfig() HopConfig {
	return HopConfig{Rate: 2000, Duration: 3 * time.Second, Loads: []float64{0, 0.25, 0.5, 0.75}, Payload: 64}
}

// HopCase is one measured load.
type HopCase struct {
	// Load is the share of every core the burner took.
	Load float64
	// Trips is the round trips measured.
	Trips int
	// P50, P99, P999 and Max are round-trip latencies from the write.
	P50, P99, P999, Max time.Duration
	// SchedP99 is the 99th percentile from each trip's scheduled start:
	// the round trip and the wake-up of this process's timer.
	SchedP99 time.Duration
	// Late counts the trips that started over 1 ms behind schedule.
	Late int
	// BurnerCPU is the burner's user and system time.
	BurnerCPU time.Duration
}

// HopReport is bench hop's result.
type HopReport struct {
	Config HopConfig
	Env    Env
	Cases  []HopCase
}

// burnSlice is the period of the burner's duty cycle.
const burnSlice = 4 * time.Millisecond

// RunHop measures cfg. Every process it starts is stopped when it returns.
func RunHop(ctx context.Context, cfg HopConfig) (*HopReport, error) {
	if len(cfg.Command) == 0 || cfg.Rate <= 0 || cfg.Duration <= 0 || cfg.Payload <= 0 {
		return nil, errors.New("bench hop: need a child command, a rate, a duration and a payload > 0")
	}
	for _, l := range cfg.Loads {
		if l < 0 || l >= 1 {
			return nil, fmt.Errorf("bench hop: load %v: want 0 <= load < 1", l)
		}
	}
	rep := &HopReport{Config: cfg, Env: CurrentEnv()}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench hop: %w", err)
	}
	defer lis.Close()
	echo, err := startHopChild(ctx, cfg.Command, "echo", lis.Addr().String())
	if err != nil {
		return nil, err
	}
	defer stopHopChild(echo)
	conn, err := acceptWithin(lis, childReadyTimeout)
	if err != nil {
		return nil, fmt.Errorf("bench hop: the echo child did not connect: %w", err)
	}
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	for _, load := range cfg.Loads {
		c, err := runHopCase(ctx, cfg, conn, load)
		if err != nil {
			return nil, err
		}
		rep.Cases = append(rep.Cases, c)
	}
	return rep, nil
}

func runHopCase(ctx context.Context, cfg HopConfig, conn net.Conn, load float64) (c HopCase, err error) {
	c.Load = load
	if load > 0 {
		burner, err := startHopChild(ctx, cfg.Command, "burn", strconv.FormatFloat(load, 'f', 3, 64))
		if err != nil {
			return c, err
		}
		defer func() {
			stopHopChild(burner)
			if st := burner.ProcessState; st != nil {
				c.BurnerCPU = st.UserTime() + st.SystemTime()
			}
		}()
	}
	buf := make([]byte, cfg.Payload)
	// Warm up the connection and let the burner reach its pace.
	if err := roundTrips(ctx, conn, buf, cfg.Rate, 200*time.Millisecond, nil); err != nil {
		return c, err
	}
	lat, fromSched := NewHistogram(), NewHistogram()
	if err := roundTrips(ctx, conn, buf, cfg.Rate, cfg.Duration, func(sched time.Time, d time.Duration) {
		total := time.Since(sched)
		lat.Record(d)
		fromSched.Record(total)
		if total-d > time.Millisecond {
			c.Late++
		}
	}); err != nil {
		return c, err
	}
	c.Trips = int(lat.Count())
	c.P50, c.P99, c.P999, c.Max = lat.Quantile(0.5), lat.Quantile(0.99), lat.Quantile(0.999), lat.Max()
	c.SchedP99 = fromSched.Quantile(0.99)
	return c, nil
}

// roundTrips writes buf and reads its echo at rate for d; record, when set,
// gets each trip's scheduled start and its latency from the write.
func roundTrips(ctx context.Context, conn net.Conn, buf []byte, rate int, d time.Duration, record func(time.Time, time.Duration)) error {
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := 0; ; i++ {
		sched := start.Add(time.Duration(i) * interval)
		if sched.Sub(start) >= d {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if w := time.Until(sched); w > 0 {
			time.Sleep(w)
		}
		t0 := time.Now()
		if _, err := conn.Write(buf); err != nil {
			return fmt.Errorf("bench hop: %w", err)
		}
		if _, err := io.ReadFull(conn, buf); err != nil {
			return fmt.Errorf("bench hop: %w", err)
		}
		if record != nil {
			record(sched, time.Since(t0))
		}
	}
}

func acceptWithin(lis net.Listener, d time.Duration) (net.Conn, error) {
	if tl, ok := lis.(*net.TCPListener); ok {
		_ = tl.SetDeadline(time.Now().Add(d))
	}
	return lis.Accept()
}

func startHopChild(ctx context.Context, command []string, role, arg string) (*exec.Cmd, error) {
	args := append(append([]string{}, command[1:]...), role, arg)
	cmd := exec.CommandContext(ctx, command[0], args...)
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = childStopTimeout
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench hop: start %s child: %w", role, err)
	}
	return cmd, nil
}

func stopHopChild(cmd *exec.Cmd) {
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// RunHopChild is a child process of bench hop: "echo ADDR" dials ADDR and
// sends back what it reads; "burn SHARE" keeps every core busy SHARE of
// the time (busy, then asleep, in slices of 4 ms). Both run until killed
// or until ctx ends.
func RunHopChild(ctx context.Context, args []string) error {
	if len(args) != 2 {
		return errors.New("bench hop child: want echo ADDR or burn SHARE")
	}
	switch args[0] {
	case "echo":
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", args[1])
		if err != nil {
			return fmt.Errorf("bench hop child: %w", err)
		}
		defer conn.Close()
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		defer stop()
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		_, err = io.Copy(conn, conn)
		return err
	case "burn":
		share, err := strconv.ParseFloat(args[1], 64)
		if err != nil || share <= 0 || share >= 1 {
			return fmt.Errorf("bench hop child: burn %q: want a share in (0, 1)", args[1])
		}
		busy := time.Duration(share * float64(burnSlice))
		for range runtime.GOMAXPROCS(0) {
			go func() {
				for ctx.Err() == nil {
					end := time.Now().Add(busy)
					for time.Now().Before(end) {
					}
					time.Sleep(burnSlice - busy)
				}
			}()
		}
		<-ctx.Done()
		return nil
	}
	return fmt.Errorf("bench hop child: unknown role %q", args[0])
}

// Format prints the report.
func (r *HopReport) Format(w io.Writer) error {
	fmt.Fprintf(w, "berth bench hop\n")
	fmt.Fprintln(w, machineLine(r.Env))
	fmt.Fprintf(w, "setup:   one TCP round trip on loopback between this process and an echo child, %d bytes each way,\n", r.Config.Payload)
	fmt.Fprintf(w, "         %d/s on a fixed schedule for %v per case; a burner child keeps every core busy the given share\n", r.Config.Rate, r.Config.Duration)
	fmt.Fprintf(w, "         of the time (slices of %v): the floor of one process boundary of a push or an Assign\n\n", burnSlice)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "other load\ttrips\tp50 (ms)\tp99 (ms)\tp99.9 (ms)\tmax (ms)\tp99 from schedule (ms)\tlate\tburner CPU\t\n")
	for _, c := range r.Cases {
		fmt.Fprintf(tw, "%.0f%%\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t%v\t\n", 100*c.Load, c.Trips,
			ms(c.P50), ms(c.P99), ms(c.P999), ms(c.Max), ms(c.SchedP99), c.Late, c.BurnerCPU.Round(10*time.Millisecond))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "(latency from the write; p99 from schedule adds this process's timer wake-up; late: trips that started\n")
	fmt.Fprintf(w, " over 1 ms behind their schedule; burner CPU: its user+system time over the case)\n")
	return nil
}
