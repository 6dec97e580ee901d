package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	policyv1 "github.com/berthproject/berth/gen/berth/policy/v1"
	"github.com/berthproject/berth/placement"
	"github.com/berthproject/berth/policy"
	"github.com/berthproject/berth/registry"
)

// Targets of the balance benchmark: max/mean utilization of berth's
// placement with one control plane replica, and with several.
const (
	BalanceTargetOneReplica   = 1.02
	BalanceTargetManyReplicas = 1.05
)

// balanceBaseCapacities are the relative group capacities; group i gets
// balanceBaseCapacities[i%8], scaled so that the devices fill Fill of the
// total.
var balanceBaseCapacities = []int{5000, 8000, 10000, 12000, 15000, 20000, 25000, 30000}

// BalanceConfig is the simulation Balance runs.
type BalanceConfig struct {
	// Devices are assigned one by one.
	Devices int
	// Groups of unequal capacities, each with ExecutorsPerGroup executors
	// that share its capacity.
	Groups            int
	ExecutorsPerGroup int
	// Fill is the share of the total capacity the devices fill.
	Fill float64
	// Seed makes the run: device ids, the replica each device reaches and
	// the random baseline. Same seed, same result.
	Seed uint64
	// Heartbeat is how many assignments pass between two heartbeats of an
	// executor (its connection count, as Decide sees it); executors'
	// heartbeats are staggered evenly over that period.
	Heartbeat int
	// Replicas is the number of control plane replicas of the
	// multi-replica case; devices reach them at random.
	Replicas int
	// Delay is how many assignments later a replica learns of another
	// replica's assignment (the assignment-record watch).
	Delay int
}

// DefaultBalanceConfig is what `berth bench balance` runs.
func DefaultBalanceConfig() BalanceConfig {
	return BalanceConfig{
		Devices:           100000,
		Groups:            8,
		ExecutorsPerGroup: 2,
		Fill:              0.8,
		Seed:              1,
		Heartbeat:         500,
		Replicas:          3,
		Delay:             200,
	}
}

// Validate checks c.
func (c BalanceConfig) Validate() error {
	var errs []error
	if c.Groups < 2 {
		errs = append(errs, fmt.Errorf("groups %d: want at least 2", c.Groups))
	}
	if c.ExecutorsPerGroup < 1 {
		errs = append(errs, fmt.Errorf("executors per group %d: want at least 1", c.ExecutorsPerGroup))
	}
	if !(c.Fill > 0 && c.Fill <= 0.95) {
		errs = append(errs, fmt.Errorf("fill %v: want in (0, 0.95]", c.Fill))
	}
	if c.Heartbeat < 1 {
		errs = append(errs, fmt.Errorf("heartbeat %d: want at least 1", c.Heartbeat))
	}
	if c.Replicas < 2 {
		errs = append(errs, fmt.Errorf("replicas %d: want at least 2 (one replica is always run)", c.Replicas))
	}
	if c.Delay < 0 {
		errs = append(errs, fmt.Errorf("delay %d: want at least 0", c.Delay))
	}
	// Every group needs room for a few devices per executor, or rounding
	// alone decides the figures.
	if c.Devices < 10*c.Groups*c.ExecutorsPerGroup {
		errs = append(errs, fmt.Errorf("devices %d: want at least %d for %d groups of %d executors", c.Devices, 10*c.Groups*c.ExecutorsPerGroup, c.Groups, c.ExecutorsPerGroup))
	}
	return errors.Join(errs...)
}

// BalanceRow is the outcome of one placement method.
type BalanceRow struct {
	// Method names it; Berth says it is berth's placement (else a
	// baseline).
	Method string
	Berth  bool
	// Replicas is the number of control plane replicas (1 for baselines).
	Replicas int
	// Counts are the devices each group ends with.
	Counts []int
	// MaxMean is the highest group utilization over the mean utilization
	// (all devices over all capacity); 1 is perfect balance.
	MaxMean float64
	// MaxUtil and MinUtil are the highest and lowest group utilizations.
	MaxUtil, MinUtil float64
}

// BalanceTarget is one target and whether it is met.
type BalanceTarget struct {
	Name string
	Pass bool
	// Detail says what was compared.
	Detail string
}

// BalanceResult is what Balance measured.
type BalanceResult struct {
	Config BalanceConfig
	// Capacities of the groups, in group order.
	Capacities []int
	Rows       []BalanceRow
	Targets    []BalanceTarget
}

// Pass reports whether every target is met.
func (r BalanceResult) Pass() bool {
	for _, t := range r.Targets {
		if !t.Pass {
			return false
		}
	}
	return len(r.Targets) > 0
}

// Row returns the row of method with the given replicas.
func (r BalanceResult) Row(method string, replicas int) (BalanceRow, bool) {
	for _, x := range r.Rows {
		if x.Method == method && x.Replicas == replicas {
			return x, true
		}
	}
	return BalanceRow{}, false
}

// Method names of the rows.
const (
	MethodBerth          = "berth"
	MethodUniformRandom  = "uniform random group"
	MethodRoundRobin     = "round robin over groups"
	MethodWeightedRandom = "random weighted by capacity"
	MethodWeightedHash   = "weighted rendezvous hash of device id"
)

// Balance simulates assigning cfg.Devices devices one by one to groups of
// unequal capacities, with berth's placement (placement.Decide under the
// default policy) and with baselines, prints a table of how evenly each
// filled the groups and whether berth meets its targets, and returns the
// figures. It is deterministic for a given configuration.
//
// Berth's replicas see executor connection counts only at heartbeats (every
// cfg.Heartbeat assignments per executor, staggered); until then each
// replica counts the devices it sent to an executor since that executor's
// last heartbeat as pending, and the devices other replicas sent to a group
// as pending on the group from when it learns of them, cfg.Delay
// assignments later, as the control plane does with its reservations.
func Balance(ctx context.Context, cfg BalanceConfig, w io.Writer) (BalanceResult, error) {
	if err := cfg.Validate(); err != nil {
		return BalanceResult{}, fmt.Errorf("bench balance: %w", err)
	}
	caps := balanceCapacities(cfg)
	res := BalanceResult{Config: cfg, Capacities: caps}

	// Device ids, the same for every method.
	idRng := rand.New(rand.NewPCG(cfg.Seed, 1))
	ids := make([]string, cfg.Devices)
	for i := range ids {
		ids[i] = fmt.Sprintf("dev-%016x", idRng.Uint64())
	}

	for _, replicas := range []int{1, cfg.Replicas} {
		counts, err := simulateBerth(ctx, cfg, caps, ids, replicas)
		if err != nil {
			return res, err
		}
		res.Rows = append(res.Rows, balanceRow(MethodBerth, true, replicas, counts, caps))
	}
	for _, b := range []struct {
		name string
		pick func(i int, id string) int
	}{
		{MethodUniformRandom, uniformPicker(cfg)},
		{MethodRoundRobin, func(i int, _ string) int { return i % cfg.Groups }},
		{MethodWeightedRandom, weightedRandomPicker(cfg, caps)},
		{MethodWeightedHash, weightedHashPicker(caps)},
	} {
		counts := make([]int, cfg.Groups)
		for i, id := range ids {
			counts[b.pick(i, id)]++
		}
		res.Rows = append(res.Rows, balanceRow(b.name, false, 1, counts, caps))
	}
	res.Targets = balanceTargets(res)
	if err := res.Format(w); err != nil {
		return res, err
	}
	return res, nil
}

// balanceCapacities scales the base capacities so that the devices fill
// cfg.Fill of the total.
func balanceCapacities(cfg BalanceConfig) []int {
	base := make([]int, cfg.Groups)
	sum := 0
	for i := range base {
		base[i] = balanceBaseCapacities[i%len(balanceBaseCapacities)]
		sum += base[i]
	}
	scale := float64(cfg.Devices) / cfg.Fill / float64(sum)
	caps := make([]int, cfg.Groups)
	for i, b := range base {
		caps[i] = max(cfg.ExecutorsPerGroup, int(math.Round(float64(b)*scale)))
	}
	return caps
}

func balanceRow(method string, berth bool, replicas int, counts, caps []int) BalanceRow {
	total, capacity := 0, 0
	for i := range counts {
		total += counts[i]
		capacity += caps[i]
	}
	mean := float64(total) / float64(capacity)
	r := BalanceRow{Method: method, Berth: berth, Replicas: replicas, Counts: counts, MinUtil: math.Inf(1)}
	for i, n := range counts {
		u := float64(n) / float64(caps[i])
		r.MaxUtil = max(r.MaxUtil, u)
		r.MinUtil = min(r.MinUtil, u)
	}
	r.MaxMean = r.MaxUtil / mean
	return r
}

func balanceTargets(r BalanceResult) []BalanceTarget {
	var ts []BalanceTarget
	bestBase := BalanceRow{MaxMean: math.Inf(1)}
	for _, x := range r.Rows {
		if !x.Berth && x.MaxMean < bestBase.MaxMean {
			bestBase = x
		}
	}
	for _, x := range r.Rows {
		if !x.Berth {
			continue
		}
		target, what := BalanceTargetManyReplicas, fmt.Sprintf("%d replicas", x.Replicas)
		if x.Replicas == 1 {
			target, what = BalanceTargetOneReplica, "1 replica"
		}
		ts = append(ts, BalanceTarget{
			Name:   fmt.Sprintf("berth, %s: max/mean <= %.2f", what, target),
			Pass:   x.MaxMean <= target,
			Detail: fmt.Sprintf("%.4f", x.MaxMean),
		})
		ts = append(ts, BalanceTarget{
			Name:   fmt.Sprintf("berth, %s: better than every baseline", what),
			Pass:   x.MaxMean < bestBase.MaxMean,
			Detail: fmt.Sprintf("%.4f < %.4f (best baseline: %s)", x.MaxMean, bestBase.MaxMean, bestBase.Method),
		})
	}
	return ts
}

// Format prints the table and the targets.
func (r BalanceResult) Format(w io.Writer) error {
	c := r.Config
	capacity := 0
	for _, x := range r.Capacities {
		capacity += x
	}
	var b strings.Builder
	fmt.Fprintf(&b, "balance: %d devices over %d groups of %d executors, capacities %v (total %d, %.0f%% full), seed %d\n",
		c.Devices, c.Groups, c.ExecutorsPerGroup, r.Capacities, capacity, 100*float64(c.Devices)/float64(capacity), c.Seed)
	fmt.Fprintf(&b, "berth: each executor's count seen every %d assignments (staggered); with %d replicas, a device reaches one at random and the others learn of its assignment %d assignments later\n",
		c.Heartbeat, c.Replicas, c.Delay)
	fmt.Fprintf(&b, "max/mean: highest group utilization over devices/total capacity (1 is even)\n\n")
	fmt.Fprintf(&b, "%-38s %8s %9s %9s %9s\n", "method", "replicas", "max/mean", "max util", "min util")
	for _, x := range r.Rows {
		fmt.Fprintf(&b, "%-38s %8d %9.4f %8.2f%% %8.2f%%\n", x.Method, x.Replicas, x.MaxMean, 100*x.MaxUtil, 100*x.MinUtil)
	}
	b.WriteString("\n")
	for _, t := range r.Targets {
		verdict := "FAIL"
		if t.Pass {
			verdict = "PASS"
		}
		fmt.Fprintf(&b, "%s  %s: %s\n", verdict, t.Name, t.Detail)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Simulated time: assignment i (from 0) happens at tick i+1; a heartbeat
// taken before assignment i is observed at tick i and counts assignments
// 0..i-1.
var balanceEpoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

const balanceTick = time.Millisecond

func tickTime(t int) time.Time { return balanceEpoch.Add(time.Duration(t) * balanceTick) }

func timeTick(t time.Time) int { return int(t.Sub(balanceEpoch) / balanceTick) }

// simReservations is one replica's view of what was sent but is not yet in
// executor counts: its own devices per executor, and the devices other
// replicas sent per group, each at the tick it was made or learnt. It
// implements placement.Pending: a reservation is pending while the count
// it is compared with was observed before it.
type simReservations struct {
	execs  map[string]*reservationLog
	groups map[string]*reservationLog
}

// reservationLog holds reservations in ascending ticks with the running
// sum of their weights.
type reservationLog struct {
	at  []int
	cum []float64
}

func newSimReservations() *simReservations {
	return &simReservations{execs: map[string]*reservationLog{}, groups: map[string]*reservationLog{}}
}

func (l *reservationLog) add(at int, w float64) {
	sum := w
	if n := len(l.cum); n > 0 {
		sum += l.cum[n-1]
	}
	l.at = append(l.at, at)
	l.cum = append(l.cum, sum)
}

// after is the weight reserved after tick t.
func (l *reservationLog) after(t int) float64 {
	if l == nil || len(l.at) == 0 {
		return 0
	}
	i := sort.SearchInts(l.at, t+1) // first reservation after t
	if i == len(l.at) {
		return 0
	}
	before := 0.0
	if i > 0 {
		before = l.cum[i-1]
	}
	return l.cum[len(l.cum)-1] - before
}

func addTo(m map[string]*reservationLog, key string, at int, w float64) {
	l := m[key]
	if l == nil {
		l = &reservationLog{}
		m[key] = l
	}
	l.add(at, w)
}

func (r *simReservations) Pending(e *registry.Executor) float64 {
	return r.execs[e.ID].after(timeTick(e.ObservedAt))
}

func (r *simReservations) GroupPending(group string, countedAt time.Time) float64 {
	return r.groups[group].after(timeTick(countedAt))
}

var _ placement.Pending = (*simReservations)(nil)

// balanceGroupID names group g.
func balanceGroupID(g int) string { return fmt.Sprintf("g%02d", g) }

// simulateBerth assigns the devices with Decide through the given number
// of replicas and returns the devices each group ends with.
func simulateBerth(ctx context.Context, cfg BalanceConfig, caps []int, ids []string, replicas int) ([]int, error) {
	pol := policy.Default()
	groups := make([]registry.Group, cfg.Groups)
	groupIndex := make(map[string]int, cfg.Groups)
	var execs []registry.Executor
	var execGroup []int
	for g := range groups {
		id := balanceGroupID(g)
		groups[g] = registry.Group{ID: id, Labels: []string{policy.DefaultLabel}, Capacity: caps[g], State: registry.GroupActive}
		groupIndex[id] = g
		for e := range cfg.ExecutorsPerGroup {
			c := caps[g] / cfg.ExecutorsPerGroup
			if e < caps[g]%cfg.ExecutorsPerGroup {
				c++
			}
			execs = append(execs, registry.Executor{
				ID:         fmt.Sprintf("%s-e%d", id, e),
				GroupID:    id,
				Address:    fmt.Sprintf("10.0.%d.%d:7000", g, e),
				Capacity:   c,
				UpdatedAt:  tickTime(0),
				ObservedAt: tickTime(0),
			})
			execGroup = append(execGroup, g)
		}
	}
	execIndex := make(map[string]int, len(execs))
	offset := make([]int, len(execs)) // heartbeats are staggered
	for k, e := range execs {
		execIndex[e.ID] = k
		offset[k] = k * cfg.Heartbeat / len(execs)
	}
	live := make([]int, len(execs)) // what executors really hold
	var rev int64
	snap := registry.NewSnapshot(rev, groups, execs)

	res := make([]*simReservations, replicas)
	for r := range res {
		res[r] = newSimReservations()
	}
	// Every assignment, for the other replicas to learn of Delay ticks
	// later; learnt[r] is how far replica r got.
	type record struct{ tick, replica, group int }
	var log []record
	if replicas > 1 {
		log = make([]record, 0, len(ids))
	}
	learnt := make([]int, replicas)
	rng := rand.New(rand.NewPCG(cfg.Seed, 2))

	for i, id := range ids {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		beat := false
		for k := range execs {
			if i > 0 && (i+offset[k])%cfg.Heartbeat == 0 {
				execs[k].Connections = live[k]
				execs[k].UpdatedAt, execs[k].ObservedAt = tickTime(i), tickTime(i)
				beat = true
			}
		}
		if beat {
			rev++
			snap = registry.NewSnapshot(rev, groups, execs)
		}
		now := i + 1
		r := 0
		if replicas > 1 {
			r = rng.IntN(replicas)
		}
		// The watch delivered every assignment made Delay ticks ago or
		// more; each counts from the tick it was learnt.
		for ; learnt[r] < len(log) && log[learnt[r]].tick+cfg.Delay <= now; learnt[r]++ {
			if a := log[learnt[r]]; a.replica != r {
				addTo(res[r].groups, groups[a.group].ID, a.tick+cfg.Delay, 1)
			}
		}
		req := placement.Request{Input: &policyv1.Input{Device: &policyv1.DeviceInput{Id: id}}, Weight: 1}
		d, err := placement.Decide(snap, pol, req, res[r])
		if err != nil {
			return nil, fmt.Errorf("bench balance: device %d of %d, %d replicas: %w", i, len(ids), replicas, err)
		}
		exec := d.Endpoints[0].Executor.ID
		live[execIndex[exec]]++
		addTo(res[r].execs, exec, now, 1)
		if replicas > 1 {
			log = append(log, record{now, r, groupIndex[d.Group.ID]})
		}
	}
	counts := make([]int, cfg.Groups)
	for k, n := range live {
		counts[execGroup[k]] += n
	}
	return counts, nil
}

// uniformPicker picks a group uniformly at random.
func uniformPicker(cfg BalanceConfig) func(int, string) int {
	rng := rand.New(rand.NewPCG(cfg.Seed, 3))
	return func(int, string) int { return rng.IntN(cfg.Groups) }
}

// weightedRandomPicker picks a group at random with probability
// proportional to its capacity.
func weightedRandomPicker(cfg BalanceConfig, caps []int) func(int, string) int {
	rng := rand.New(rand.NewPCG(cfg.Seed, 4))
	cum := make([]int, len(caps))
	total := 0
	for i, c := range caps {
		total += c
		cum[i] = total
	}
	return func(int, string) int { return sort.SearchInts(cum, rng.IntN(total)+1) }
}

// weightedHashPicker picks the group of highest weighted rendezvous score
// of the device id, as affinity does for its key (placement.RendezvousOrder):
// proportional to capacity in expectation, with no load feedback.
func weightedHashPicker(caps []int) func(int, string) int {
	groups := make([]placement.PoolGroup, len(caps))
	for g := range groups {
		groups[g] = placement.PoolGroup{ID: balanceGroupID(g), Capacity: caps[g]}
	}
	return func(_ int, id string) int { return placement.RendezvousOrder(id, groups)[0] }
}
