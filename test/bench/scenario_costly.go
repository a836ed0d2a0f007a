package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/filter"
)

// nestedLoops is a filter of outer × inner additions, written out, that is true for
// every object; negated, it is false for every object.
func nestedLoops(outer, inner int, negated bool) string {
	list := func(n int) string {
		s := make([]string, n)
		for i := range s {
			s[i] = strconv.Itoa(i)
		}
		return "[" + strings.Join(s, ",") + "]"
	}
	expr := list(outer) + ".all(i, " + list(inner) + ".all(j, i + j >= 0))"
	if negated {
		expr = "!" + expr
	}
	return expr
}

// costlyFilter runs 100 × 100 additions, far more than filter.EvalCostBudget allows: every
// evaluation is stopped at the budget, and the change does not match.
var costlyFilter = nestedLoops(100, 100, false)

// costlyDetails are the raw figures of the costly-neighbour scenario.
type costlyDetails struct {
	// Filter is the neighbour's, stopped at the budget; UnderFilter the largest of the
	// same loops that stays under it, negated so that it matches nothing either.
	Filter      string `json:"filter"`
	UnderFilter string `json:"underFilter"`
	// EvalMillis and UnderEvalMillis are the median wall time of one evaluation of each
	// in this process (BenchmarkFilterAtTheBudget measures the first).
	EvalMillis      float64 `json:"evalMillis"`
	UnderEvalMillis float64 `json:"underEvalMillis"`
	// EvalBytes and UnderEvalBytes are what one evaluation allocates: garbage the whole
	// process's collector has to clear.
	EvalBytes      uint64 `json:"evalBytes"`
	UnderEvalBytes uint64 `json:"underEvalBytes"`
	// Alone is the plain subscription by itself; WithNeighbour the same next to the
	// neighbour over budget; WithUnderNeighbour next to the neighbour under it.
	Alone              latencyPhase `json:"alone"`
	WithNeighbour      latencyPhase `json:"withNeighbour"`
	WithUnderNeighbour latencyPhase `json:"withUnderNeighbour"`
	// OverBudget counts the neighbour's evaluations stopped at the budget
	// (dynamicnotifier_filter_over_budget_total); FilterErrors all its failed ones.
	OverBudget   int `json:"overBudget"`
	FilterErrors int `json:"filterErrors"`
	// NeighbourReady is the neighbour's Ready condition after the writes: status/reason.
	NeighbourReady string `json:"neighbourReady"`
	// StatusWrites are the subscriptions' status writes the API server served during each
	// phase, from creating the subscriptions to deleting them: load on the API server that
	// the raw watch feels too.
	StatusWrites map[string]int `json:"statusWrites"`
	// Process is the CPU and garbage collection of this whole process (operator, raw
	// watch, sink, writers) during each phase.
	Process map[string]processUsage `json:"process"`
}

// processUsage is what this process used over a stretch of time.
type processUsage struct {
	Seconds    float64 `json:"seconds"`
	CPUSeconds float64 `json:"cpuSeconds"`
	GCCycles   uint64  `json:"gcCycles"`
	// GCCPUSeconds is the runtime's estimate of the CPU its collector took.
	GCCPUSeconds float64 `json:"gcCPUSeconds"`
}

// microsPer is the CPU in microseconds per one of n things done (deliveries).
func (u processUsage) microsPer(n int) float64 { return u.CPUSeconds * 1e6 / float64(max(n, 1)) }

type usageReading struct {
	at    time.Time
	cpu   float64
	gc    uint64
	gcCPU float64
}

func readUsage() usageReading {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	samples := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/cpu/classes/gc/total:cpu-seconds"}}
	metrics.Read(samples)
	r := usageReading{at: time.Now(),
		cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()}
	if samples[0].Value.Kind() == metrics.KindUint64 {
		r.gc = samples[0].Value.Uint64()
	}
	if samples[1].Value.Kind() == metrics.KindFloat64 {
		r.gcCPU = samples[1].Value.Float64()
	}
	return r
}

func usageSince(before usageReading) processUsage {
	after := readUsage()
	return processUsage{Seconds: after.at.Sub(before.at).Seconds(), CPUSeconds: after.cpu - before.cpu,
		GCCycles: after.gc - before.gc, GCCPUSeconds: after.gcCPU - before.gcCPU}
}

// runCostlyNeighbour: the write → sink latency of one plain subscription on a namespace's
// ConfigMaps, alone and then next to a second subscription on the same watch whose filter
// costs its whole budget on every change. Filters run in each subscription's own delivery
// workers, so the plain one should not notice. A third phase, next to a filter just under
// the budget (no over-budget reports, no status writes for them), tells the filter's CPU
// apart from what reporting it costs.
func runCostlyNeighbour(ctx context.Context, h *harness) ([]Row, any, error) {
	d := costlyDetails{Filter: costlyFilter, StatusWrites: map[string]int{}, Process: map[string]processUsage{}}
	var err error
	if d.EvalMillis, d.EvalBytes, err = evalCost(costlyFilter, true); err != nil {
		return nil, d, err
	}
	if d.UnderFilter, err = underBudgetFilter(); err != nil {
		return nil, d, err
	}
	if d.UnderEvalMillis, d.UnderEvalBytes, err = evalCost(d.UnderFilter, false); err != nil {
		return nil, d, err
	}
	h.logf("costlyneighbour: one evaluation stops at the budget after %.2f ms; the filter under it takes %.2f ms",
		d.EvalMillis, d.UnderEvalMillis)

	phase := func(name string, run latencyRun) (latencyPhase, error) {
		before, err := h.statusWrites(ctx)
		if err != nil {
			return latencyPhase{}, err
		}
		usage := readUsage()
		p, err := h.latency(ctx, run)
		d.Process[name] = usageSince(usage)
		if err != nil {
			return p, fmt.Errorf("%s: %w", name, err)
		}
		after, err := h.statusWrites(ctx)
		d.StatusWrites[name] = after - before
		return p, err
	}
	withFilter := func(expr string) []func(*notifyv1.WatchSubscription) {
		return []func(*notifyv1.WatchSubscription){func(ws *notifyv1.WatchSubscription) { ws.Spec.Filter = expr }}
	}
	if d.Alone, err = phase("alone", latencyRun{prefix: "costly-alone", subs: 1}); err != nil {
		return nil, d, err
	}
	if d.WithNeighbour, err = phase("withNeighbour", latencyRun{prefix: "costly-over", subs: 1,
		neighbours: withFilter(costlyFilter),
		inspect:    func(ctx context.Context, ns string) error { return h.inspectCostly(ctx, ns, &d) }}); err != nil {
		return nil, d, err
	}
	if d.WithUnderNeighbour, err = phase("withUnderNeighbour", latencyRun{prefix: "costly-under", subs: 1,
		neighbours: withFilter(d.UnderFilter)}); err != nil {
		return nil, d, err
	}
	a, b, c := d.Alone, d.WithNeighbour, d.WithUnderNeighbour
	h.logf("costlyneighbour: p50 %.2f ms alone, %.2f with the neighbour over budget, %.2f under it; "+
		"p99 %.2f, %.2f, %.2f; raw p50 %.2f, %.2f, %.2f; %d of %d changes over budget, neighbour %s; status writes %v; "+
		"process %+v",
		a.Ours.P50, b.Ours.P50, c.Ours.P50, a.Ours.P99, b.Ours.P99, c.Ours.P99, a.Raw.P50, b.Raw.P50, c.Raw.P50,
		d.OverBudget, b.Writes, d.NeighbourReady, d.StatusWrites, d.Process)

	label := "Costly neighbour, 1 sub + 1 filter over its budget"
	underLabel := "Costly neighbour, 1 sub + 1 filter just under its budget"
	complete := func(p latencyPhase) bool { return p.Delivered == p.Expected }
	row := func(id, label, fig string, ours, alone, rawAlone, rawWith float64, p latencyPhase) Row {
		r := newRow(id, label, fig+" write → sink", "ms", ours, alone, "alone").
			note("raw watch %s ms alone, %s ms with the neighbour", trim(rawAlone), trim(rawWith))
		if !complete(a) || !complete(p) {
			r = r.note("%d of %d and %d of %d delivered", a.Delivered, a.Expected, p.Delivered, p.Expected)
		}
		return r
	}
	goal := func(r Row, p latencyPhase) Row {
		return r.goal("≤ 1.1× alone (+1 ms)", r.Ours <= 1.1*r.Baseline+1 && complete(a) && complete(p))
	}
	overBudget := newRow("costlyneighbour/over-budget", label, "changes the neighbour's filter stopped over budget", "",
		float64(d.OverBudget), float64(b.Writes), "writes").
		goal("= writes", d.OverBudget == b.Writes).
		note("one evaluation %s ms; neighbour Ready %s; status writes %d alone, %d with the neighbour",
			trim(d.EvalMillis), d.NeighbourReady, d.StatusWrites["alone"], d.StatusWrites["withNeighbour"])
	return []Row{
		goal(row("costlyneighbour/p50", label, "p50", b.Ours.P50, a.Ours.P50, a.Raw.P50, b.Raw.P50, b), b),
		goal(row("costlyneighbour/p99", label, "p99", b.Ours.P99, a.Ours.P99, a.Raw.P99, b.Raw.P99, b), b),
		overBudget,
		row("costlyneighbour/under-budget/p50", underLabel, "p50", c.Ours.P50, a.Ours.P50, a.Raw.P50, c.Raw.P50, c).
			note("one evaluation %s ms; status writes %d", trim(d.UnderEvalMillis), d.StatusWrites["withUnderNeighbour"]),
		row("costlyneighbour/under-budget/p99", underLabel, "p99", c.Ours.P99, a.Ours.P99, a.Raw.P99, c.Raw.P99, c),
	}, d, nil
}

// sampleObject is like the ConfigMaps the latency machinery writes.
func sampleObject() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "o-0", "namespace": "costly"}, "data": map[string]any{"payload": "x"}}}
}

// evalCost checks that expr is stopped by the budget (overBudget) or evaluates to false
// within it, and returns the median time of one evaluation in milliseconds and the bytes
// it allocates.
func evalCost(expr string, overBudget bool) (float64, uint64, error) {
	e, err := filter.CompileCEL(expr)
	if err != nil {
		return 0, 0, err
	}
	obj := sampleObject()
	times := make([]time.Duration, 21)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range times {
		start := time.Now()
		ok, err := e.Eval(event.Added, obj, nil, nil)
		times[i] = time.Since(start)
		if ok || filter.IsOverBudget(err) != overBudget || (!overBudget && err != nil) {
			return 0, 0, fmt.Errorf("filter %.40q…: matched %v, error %v; want over budget %v", expr, ok, err, overBudget)
		}
	}
	runtime.ReadMemStats(&after)
	return summarize(times).P50, (after.TotalAlloc - before.TotalAlloc) / uint64(len(times)), nil
}

// underBudgetFilter is the negated nestedLoops(100, n) of the largest n that stays within the
// budget.
func underBudgetFilter() (string, error) {
	within := func(n int) (bool, error) {
		e, err := filter.CompileCEL(nestedLoops(100, n, true))
		if err != nil {
			return false, err
		}
		_, err = e.Eval(event.Added, sampleObject(), nil, nil)
		if err != nil && !filter.IsOverBudget(err) {
			return false, err
		}
		return err == nil, nil
	}
	lo, hi := 0, 100 // within(lo), !within(hi)
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		ok, err := within(mid)
		if err != nil {
			return "", err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	return nestedLoops(100, lo, true), nil
}

// inspectCostly waits until the neighbour has evaluated every write, and reads what it
// says about them: its over-budget counter and its Ready condition.
func (h *harness) inspectCostly(ctx context.Context, ns string, d *costlyDetails) error {
	writes := h.opts.LatencyWrites
	// Falling short is not an error: the row reports the count.
	var countErr error
	_ = poll(ctx, 20*time.Millisecond, 30*time.Second, "the neighbour to evaluate every write", func() (bool, error) {
		var n float64
		n, countErr = operatorCounter("dynamicnotifier_filter_errors_total", ns)
		d.FilterErrors = int(n)
		return countErr != nil || d.FilterErrors >= writes, nil
	})
	if err := errors.Join(countErr, ctx.Err()); err != nil {
		return err
	}
	n, err := operatorCounter("dynamicnotifier_filter_over_budget_total", ns)
	if err != nil {
		return err
	}
	d.OverBudget = int(n)
	// The condition follows within the status interval.
	ws := &notifyv1.WatchSubscription{}
	var getErr error
	_ = poll(ctx, 100*time.Millisecond, 10*time.Second, "the neighbour to report it", func() (bool, error) {
		if getErr = h.k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "neighbour-0"}, ws); getErr != nil {
			return false, getErr
		}
		for _, c := range ws.Status.Conditions {
			if c.Type == notifyv1.ConditionReady {
				d.NeighbourReady = string(c.Status) + "/" + c.Reason
				return c.Reason == notifyv1.ReasonFilterOverBudget, nil
			}
		}
		return false, nil
	})
	return errors.Join(getErr, ctx.Err())
}

// statusWrites counts the status writes of WatchSubscriptions the API server has served.
func (h *harness) statusWrites(ctx context.Context) (int, error) {
	n, err := h.apiMetric(ctx, "apiserver_request_total",
		map[string]string{labelVerb: "PATCH", labelResource: resourceSubscriptions, labelSubresource: subresourceStatus},
		map[string]string{labelVerb: "PUT", labelResource: resourceSubscriptions, labelSubresource: subresourceStatus})
	return int(n), err
}
