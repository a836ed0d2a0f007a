package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

// throughputPhase is one run of creates back to back, as fast as the API server takes them
// from Writers goroutines, received by Subscriptions subscriptions on the same objects and
// by one plain watch running at the same time.
type throughputPhase struct {
	Subscriptions int `json:"subscriptions"`
	// ContentMode of the subscriptions' webhook: binary (one request per delivery) or batched.
	ContentMode string `json:"contentMode"`
	Writes      int    `json:"writes"`
	Writers     int    `json:"writers"`
	// WriteRate is what the API server accepted: writes per second from the first call to
	// the last response.
	WriteRate float64 `json:"writeRate"`
	// RawSeconds is from the first write until the raw watch saw the last create;
	// OursSeconds until the sink received the last delivery.
	RawSeconds  float64 `json:"rawSeconds"`
	OursSeconds float64 `json:"oursSeconds"`
	// RawRate is creates per second the raw watch observed, OursRate deliveries per second
	// the sink received, both from the first write to their last arrival.
	RawRate  float64 `json:"rawRate"`
	OursRate float64 `json:"oursRate"`
	// Expected deliveries (writes × subscriptions), what arrived, and what the raw watch saw.
	Expected  int     `json:"expected"`
	Delivered int     `json:"delivered"`
	Observed  int     `json:"observed"`
	Dropped   float64 `json:"dropped"`
	Failed    float64 `json:"failed"`
	// SinkConnections is how many connections the sink accepted during the writes, and
	// SinkRequests how many requests it served.
	SinkConnections int64 `json:"sinkConnections"`
	SinkRequests    int64 `json:"sinkRequests"`
	// Process is this whole process's CPU and garbage collection (operator or plain
	// fan-out, raw watch, sink, writers) from the first write to the last arrival.
	Process processUsage `json:"process"`
	// Lag is each delivery's arrival at the sink minus the raw watch's arrival of the same
	// create. LagFirstTenth and LagLastTenth are its medians over the first and the last
	// tenth of the writes: a pipeline that keeps up has the same lag at the end as at the start.
	Lag           percentiles `json:"lag"`
	LagFirstTenth float64     `json:"lagFirstTenthMs"`
	LagLastTenth  float64     `json:"lagLastTenthMs"`
}

// runThroughput: first one subscription under a long run of creates (the sustained rate,
// against the rate a plain watch observes), then the DESIGN fan-out: many subscriptions
// on the same objects under a short burst, once with one request per delivery and once
// with the batched content mode.
func runThroughput(ctx context.Context, h *harness) ([]Row, any, error) {
	var phases []throughputPhase
	sustained, err := h.throughput(ctx, 1, h.opts.ThroughputWrites, notifyv1.ContentModeBinary)
	phases = append(phases, sustained)
	if err != nil {
		return nil, phases, fmt.Errorf("1 subscription: %w", err)
	}
	// The plain floor runs before and after ours, and their mean counts (bracketed).
	plainBefore, err := h.plainThroughput(ctx, h.opts.FanOutSubs, h.opts.FanOutWrites)
	phases = append(phases, plainBefore)
	if err != nil {
		return nil, phases, fmt.Errorf("%d subscriptions, plain: %w", h.opts.FanOutSubs, err)
	}
	fanOut, err := h.throughput(ctx, h.opts.FanOutSubs, h.opts.FanOutWrites, notifyv1.ContentModeBinary)
	phases = append(phases, fanOut)
	if err != nil {
		return nil, phases, fmt.Errorf("%d subscriptions: %w", h.opts.FanOutSubs, err)
	}
	plainAfter, err := h.plainThroughput(ctx, h.opts.FanOutSubs, h.opts.FanOutWrites)
	phases = append(phases, plainAfter)
	if err != nil {
		return nil, phases, fmt.Errorf("%d subscriptions, plain: %w", h.opts.FanOutSubs, err)
	}
	plainRuns := []throughputPhase{plainBefore, plainAfter}
	plain := bracketed(figures(plainRuns, func(p throughputPhase) float64 { return p.OursSeconds }))
	fanOutBatched, err := h.throughput(ctx, h.opts.FanOutSubs, h.opts.FanOutWrites, notifyv1.ContentModeBatched)
	phases = append(phases, fanOutBatched)
	if err != nil {
		return nil, phases, fmt.Errorf("%d subscriptions, batched: %w", h.opts.FanOutSubs, err)
	}

	rate := newRow("throughput/rate", "Throughput, 1 sub", "events/s to the sink", "/s",
		sustained.OursRate, sustained.RawRate, "raw").
		goal("≥ 0.95× raw, all delivered", sustained.complete() && sustained.OursRate >= 0.95*sustained.RawRate).
		note("%s; lag %s", sustained.delivered(), sustained.lagNote())

	rows := append([]Row{rate}, fanOutRows("throughput/fanout", "", fanOut)...)
	// What the operator adds to the requests themselves: the same requests sent straight
	// from a raw watch, on the same sink and CPU.
	label := fmt.Sprintf("Fan-out, %s × %d creates", subs(fanOut.Subscriptions), fanOut.Writes)
	rows = append(rows, newRow("throughput/fanout/time-vs-plain", label, "first write → last delivery", "s",
		fanOut.OursSeconds, plain, plainBaseline).
		goal("≤ 1.1× plain", fanOut.complete() && fanOut.OursSeconds <= 1.1*plain).
		note("plain before and after ours: %.2f s and %.2f s, raw saw the last create after %.2f s and %.2f s",
			plainBefore.OursSeconds, plainAfter.OursSeconds, plainBefore.RawSeconds, plainAfter.RawSeconds))
	// The floor against raw in its own runs: whether a fan-out that sends one request per
	// delivery can meet the 1.1×-raw target on this machine.
	rows = append(rows, newRow("throughput/fanout/plain-vs-raw", label,
		"first write → last delivery, plain fan-out (no operator)", "s",
		plain, bracketed(figures(plainRuns, func(p throughputPhase) float64 { return p.RawSeconds })),
		"raw (last create seen) in the same runs").
		note("the floor of the ≤ 1.1× raw target"))
	// The CPU this process spent per delivery, from the first write to the last arrival:
	// the sink, the writers and the raw watch cost every run the same.
	perDelivery := func(p throughputPhase) float64 { return p.Process.microsPer(p.Expected) }
	rows = append(rows, newRow("throughput/fanout/cpu-per-delivery", label, "process CPU per delivery", "µs",
		perDelivery(fanOut), bracketed(figures(plainRuns, perDelivery)), plainBaseline).
		note("sink, writers and raw watch included in both; plain runs %s and %s µs", trim(perDelivery(plainBefore)),
			trim(perDelivery(plainAfter))))
	return append(rows, fanOutRows("throughput/fanout-batched", ", batched", fanOutBatched)...), phases, nil
}

// fanOutRows are the DESIGN fan-out targets for one phase.
func fanOutRows(id, mode string, p throughputPhase) []Row {
	label := fmt.Sprintf("Fan-out, %s × %d creates%s", subs(p.Subscriptions), p.Writes, mode)
	// A fan-out that keeps up delivers what the raw watch observes once per subscription.
	// It cannot go faster than the API server takes the writes, so the 20,000/s target
	// is measured on a backlog (runDrain).
	deliveries := newRow(id+"/rate", label, "deliveries/s to the sink", "/s",
		p.OursRate, p.RawRate*float64(p.Subscriptions), fmt.Sprintf("raw × %d", p.Subscriptions)).
		goal("keeps up: ≥ 0.95× raw × 50, all delivered", p.complete() &&
			p.OursRate >= 0.95*p.RawRate*float64(p.Subscriptions)).
		note("%s; writes %.0f/s; %d requests", p.delivered(), p.WriteRate, p.SinkRequests)
	took := newRow(id+"/time", label, "first write → last delivery", "s",
		p.OursSeconds, p.RawSeconds, "raw (last create seen)").
		goal("≤ 1.1× raw", p.complete() && p.OursSeconds <= 1.1*p.RawSeconds).
		note("lag %s", p.lagNote())
	return []Row{deliveries, took}
}

func (p throughputPhase) complete() bool { return p.Delivered == p.Expected && p.Observed == p.Writes }

func (p throughputPhase) delivered() string {
	s := fmt.Sprintf("%d of %d delivered", p.Delivered, p.Expected)
	if p.Dropped > 0 || p.Failed > 0 {
		s += fmt.Sprintf(", %.0f dropped, %.0f failed", p.Dropped, p.Failed)
	}
	return s
}

func (p throughputPhase) lagNote() string {
	return fmt.Sprintf("behind raw p50 %s / p99 %s, first tenth %s, last tenth %s", trim(p.Lag.P50)+" ms",
		trim(p.Lag.P99)+" ms", trim(p.LagFirstTenth)+" ms", trim(p.LagLastTenth)+" ms")
}

func (h *harness) throughput(ctx context.Context, nSubs, nWrites int, mode notifyv1.ContentMode) (
	throughputPhase, error) {
	p := throughputPhase{Subscriptions: nSubs, Writes: nWrites, Writers: h.opts.Writers, Expected: nSubs * nWrites,
		ContentMode: string(mode)}
	ns, r, done, err := h.subscribedNamespace(ctx, "throughput", nSubs, func(ws *notifyv1.WatchSubscription) {
		ws.Spec.Sink.Webhook.ContentMode = mode
	})
	if err != nil {
		return p, err
	}
	defer done()

	if err := h.timeFanOut(ctx, ns, &p); err != nil {
		return p, err
	}
	if p.Dropped, err = operatorCounter("dynamicnotifier_events_dropped_total", ns); err != nil {
		return p, err
	}
	if p.Failed, err = operatorCounter("dynamicnotifier_events_failed_total", ns); err != nil {
		return p, err
	}
	h.logf("throughput %d × %d %s: %d requests; writes %.0f/s; raw %.0f/s, last seen after %.2f s; "+
		"ours %.0f/s, last after %.2f s; %s; lag %s; %d sink connections", nSubs, nWrites, p.ContentMode,
		p.SinkRequests, p.WriteRate, p.RawRate,
		p.RawSeconds, p.OursRate, p.OursSeconds, p.delivered(), p.lagNote(), p.SinkConnections)

	return p, h.unsubscribe(ctx, ns, r)
}

// timeFanOut makes p's creates in ns with a raw watch on them and fills p with what
// arrived at the sink, until every expected delivery came or they stopped coming.
func (h *harness) timeFanOut(ctx context.Context, ns string, p *throughputPhase) error {
	log := newArrivalLog(p.Writes)
	h.sink.handle(func(dl delivery) { log.ours(dl.Subject, dl.At) })
	defer h.sink.handle(nil)
	rw, err := h.startRawWatch(ctx, configMaps, ns, func(u *unstructured.Unstructured, at time.Duration) {
		log.raw(u.GetName(), at)
	})
	if err != nil {
		return err
	}
	defer rw.stop()

	connsBefore, requestsBefore := h.sink.conns.Load(), h.sink.requests.Load()
	defer h.windowProfile(fmt.Sprintf("throughput-%d-%s-%s", p.Subscriptions, p.ContentMode, ns))()
	usage := readUsage()
	w, err := h.create(ctx, writes{ns: ns, prefix: "t", count: p.Writes, workers: h.opts.Writers,
		bytes: h.opts.ObjectBytes})
	if err != nil {
		return err
	}
	waitCount(ctx, p.Expected+p.Writes, 10*time.Second, func() int { o, r := log.counts(); return o + r })
	p.Process = usageSince(usage)
	h.sink.handle(nil)
	p.SinkConnections = h.sink.conns.Load() - connsBefore
	p.SinkRequests = h.sink.requests.Load() - requestsBefore
	p.WriteRate = float64(p.Writes) / (w.Last - w.First).Seconds()
	log.summarize(p, w.First)
	return nil
}

// plainThroughput is the fan-out's floor: the same creates with no operator, a plain
// fan-out sending each once per subscriber (startPlainFanOut).
func (h *harness) plainThroughput(ctx context.Context, nSubs, nWrites int) (throughputPhase, error) {
	p := throughputPhase{Subscriptions: nSubs, Writes: nWrites, Writers: h.opts.Writers, Expected: nSubs * nWrites,
		ContentMode: "plain"}
	err := h.withPlainFanOut(ctx, "throughput-plain", nSubs, func(ns string) error { return h.timeFanOut(ctx, ns, &p) })
	if err == nil && !p.complete() {
		err = fmt.Errorf("plain fan-out: %s", p.delivered())
	}
	h.logf("throughput %d × %d plain: %d requests; writes %.0f/s; raw last seen after %.2f s; "+
		"plain last after %.2f s; lag %s", nSubs, nWrites, p.SinkRequests, p.WriteRate, p.RawSeconds, p.OursSeconds,
		p.lagNote())
	return p, err
}

// arrivalLog records when each create reached the raw watch and each delivery the sink.
type arrivalLog struct {
	rawAt []atomic.Int64

	mu       sync.Mutex
	deliv    []indexedArrival
	observed int
	unknown  int
}

type indexedArrival struct {
	i  int
	at time.Duration
}

func newArrivalLog(writes int) *arrivalLog { return &arrivalLog{rawAt: make([]atomic.Int64, writes)} }

func (l *arrivalLog) raw(name string, at time.Duration) {
	i, ok := indexOf(name)
	l.mu.Lock()
	defer l.mu.Unlock()
	if !ok || i < 0 || i >= len(l.rawAt) || !l.rawAt[i].CompareAndSwap(0, int64(at)) {
		l.unknown++
		return
	}
	l.observed++
}

func (l *arrivalLog) ours(subject string, at time.Duration) {
	i, ok := indexOf(subject)
	l.mu.Lock()
	defer l.mu.Unlock()
	if !ok || i < 0 || i >= len(l.rawAt) {
		l.unknown++
		return
	}
	l.deliv = append(l.deliv, indexedArrival{i, at})
}

func (l *arrivalLog) counts() (ours, raw int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.deliv), l.observed
}

// summarize fills the phase's counts, rates, times and lags; start is the first write.
func (l *arrivalLog) summarize(p *throughputPhase, start time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p.Delivered, p.Observed = len(l.deliv), l.observed
	var lastRaw, lastOurs time.Duration
	for i := range l.rawAt {
		lastRaw = max(lastRaw, time.Duration(l.rawAt[i].Load()))
	}
	lags := make([]time.Duration, 0, len(l.deliv))
	tenth := max(len(l.rawAt)/10, 1)
	var first, last []time.Duration
	for _, d := range l.deliv {
		lastOurs = max(lastOurs, d.at)
		rawAt := time.Duration(l.rawAt[d.i].Load())
		if rawAt == 0 {
			continue
		}
		lag := d.at - rawAt
		lags = append(lags, lag)
		switch {
		case d.i < tenth:
			first = append(first, lag)
		case d.i >= len(l.rawAt)-tenth:
			last = append(last, lag)
		}
	}
	if lastRaw > start {
		p.RawSeconds = (lastRaw - start).Seconds()
		p.RawRate = float64(p.Observed) / p.RawSeconds
	}
	if lastOurs > start {
		p.OursSeconds = (lastOurs - start).Seconds()
		p.OursRate = float64(p.Delivered) / p.OursSeconds
	}
	p.Lag = summarize(lags)
	p.LagFirstTenth, p.LagLastTenth = median(first), median(last)
}

func median(s []time.Duration) float64 {
	if len(s) == 0 {
		return 0
	}
	s = slices.Clone(s)
	slices.Sort(s)
	return ms(s[len(s)/2])
}
