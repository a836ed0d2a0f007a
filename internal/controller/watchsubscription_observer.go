package controller

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"

	"github.com/dynamic-notifier/dynamic-notifier/internal/delivery"
	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/metrics"
	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

// counters are what a subscription's status reports. They outlive its pipelines: a spec
// change rebuilds the pipeline and keeps counting.
type counters struct {
	delivery *delivery.Stats

	// queued is the pipeline's queue depth, as it last reported it.
	queued atomic.Int64

	mu             sync.Mutex
	lastResync     time.Time
	overBudget     int64
	lastOverBudget time.Time
}

// countersSnapshot is a consistent copy of the counters.
type countersSnapshot struct {
	delivery.Snapshot
	LastResyncTime time.Time
	// FilterOverBudget counts the changes whose filter cost more than its budget (they
	// were not delivered); LastOverBudget is when that last happened.
	FilterOverBudget int64
	LastOverBudget   time.Time
	// Queued is the queue depth: events waiting for delivery or in flight.
	Queued int64
}

func (c *counters) snapshot() countersSnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return countersSnapshot{Snapshot: c.delivery.Snapshot(), LastResyncTime: c.lastResync,
		FilterOverBudget: c.overBudget, LastOverBudget: c.lastOverBudget, Queued: c.queued.Load()}
}

func (c *counters) resynced() {
	c.mu.Lock()
	c.lastResync = time.Now()
	c.mu.Unlock()
}

// filterOverBudget counts a change whose filter cost more than its budget, and tells
// whether it is the first in recentWindow (the Ready condition changes).
func (c *counters) filterOverBudget() bool {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	recent, _ := recently(c.lastOverBudget, now)
	c.overBudget++
	c.lastOverBudget = now
	return !recent
}

// OverBudgetRecently tells whether the filter exceeded its cost budget within the last
// minute, and how long until that stops being recent.
func (s countersSnapshot) OverBudgetRecently(now time.Time) (bool, time.Duration) {
	return recently(s.LastOverBudget, now)
}

// recentWindow is how long a filter over budget keeps a subscription from Ready.
const recentWindow = time.Minute

// recently tells whether at is within recentWindow of now, and for how long still.
func recently(at, now time.Time) (bool, time.Duration) {
	if at.IsZero() {
		return false, 0
	}
	left := recentWindow - now.Sub(at)
	return left > 0, left
}

// observer is what the controller hears from one subscription's pipeline: it feeds the
// status counters, the metrics, the status wake-ups (at once when delivery health flips or
// events are dropped, within the status interval otherwise) and the checkpoint progress.
type observer struct {
	nn       types.NamespacedName
	counters *counters
	metrics  *metrics.Subscription
	progress *watch.Progress
	wakeups  *wakeups
	log      logr.Logger
}

var _ delivery.Observer = (*observer)(nil)

func (o *observer) Observed() {
	o.counters.delivery.Observed()
	o.metrics.Observed()
	o.wakeups.Soon(o.nn)
}

func (o *observer) Attempted(n int, took time.Duration, err error) {
	flipped := o.counters.delivery.Attempted(n, err)
	if err == nil {
		o.metrics.Delivered(n, took)
	}
	switch {
	case flipped && err != nil:
		o.log.Info("Delivery failing", "error", err.Error())
		o.wakeups.Now(o.nn)
	case flipped:
		o.wakeups.Now(o.nn)
	case err == nil:
		o.wakeups.Soon(o.nn)
	}
}

// Accepted records the event's latency, from the change to the sink's answer.
func (o *observer) Accepted(ev *event.Event, at time.Time) {
	if !ev.ObservedAt.IsZero() {
		o.metrics.Latency(at.Sub(ev.ObservedAt))
	}
}

func (o *observer) Failed(reason string) {
	o.counters.delivery.Failed()
	o.metrics.Failed(reason)
	o.wakeups.Soon(o.nn)
}

func (o *observer) DeadLettered() {
	o.counters.delivery.DeadLettered()
	o.metrics.DeadLettered()
}

func (o *observer) Dropped(evicted bool) {
	o.counters.delivery.Dropped(evicted)
	o.metrics.Dropped(evicted)
	o.wakeups.Now(o.nn)
}

func (o *observer) Coalesced() {
	o.counters.delivery.Coalesced()
	o.metrics.Coalesced()
	o.wakeups.Soon(o.nn)
}

func (o *observer) QueueDepth(n int) {
	o.counters.queued.Store(int64(n))
	o.metrics.QueueDepth(n)
	if n == 0 {
		// The last status write may have seen the queue before its last event left; an
		// idle subscription must not show events queued.
		o.wakeups.Soon(o.nn)
	}
}

func (o *observer) Done(ev *event.Event) { o.progress.Done(ev) }
