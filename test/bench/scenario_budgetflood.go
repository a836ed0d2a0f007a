package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/operator"
)

// floodDetails are the raw figures of the budget-flood scenario. Memory figures are the
// operator process's alone.
type floodDetails struct {
	Budget int64 `json:"budget"`
	// ContainerLimit is the memory limit of the container the operator process runs as in;
	// MemoryLimit its GOMEMLIMIT, 90% of it.
	ContainerLimit int64 `json:"containerLimit"`
	MemoryLimit    int64 `json:"memoryLimit"`
	Objects        int   `json:"objects"`
	ObjectBytes    int   `json:"objectBytes"`
	Changes        int   `json:"changes"`
	// WriteSeconds is how long the changes took to write; WriteRate the changes per second.
	WriteSeconds float64 `json:"writeSeconds"`
	WriteRate    float64 `json:"writeRate"`
	// Idle is a reading of the operator process with both subscriptions Ready, before the
	// changes; Settled one once the healthy subscription has delivered every change. Both
	// after forced collections.
	Idle    heap `json:"idle"`
	Settled heap `json:"settled"`
	// SettledRSSBeforeGC is the resident set just before the settled reading's collections.
	SettledRSSBeforeGC uint64 `json:"settledRSSBeforeGC"`
	// PeakRSS is the kernel's peak resident set (VmHWM) since the idle reading, when it
	// could be reset there (HWMReset), or PeakRSSSampled when that is larger or VmHWM
	// could not be reset.
	PeakRSS  uint64 `json:"peakRSS"`
	HWMReset bool   `json:"hwmReset"`
	// PeakRSSSampled is the largest resident set of readings every 100 ms, PeakAnonSampled
	// the largest anonymous part of it (RssAnon).
	PeakRSSSampled  uint64 `json:"peakRSSSampled"`
	PeakAnonSampled uint64 `json:"peakAnonSampled"`
	// PeakAccounted is the most the delivery memory budget counted as used, sampled every
	// millisecond; PeakHeapObjects the most heap in objects, sampled every 10 ms (garbage
	// not yet swept included).
	PeakAccounted   int64  `json:"peakAccounted"`
	PeakHeapObjects uint64 `json:"peakHeapObjects"`
	// AccountedAtEnd is the budget's use once the healthy subscription is done: the
	// flooding subscription's backlog.
	AccountedAtEnd int64 `json:"accountedAtEnd"`
	// HealthyDelivered counts the healthy subscription's deliveries at its sink; the rest
	// are the operator's counters.
	HealthyDelivered int     `json:"healthyDelivered"`
	HealthyObserved  float64 `json:"healthyObserved"`
	HealthyDropped   float64 `json:"healthyDropped"`
	FloodObserved    float64 `json:"floodObserved"`
	FloodDropped     float64 `json:"floodDropped"`
	FloodEvicted     float64 `json:"floodEvicted"`
	// DeliveredAfter is from the last change written to the healthy subscription's last
	// delivery.
	DeliveredAfter string `json:"deliveredAfter"`
	// Timeline has a reading a second during the changes.
	Timeline []floodSample `json:"timeline"`
}

type floodSample struct {
	Seconds   float64 `json:"seconds"`
	RSS       uint64  `json:"rss"`
	Accounted int64   `json:"accounted"`
	Delivered int64   `json:"delivered"`
}

// minContainerLimit keeps the quick run's tiny budget from setting a GOMEMLIMIT below what
// the idle operator needs, where the collector would run without pause.
const minContainerLimit = 64 << 20

// floodWriters write the changes: enough that the API server, not the writers' round trips,
// sets the pace.
const floodWriters = 16

// eventsPerBudget is the bound on RSS growth as a multiple of the budget: an event takes
// about three times its JSON size (what the budget counts) in memory.
const eventsPerBudget = 3

// runBudgetFlood: an operator process with a delivery memory budget, two subscriptions on
// the same ConfigMaps, one whose sink never answers and one whose sink does, and a flood of
// changes. The flooding subscription must give up its oldest events to keep the process
// within its budget, and the healthy one must lose none.
func runBudgetFlood(ctx context.Context, h *harness) ([]Row, any, error) {
	// The container limit a budget is the default of: a quarter of it.
	limit := max(4*h.opts.FloodBudget, minContainerLimit)
	d := floodDetails{Budget: h.opts.FloodBudget, ContainerLimit: limit, MemoryLimit: operator.RuntimeMemoryLimit(limit),
		Objects: h.opts.FloodObjects, ObjectBytes: h.opts.ObjectBytes, Changes: h.opts.FloodChanges}
	err := h.budgetFlood(ctx, &d)
	if err != nil {
		return nil, d, err
	}
	growth := func(rss uint64) float64 { return float64(int64(rss) - int64(d.Idle.RSS)) }
	label := fmt.Sprintf("Budget flood, %d changes, budget %s", d.Changes, format(float64(d.Budget), "bytes"))
	budget := float64(d.Budget)
	rssGoal := fmt.Sprintf("≤ %d× budget", eventsPerBudget)
	peak := newRow("budgetflood/rss-peak", label, "RSS growth over idle, at peak", "bytes", growth(d.PeakRSS), budget,
		"budget")
	peak = peak.goal(rssGoal, peak.Ours <= eventsPerBudget*budget).
		note("peak RSS %s (VmHWM), idle %s; container limit %s, GOMEMLIMIT %s", format(float64(d.PeakRSS), "bytes"),
			format(float64(d.Idle.RSS), "bytes"), format(float64(d.ContainerLimit), "bytes"),
			format(float64(d.MemoryLimit), "bytes"))
	if !d.HWMReset {
		peak = peak.note("VmHWM could not be reset: the largest of readings every 100 ms")
	}
	// Whether the pod survives the flood: past its limit the kernel first drops the pages it
	// can read again (the binary's), then kills the process for its anonymous memory.
	inLimit := newRow("budgetflood/rss-peak-vs-limit", label, "anonymous RSS at peak", "bytes",
		float64(d.PeakAnonSampled), float64(d.ContainerLimit), "container limit").
		goal("≤ container limit", d.PeakAnonSampled <= uint64(d.ContainerLimit)).
		note("RssAnon sampled every 100 ms; all RSS at peak %s; GOMEMLIMIT %s", format(float64(d.PeakRSS), "bytes"),
			format(float64(d.MemoryLimit), "bytes"))
	settled := newRow("budgetflood/rss-settled", label, "RSS growth over idle, settled (after GC)", "bytes",
		growth(d.Settled.RSS), budget, "budget")
	settled = settled.goal(rssGoal, settled.Ours <= eventsPerBudget*budget).
		note("heap growth %s; the flooding subscription still holds %s of events",
			format(float64(heapDelta(d.Idle, d.Settled)), "bytes"),
			format(float64(d.AccountedAtEnd), "bytes"))
	return []Row{
		newRow("budgetflood/healthy", label, "events delivered by the healthy subscription", "",
			float64(d.HealthyDelivered), float64(d.Changes), "changes").
			goal("all", d.HealthyDelivered == d.Changes).
			note("%.0f observed, %.0f dropped; delivered %s after the last write; writes %.0f/s", d.HealthyObserved,
				d.HealthyDropped, d.DeliveredAfter, d.WriteRate),
		newRow("budgetflood/dropped", label, "events dropped by the flooding subscription", "",
			d.FloodDropped, float64(d.Changes), "changes").
			note("%.0f of them evicted for the budget; %.0f observed", d.FloodEvicted, d.FloodObserved),
		newRow("budgetflood/accounted", label, "budget's accounted bytes at peak", "bytes",
			float64(d.PeakAccounted), budget, "budget").
			goal("≤ budget", d.PeakAccounted <= d.Budget).
			note("sampled every ms; heap in objects at most %s", format(float64(d.PeakHeapObjects), "bytes")),
		peak,
		inLimit,
		settled,
	}, d, nil
}

func (h *harness) budgetFlood(ctx context.Context, d *floodDetails) (err error) {
	ns, err := h.namespace(ctx, "budgetflood")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, h.deleteConfigMaps(context.WithoutCancel(ctx), ns)) }()
	// Checkpoints of its own: the process is killed, and later operators should not find them.
	checkpointNS, err := h.namespace(ctx, "budgetflood-operator")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, h.deleteConfigMaps(context.WithoutCancel(ctx), checkpointNS)) }()
	objects := writes{ns: ns, prefix: "f", count: d.Objects, workers: 16, bytes: d.ObjectBytes}
	if _, err := h.create(ctx, objects); err != nil {
		return err
	}

	dead, err := startSink()
	if err != nil {
		return err
	}
	release := dead.hold()
	p, err := h.startOperatorProcess(ctx, checkpointNS, d.Budget, d.ContainerLimit)
	if err != nil {
		release()
		dead.close()
		return err
	}
	defer func() {
		// The hanging request ends with the process; the sink can close after it.
		p.stop()
		release()
		dead.close()
		err = errors.Join(err, h.deleteSubscriptions(context.WithoutCancel(ctx), ns))
	}()

	queue := int32(100000)
	healthy := subscription(ns, "healthy", configMaps, h.sink.URL)
	healthy.Spec.Delivery = &notifyv1.DeliverySpec{MaxQueueSize: &queue}
	one, attempts := int32(1), int32(1)
	flooding := subscription(ns, "flooding", configMaps, dead.URL)
	flooding.Spec.Delivery = &notifyv1.DeliverySpec{MaxQueueSize: &queue, Parallelism: &one,
		Timeout: notifyv1.DurationOf(time.Hour), Retry: &notifyv1.RetryPolicy{MaxAttempts: &attempts}}
	for _, ws := range []*notifyv1.WatchSubscription{healthy, flooding} {
		if err := h.k8s.Create(ctx, ws); err != nil {
			return err
		}
	}
	if err := h.waitReady(ctx, ns, 2, time.Minute); err != nil {
		return fmt.Errorf("%w: %s", err, p.log.String())
	}

	if d.Idle, err = p.settled(ctx, h.opts.Settle, h.opts.HeapReadings); err != nil {
		return err
	}
	p.heapProfile(ctx, h, "budgetflood-idle")
	if d.HWMReset, err = p.resetPeaks(ctx); err != nil {
		return err
	}
	var delivered, last atomic.Int64
	prefix := "/api/v1/namespaces/" + ns + "/configmaps/"
	h.sink.handle(func(dl delivery) {
		if strings.HasPrefix(dl.Subject, prefix) {
			delivered.Add(1)
			last.Store(int64(dl.At))
		}
	})
	defer h.sink.handle(nil)

	h.logf("budgetflood: idle RSS %s; %d changes over %d ConfigMaps, budget %s, container limit %s",
		format(float64(d.Idle.RSS), "bytes"), d.Changes, d.Objects, format(float64(d.Budget), "bytes"),
		format(float64(d.ContainerLimit), "bytes"))
	stopSampling := h.sampleFlood(ctx, p, &delivered, d)
	w, err := h.update(ctx, ns, "f", d.Objects, d.Changes, floodWriters)
	if err != nil {
		stopSampling()
		return err
	}
	d.WriteSeconds = (w.Last - w.First).Seconds()
	d.WriteRate = float64(d.Changes) / d.WriteSeconds
	waitCount(ctx, d.Changes, 30*time.Second, func() int { return int(delivered.Load()) })
	stopSampling()
	h.sink.handle(nil)
	d.HealthyDelivered = int(delivered.Load())
	if end := time.Duration(last.Load()); end > w.Last {
		d.DeliveredAfter = (end - w.Last).Round(time.Millisecond).String()
	}
	d.PeakRSS = d.PeakRSSSampled
	if _, hwm := p.rss(); d.HWMReset {
		// VmHWM is the kernel's exact peak; its per-CPU counters can put it a few pages
		// below a sample.
		d.PeakRSS = max(hwm, d.PeakRSSSampled)
	}

	s, err := p.stats(ctx)
	if err != nil {
		return err
	}
	d.PeakAccounted, d.PeakHeapObjects, d.AccountedAtEnd = s.BudgetPeak, s.HeapObjectsPeak, s.BudgetUsed
	d.HealthyObserved = s.counter("dynamicnotifier_events_observed_total", ns, "healthy")
	d.HealthyDropped = s.counter("dynamicnotifier_events_dropped_total", ns, "healthy")
	d.FloodObserved = s.counter("dynamicnotifier_events_observed_total", ns, "flooding")
	d.FloodDropped = s.counter("dynamicnotifier_events_dropped_total", ns, "flooding")
	d.FloodEvicted = s.counter("dynamicnotifier_events_evicted_total", ns, "flooding")
	d.SettledRSSBeforeGC, _ = p.rss()
	if d.Settled, err = p.settled(ctx, h.opts.Settle, h.opts.HeapReadings); err != nil {
		return err
	}
	p.heapProfile(ctx, h, "budgetflood-settled")
	h.logf("budgetflood: %d of %d delivered by the healthy subscription (%.0f writes/s); "+
		"flooding dropped %.0f (%.0f evicted); "+
		"accounted at most %s; RSS idle %s, peak %s, settled %s (%s before GC)",
		d.HealthyDelivered, d.Changes, d.WriteRate, d.FloodDropped, d.FloodEvicted, format(float64(d.PeakAccounted), "bytes"),
		format(float64(d.Idle.RSS), "bytes"), format(float64(d.PeakRSS), "bytes"), format(float64(d.Settled.RSS), "bytes"),
		format(float64(d.SettledRSSBeforeGC), "bytes"))
	return nil
}

// settled is the operator process's reading after settle and forced collections: the
// smallest of readings readings 200 ms apart, as settledHeap takes them in process.
func (p *operatorProcess) settled(ctx context.Context, settle time.Duration, readings int) (heap, error) {
	sleep(ctx, settle)
	best, err := p.heap(ctx)
	for range readings - 1 {
		if err != nil {
			break
		}
		sleep(ctx, 200*time.Millisecond)
		var hp heap
		if hp, err = p.heap(ctx); err == nil && hp.HeapInuse < best.HeapInuse {
			best = hp
		}
	}
	return best, err
}

// sampleFlood reads the operator process's RSS every 100 ms (the largest goes to
// d.PeakRSSSampled) and adds a reading a second to d.Timeline, until the returned function
// is called.
func (h *harness) sampleFlood(ctx context.Context, p *operatorProcess, delivered *atomic.Int64,
	d *floodDetails) (stop func()) {
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
			rss, _ := p.rss()
			d.PeakRSSSampled = max(d.PeakRSSSampled, rss)
			d.PeakAnonSampled = max(d.PeakAnonSampled, p.anonRSS())
			if i%10 != 0 {
				continue
			}
			sample := floodSample{Seconds: time.Since(start).Seconds(), RSS: rss, Delivered: delivered.Load()}
			if s, err := p.stats(sctx); err == nil {
				sample.Accounted = s.BudgetUsed
			}
			d.Timeline = append(d.Timeline, sample)
			if i%100 == 0 {
				h.logf("budgetflood: %.0f s, RSS %s, accounted %s, %d delivered", sample.Seconds,
					format(float64(rss), "bytes"), format(float64(sample.Accounted), "bytes"), sample.Delivered)
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}
