package bench

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Result is what one case of a load run measured.
type Result struct {
	// Name names the case ("noop", "assign-known", "assign-new").
	Name string
	// Ops counts the calls that succeeded during the measured period.
	Ops uint64
	// Errors counts the calls that failed during the measured period.
	Errors uint64
	// FirstError is the first failure's message, "" without failures.
	FirstError string
	// Elapsed is the measured period.
	Elapsed time.Duration
	// Latency holds the latency of every successful measured call.
	Latency *Histogram
	// RecordsWritten counts the assignment records the control plane wrote
	// during the case, warm-up included (-1 when not applicable).
	RecordsWritten int64
	// RoundOpsPerSec is the throughput of each round, when the case was
	// measured in rounds.
	RoundOpsPerSec []float64
	// CPU is the processor time the load generator and the servers used
	// during the measured period (Known is false when not measured).
	CPU CPU
}

// OpsPerSec is the throughput of successful calls, in calls per second.
func (r Result) OpsPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// Load describes a closed-loop load: Workers goroutines each call Op back to
// back for Warmup, unmeasured, then for Duration, measured.
type Load struct {
	Workers  int
	Warmup   time.Duration
	Duration time.Duration
	// Op makes one call as worker w.
	Op func(ctx context.Context, w int) error
	// Lean, when set, keeps no latencies: a worker only counts its calls
	// (no clock read or histogram per call), so that the load generator
	// costs as little as a plain loop of calls.
	Lean bool
	// CPU, when set, measures the processor time used during the measured
	// period (Result.CPU).
	CPU *cpuProbe
}

// Run applies the load. A call counts when it starts within the measured
// period; the run waits for the calls in flight at its end. It returns
// ctx's error if ctx ends first.
func (l Load) Run(ctx context.Context, name string) (Result, error) {
	start := time.Now()
	measureFrom := start.Add(l.Warmup)
	end := measureFrom.Add(l.Duration)
	tallies := make([]loadTally, l.Workers)
	stop := make(chan struct{})
	cpu := l.CPU.window(measureFrom, end, stop)
	var phase atomic.Int32 // lean workers: 0 warm-up, 1 measured, 2 over
	if l.Lean {
		phases := time.AfterFunc(time.Until(measureFrom), func() {
			phase.Store(1)
			time.AfterFunc(time.Until(end), func() { phase.Store(2) })
		})
		defer phases.Stop()
	}
	var wg sync.WaitGroup
	for w := range l.Workers {
		wg.Go(func() {
			t := loadTally{hist: NewHistogram()}
			if l.Lean {
				tallies[w] = l.runLean(ctx, w, &phase)
				return
			}
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					break
				}
				err := l.Op(ctx, w)
				if t0.Before(measureFrom) {
					continue
				}
				if !t.count(ctx, err) {
					break
				}
				if err == nil {
					t.hist.Record(time.Since(t0))
				}
			}
			tallies[w] = t
		})
	}
	wg.Wait()
	close(stop)
	used := cpu()
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	r := Result{Name: name, Elapsed: l.Duration, Latency: NewHistogram(), RecordsWritten: -1, CPU: used}
	for _, t := range tallies {
		r.Ops += t.ops
		r.Errors += t.errs
		if t.first != nil && r.FirstError == "" {
			r.FirstError = t.first.Error()
		}
		r.Latency.Merge(t.hist)
	}
	return r, nil
}

// loadTally is what one worker of a Load counted.
type loadTally struct {
	ops, errs uint64
	first     error
	hist      *Histogram
}

// runLean is worker w of a Lean load: it calls back to back until phase
// is 2 (or ctx ends), counting the calls that started while phase was 1;
// it reads no clock and keeps no latency.
func (l Load) runLean(ctx context.Context, w int, phase *atomic.Int32) loadTally {
	t := loadTally{hist: NewHistogram()}
	for ctx.Err() == nil {
		p := phase.Load()
		if p == 2 {
			break
		}
		err := l.Op(ctx, w)
		if p == 0 {
			continue
		}
		if !t.count(ctx, err) {
			break
		}
	}
	return t
}

// count counts a measured call that ended with err; it reports false when
// the call failed because ctx ended (not counted: the run is over).
func (t *loadTally) count(ctx context.Context, err error) bool {
	switch {
	case err == nil:
		t.ops++
	case ctx.Err() != nil:
		return false
	default:
		t.errs++
		if t.first == nil {
			t.first = err
		}
	}
	return true
}

// PacedResult is what an open-loop (paced) case measured.
type PacedResult struct {
	Result
	// Rate is the scheduled rate, in calls per second.
	Rate float64
	// Workers is the number of goroutines that made the calls.
	Workers int
	// Lag holds how late each measured call, failed or not, started after
	// its scheduled start: timer granularity (about a millisecond), the
	// process not running, or no worker free. Latency (Result.Latency) is
	// measured from the scheduled start, so lag is included: a stall is
	// not hidden by the calls it kept from being made (no coordinated
	// omission).
	Lag *Histogram
	// Late counts measured calls whose scheduled start had passed by more
	// than LateStart when a worker became free to make them: the load
	// generator fell behind its schedule.
	Late uint64
}

// LateStart is how long after a call's scheduled start a worker may take
// it up before the call counts as late.
const LateStart = time.Millisecond

// KeptUp reports whether the schedule was kept: at most 1% of the measured
// calls were late.
func (r PacedResult) KeptUp() bool {
	return r.Late*100 <= r.Ops+r.Errors
}

// Paced describes an open-loop load: calls start on a fixed schedule of
// Rate per second, whatever the previous calls do, for Warmup, unmeasured,
// then for Duration, measured. Workers goroutines take the scheduled starts
// in order, each sleeping until its call's start; there must be enough of
// them that one is free at each start (Rate × the longest latency
// expected).
type Paced struct {
	Rate     float64
	Workers  int
	Warmup   time.Duration
	Duration time.Duration
	// Op makes one call as worker w.
	Op func(ctx context.Context, w int) error
	// Lean, when set, keeps no latencies: a worker only counts its calls
	// (no clock read or histogram per call), so that the load generator
	// costs as little as a plain loop of calls.
	Lean bool
	// CPU, when set, measures the processor time used during the measured
	// period (Result.CPU).
	CPU *cpuProbe
}

// Run applies the load. A call is measured when its scheduled start is in
// the measured period; the run waits for every scheduled call. It returns
// ctx's error if ctx ends first.
func (p Paced) Run(ctx context.Context, name string) (PacedResult, error) {
	if p.Rate <= 0 || p.Workers <= 0 {
		return PacedResult{}, fmt.Errorf("bench: paced %s: rate %v and workers %d must be positive", name, p.Rate, p.Workers)
	}
	// Scheduled start i is start + i/Rate, computed from i so that errors
	// do not accumulate.
	at := func(i int64) time.Duration { return time.Duration(float64(i) * float64(time.Second) / p.Rate) }
	total := int64((p.Warmup + p.Duration).Seconds() * p.Rate)
	first := int64(math.Ceil(p.Warmup.Seconds() * p.Rate)) // first measured call
	start := time.Now().Add(time.Millisecond)
	// Workers share a few tallies (histograms are 58 KiB each, and there
	// may be thousands of workers).
	type tally struct {
		mu              sync.Mutex
		ops, errs, late uint64
		first           error
		hist, lag       *Histogram
	}
	tallies := make([]tally, min(p.Workers, 8))
	for i := range tallies {
		tallies[i].hist, tallies[i].lag = NewHistogram(), NewHistogram()
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range p.Workers {
		wg.Go(func() {
			t := &tallies[w%len(tallies)]
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= total {
					break
				}
				sched := start.Add(at(i))
				d := time.Until(sched)
				late := d < -LateStart
				if d > 0 {
					timer.Reset(d)
					select {
					case <-ctx.Done():
						continue
					case <-timer.C:
					}
				}
				t0 := time.Now()
				err := p.Op(ctx, w)
				done := time.Now()
				if i < first {
					continue
				}
				if err != nil && ctx.Err() != nil {
					break
				}
				t.mu.Lock()
				if late {
					t.late++
				}
				t.lag.Record(t0.Sub(sched))
				if err != nil {
					t.errs++
					if t.first == nil {
						t.first = err
					}
				} else {
					t.ops++
					t.hist.Record(done.Sub(sched))
				}
				t.mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return PacedResult{}, err
	}
	r := PacedResult{
		Result:  Result{Name: name, Elapsed: p.Duration, Latency: NewHistogram(), RecordsWritten: -1},
		Rate:    p.Rate,
		Workers: p.Workers,
		Lag:     NewHistogram(),
	}
	for i := range tallies {
		t := &tallies[i]
		r.Ops += t.ops
		r.Errors += t.errs
		r.Late += t.late
		if t.first != nil && r.FirstError == "" {
			r.FirstError = t.first.Error()
		}
		r.Latency.Merge(t.hist)
		r.Lag.Merge(t.lag)
	}
	return r, nil
}

// add accumulates o, one round of the same case, into r: counts,
// latencies and measured time add up, and o's rate joins RoundOpsPerSec.
func (r *Result) add(o Result) {
	r.Ops += o.Ops
	r.Errors += o.Errors
	if r.FirstError == "" {
		r.FirstError = o.FirstError
	}
	r.Elapsed += o.Elapsed
	r.Latency.Merge(o.Latency)
	if o.RecordsWritten >= 0 {
		r.RecordsWritten = max(r.RecordsWritten, 0) + o.RecordsWritten
	}
	r.RoundOpsPerSec = append(r.RoundOpsPerSec, o.OpsPerSec())
	r.CPU.add(o.CPU)
}

// add accumulates o, one round of the same paced case, into r.
func (r *PacedResult) add(o PacedResult) {
	r.Result.add(o.Result)
	r.Late += o.Late
	r.Lag.Merge(o.Lag)
	r.Workers = max(r.Workers, o.Workers)
}
