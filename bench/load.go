package bench

import (
	"context"
	"sync"
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
}

// Run applies the load. A call counts when it starts within the measured
// period; the run waits for the calls in flight at its end. It returns
// ctx's error if ctx ends first.
func (l Load) Run(ctx context.Context, name string) (Result, error) {
	start := time.Now()
	measureFrom := start.Add(l.Warmup)
	end := measureFrom.Add(l.Duration)
	type tally struct {
		ops, errs uint64
		first     error
		hist      *Histogram
	}
	tallies := make([]tally, l.Workers)
	var wg sync.WaitGroup
	for w := range l.Workers {
		wg.Go(func() {
			t := tally{hist: NewHistogram()}
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					break
				}
				err := l.Op(ctx, w)
				if t0.Before(measureFrom) {
					continue
				}
				if err != nil {
					if ctx.Err() != nil {
						break
					}
					t.errs++
					if t.first == nil {
						t.first = err
					}
					continue
				}
				t.ops++
				t.hist.Record(time.Since(t0))
			}
			tallies[w] = t
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	r := Result{Name: name, Elapsed: l.Duration, Latency: NewHistogram(), RecordsWritten: -1}
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
