package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/operator"
)

type latencyPhase struct {
	Subscriptions int `json:"subscriptions"`
	// Neighbours are subscriptions on the same watch whose deliveries are not timed.
	Neighbours int `json:"neighbours,omitempty"`
	Writes     int `json:"writes"`
	// Interval between write starts.
	Interval string      `json:"interval"`
	Ours     percentiles `json:"ours"`
	// OursFirst is the first delivery of each write: ours without the fan-out's cost.
	OursFirst percentiles `json:"oursFirst"`
	Raw       percentiles `json:"raw"`
	// Plain are the same writes with no operator, once before ours and once after: a raw
	// watch posting each change once per subscriber (plainFanOut), for fan-outs only.
	Plain []plainPhase `json:"plain,omitempty"`
	// StatusWrites are the status PATCHes the API server served from the first write until
	// the deliveries were counted, Seconds later.
	StatusWrites float64 `json:"statusWrites"`
	// CheckpointWrites are the ConfigMap writes (creates and updates) besides the creates.
	CheckpointWrites float64 `json:"checkpointWrites"`
	Seconds          float64 `json:"seconds"`
	// Process is this whole process's CPU and garbage collection (operator, raw watch,
	// sink, writers) while the writes were timed.
	Process processUsage `json:"process"`
	// Expected deliveries (writes × subscriptions) and what arrived.
	Expected  int `json:"expected"`
	Delivered int `json:"delivered"`
	Unknown   int `json:"unknown"`
}

// runLatency: paced creates, each timed from just before its Create call to its arrival
// at the sink (ours, every delivery of the fan-out) and at a plain watch (raw) running at
// the same time on the same writes.
func runLatency(ctx context.Context, h *harness) ([]Row, any, error) {
	var rows []Row
	var details []latencyPhase
	for _, n := range h.opts.LatencySubs {
		// The plain floor runs before and after ours, and their mean counts (bracketed).
		var plain []plainPhase
		var err error
		if n > 1 {
			plain, err = h.plainLatencies(ctx, n, nil)
		}
		var p latencyPhase
		if err == nil {
			p, err = h.latency(ctx, latencyRun{prefix: "latency", subs: n})
		}
		if err == nil && n > 1 {
			p.Plain, err = h.plainLatencies(ctx, n, plain)
		}
		details = append(details, p)
		if err != nil {
			return rows, details, fmt.Errorf("%d subscriptions: %w", n, err)
		}
		h.logf("latency %d: p50 %.2f vs %.2f ms, p99 %.2f vs %.2f ms (first delivery p50 %.2f, p99 %.2f), %d/%d delivered",
			n, p.Ours.P50, p.Raw.P50, p.Ours.P99, p.Raw.P99, p.OursFirst.P50, p.OursFirst.P99, p.Delivered, p.Expected)
		label := "Latency, " + subs(n)
		id := "latency/" + strconv.Itoa(n) + "/"
		complete := p.Delivered == p.Expected
		// Issue 21's targets: one subscription adds at most 0.5 ms at p50 (and DESIGN's 1.1×
		// at p99); many stay within 1.3× raw at p50 and p99.
		p50 := newRow(id+"p50", label, "p50 write → sink", "ms", p.Ours.P50, p.Raw.P50, "raw").
			goal("≤ raw + 0.5 ms", p.Ours.P50 <= p.Raw.P50+0.5 && complete)
		p99 := newRow(id+"p99", label, "p99 write → sink", "ms", p.Ours.P99, p.Raw.P99, "raw").
			goal("≤ 1.1× raw", p.Ours.P99 <= 1.1*p.Raw.P99 && complete)
		if n > 1 {
			p50 = p50.goal("≤ 1.3× raw", p.Ours.P50 <= 1.3*p.Raw.P50 && complete)
			p99 = p99.goal("≤ 1.3× raw", p.Ours.P99 <= 1.3*p.Raw.P99 && complete)
			// Every write is n requests; the first shows the path without the queue behind it.
			p50 = p50.note("%d requests per write; the first delivery of each write p50 %s ms", n, trim(p.OursFirst.P50))
			p99 = p99.note("first delivery p99 %s ms", trim(p.OursFirst.P99))
		}
		switch {
		case !complete:
			p99 = p99.note("%d of %d delivered", p.Delivered, p.Expected)
		}
		rows = append(rows,
			p50,
			newRow(id+"p95", label, "p95 write → sink", "ms", p.Ours.P95, p.Raw.P95, "raw"),
			p99,
		)
		if n > 1 {
			// Counters alone may not write statuses faster than --status-counter-rate over
			// all subscriptions: busy ones once wrote one every 2 s each, 50/s here.
			rate := operator.DefaultStatusCounterRate
			rows = append(rows, newRow(id+"status-writes", label, "status writes/s while delivering", "/s",
				p.StatusWrites/p.Seconds, float64(p.Writes)/p.Seconds, "the writes watched").
				goal(fmt.Sprintf("≤ %g/s (--status-counter-rate)", rate), p.StatusWrites <= rate*p.Seconds+2).
				note("%.0f in %.1f s; checkpoint ConfigMap writes %.0f", p.StatusWrites, p.Seconds, p.CheckpointWrites))
		}
		if len(p.Plain) > 0 {
			// What the operator adds to the requests themselves: the same n requests per
			// write sent straight from a raw watch cost the same sink and CPU.
			p50s, p99s := figures(p.Plain, func(r plainPhase) float64 { return r.Plain.P50 }),
				figures(p.Plain, func(r plainPhase) float64 { return r.Plain.P99 })
			rows = append(rows,
				newRow(id+"p50-vs-plain", label, "p50 write → sink", "ms", p.Ours.P50, bracketed(p50s),
					plainBaseline).
					goal("≤ 1.1× plain", p.Ours.P50 <= 1.1*bracketed(p50s) && complete).
					note("plain before and after ours: %s ms", joinTrimmed(p50s)),
				newRow(id+"p99-vs-plain", label, "p99 write → sink", "ms", p.Ours.P99, bracketed(p99s),
					plainBaseline).
					goal("≤ 1.1× plain", p.Ours.P99 <= 1.1*bracketed(p99s) && complete).
					note("plain before and after ours: %s ms", joinTrimmed(p99s)))
			// The floor against raw in its own runs: whether anything that sends one request
			// per delivery can meet the 1.3×-raw target on this machine.
			rawP50s := figures(p.Plain, func(r plainPhase) float64 { return r.Raw.P50 })
			rows = append(rows, newRow(id+"plain-p50-vs-raw", label, "p50 write → sink, plain fan-out (no operator)",
				"ms", bracketed(p50s), bracketed(rawP50s), "raw in the same runs").
				note("the floor of the ≤ 1.3× raw target; raw in the plain runs %s ms", joinTrimmed(rawP50s)))
			// The CPU this process spent per delivery while the writes were timed: the sink
			// and the raw watch cost every run the same, so the difference is the operator's.
			plainCPU := figures(p.Plain, func(r plainPhase) float64 { return r.Process.microsPer(p.Expected) })
			plainGC := make([]string, len(p.Plain))
			for i, r := range p.Plain {
				plainGC[i] = strconv.FormatUint(r.Process.GCCycles, 10)
			}
			rows = append(rows, newRow(id+"cpu-per-delivery", label, "process CPU per delivery", "µs",
				p.Process.microsPer(p.Expected), bracketed(plainCPU), plainBaseline).
				note("sink, writers and raw watch included in both; plain runs %s µs; garbage collections: ours %d, plain %s",
					joinTrimmed(plainCPU), p.Process.GCCycles, strings.Join(plainGC, ", ")))
		}
	}
	return rows, details, nil
}

// latencyRun is one run of the latency machinery: subs subscriptions on the ConfigMaps of
// a fresh namespace, every delivery of theirs timed, and neighbours next to them on the
// same watch and sink, whose deliveries are not expected.
type latencyRun struct {
	prefix string
	subs   int
	// neighbours each add a subscription named neighbour-<i>, changed by the function,
	// Ready before the writes start.
	neighbours []func(*notifyv1.WatchSubscription)
	// inspect, when set, runs once the deliveries are counted, before the operator stops.
	inspect func(ctx context.Context, ns string) error
}

func (h *harness) latency(ctx context.Context, run latencyRun) (latencyPhase, error) {
	subs := run.subs
	interval := h.latencyInterval(subs)
	p := latencyPhase{Subscriptions: subs, Neighbours: len(run.neighbours), Writes: h.opts.LatencyWrites,
		Interval: interval.String(), Expected: h.opts.LatencyWrites * subs}
	ns, r, done, err := h.subscribedNamespaceWith(ctx, run.prefix, subs, run.neighbours)
	if err != nil {
		return p, err
	}
	defer done()

	before, err := h.apiWrites(ctx)
	if err != nil {
		return p, err
	}
	start := time.Now()
	rec, err := h.timedWrites(ctx, ns, fmt.Sprintf("%s-%d", run.prefix, subs), interval, p.Expected)
	if err != nil {
		return p, err
	}
	took := time.Since(start)
	after, err := h.apiWrites(ctx)
	if err != nil {
		return p, err
	}
	p.StatusWrites, p.Seconds = after.status-before.status, took.Seconds()
	// The ConfigMaps written besides the creates themselves: the operator's checkpoints.
	p.CheckpointWrites = after.configMaps - before.configMaps - float64(p.Writes)
	rec.mu.Lock()
	p.Ours, p.Raw, p.Delivered, p.Unknown = summarize(rec.ours), summarize(rec.raw), len(rec.ours), rec.unknown
	rec.mu.Unlock()
	p.OursFirst = summarize(rec.firstDeliveries())
	p.Process = rec.usage

	if run.inspect != nil {
		if err := run.inspect(ctx, ns); err != nil {
			return p, err
		}
	}
	return p, h.unsubscribe(ctx, ns, r)
}

// apiWriteCounts are the status PATCHes and ConfigMap writes the API server has served.
type apiWriteCounts struct{ status, configMaps float64 }

func (h *harness) apiWrites(ctx context.Context) (apiWriteCounts, error) {
	status, err := h.apiMetric(ctx, "apiserver_request_total", statusWrites)
	if err != nil {
		return apiWriteCounts{}, err
	}
	configMaps, err := h.apiMetric(ctx, "apiserver_request_total", configMapWrites...)
	return apiWriteCounts{status: status, configMaps: configMaps}, err
}

// timedWrites makes the latency writes in ns, paced by interval, with a raw watch on them,
// and records every arrival at the sink until expected have come (or they stop coming),
// and the process's CPU and garbage collections meanwhile. name names the window's CPU
// profile.
func (h *harness) timedWrites(ctx context.Context, ns, name string, interval time.Duration,
	expected int) (*latencyRecorder, error) {
	rec := newLatencyRecorder(h.opts.LatencyWrites)
	h.sink.handle(rec.ourArrival)
	defer h.sink.handle(nil)
	raw, err := h.startRawWatch(ctx, configMaps, ns, func(u *unstructured.Unstructured, at time.Duration) {
		rec.rawArrival(u.GetName(), at)
	})
	if err != nil {
		return nil, err
	}
	defer raw.stop()
	defer h.windowProfile(name)()
	before := readUsage()
	defer func() { rec.usage = usageSince(before) }()

	if _, err := h.create(ctx, writes{ns: ns, prefix: "o", count: h.opts.LatencyWrites, workers: 8,
		bytes: h.opts.ObjectBytes, interval: interval, started: rec.started}); err != nil {
		return nil, err
	}
	waitCount(ctx, expected+h.opts.LatencyWrites, 10*time.Second, func() int { o, w := rec.counts(); return o + w })
	return rec, nil
}

// plainPhase is one run of latency's floor: the deliveries, and the raw watch meanwhile.
type plainPhase struct {
	Plain percentiles `json:"plain"`
	// First is the first delivery of each write.
	First percentiles `json:"first"`
	Raw   percentiles `json:"raw"`
	// Process is as in latencyPhase, with the plain fan-out in place of the operator.
	Process processUsage `json:"process"`
}

// figures picks one figure of each run.
func figures[R any](runs []R, figure func(R) float64) []float64 {
	out := make([]float64, len(runs))
	for i, r := range runs {
		out[i] = figure(r)
	}
	return out
}

// plainBaseline names the figure bracketed gives.
const plainBaseline = "plain fan-out (no operator), mean of the runs before and after"

// bracketed is the floor of a figure measured once before ours and once after: their
// mean, which cancels a drift of the machine's pace over the three. The faster of the two,
// counted before, favoured the floor by noise alone (at c9035c1 the run before was the
// faster in one run of two).
func bracketed(runs []float64) float64 {
	var sum float64
	for _, v := range runs {
		sum += v
	}
	return sum / float64(max(len(runs), 1))
}

func joinTrimmed(values []float64) string {
	parts := make([]string, len(values))
	for i, v := range values {
		parts[i] = trim(v)
	}
	return strings.Join(parts, ", ")
}

// plainLatencies runs latency's floor once more after the runs before: the same writes with
// no operator, a plain fan-out sending each change once per subscriber (startPlainFanOut).
func (h *harness) plainLatencies(ctx context.Context, subs int, before []plainPhase) ([]plainPhase, error) {
	var rec *latencyRecorder
	if err := h.withPlainFanOut(ctx, "latency-plain", subs, func(ns string) (err error) {
		rec, err = h.timedWrites(ctx, ns, fmt.Sprintf("latency-%d-plain-%d", subs, len(before)+1),
			h.latencyInterval(subs), subs*h.opts.LatencyWrites)
		return err
	}); err != nil {
		return before, err
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if want := subs * h.opts.LatencyWrites; len(rec.ours) != want {
		return before, fmt.Errorf("plain fan-out: %d of %d delivered", len(rec.ours), want)
	}
	run := plainPhase{Plain: summarize(rec.ours), First: summarize(rec.firstDeliveries()), Raw: summarize(rec.raw),
		Process: rec.usage}
	h.logf("latency %d, plain fan-out: p50 %.2f vs %.2f ms, p99 %.2f vs %.2f ms (first delivery p50 %.2f, p99 %.2f)",
		subs, run.Plain.P50, run.Raw.P50, run.Plain.P99, run.Raw.P99, run.First.P50, run.First.P99)
	return append(before, run), nil
}

// latencyInterval spaces the writes more the more subscribers each has: each write should
// find an idle pipeline, or this would measure queueing, which throughput covers.
func (h *harness) latencyInterval(subs int) time.Duration {
	return h.opts.LatencyInterval * time.Duration(max(1, subs/25))
}

// subscribedNamespace makes a namespace, starts an operator and waits until subs
// subscriptions on the namespace's ConfigMaps (changed by tweaks) are Ready. done stops the operator and
// deletes the ConfigMaps; on error, what was started is already undone.
func (h *harness) subscribedNamespace(ctx context.Context, prefix string, subs int,
	tweaks ...func(*notifyv1.WatchSubscription)) (ns string, r *runningOperator, done func(), err error) {
	return h.subscribedNamespaceWith(ctx, prefix, subs, nil, tweaks...)
}

// subscribedNamespaceWith is subscribedNamespace with neighbours: one more subscription on
// the same ConfigMaps and sink for each, named neighbour-<i> and changed by it (not by tweaks).
func (h *harness) subscribedNamespaceWith(ctx context.Context, prefix string, subs int,
	neighbours []func(*notifyv1.WatchSubscription),
	tweaks ...func(*notifyv1.WatchSubscription)) (ns string, r *runningOperator, done func(), err error) {
	if ns, err = h.namespace(ctx, prefix); err != nil {
		return "", nil, nil, err
	}
	deleteObjects := func() { _ = h.deleteConfigMaps(context.WithoutCancel(ctx), ns) }
	if r, err = h.startOperator(ctx); err != nil {
		deleteObjects()
		return "", nil, nil, err
	}
	done = func() {
		h.stopOperator(r)
		deleteObjects()
	}
	err = h.createSubscriptions(ctx, ns, subs, all(configMaps), tweaks...)
	for i, neighbour := range neighbours {
		if err != nil {
			break
		}
		ws := subscription(ns, "neighbour-"+strconv.Itoa(i), configMaps, h.sink.URL)
		neighbour(ws)
		err = h.k8s.Create(ctx, ws)
	}
	if err == nil {
		err = h.waitReady(ctx, ns, subs+len(neighbours), readyTimeout(subs+len(neighbours)))
	}
	if err != nil {
		done()
		return "", nil, nil, err
	}
	return ns, r, done, nil
}
