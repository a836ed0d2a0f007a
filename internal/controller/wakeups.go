package controller

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// wakeups asks the controller's own work queue for reconciles that no API object brings: at
// once when an informer's state changes or delivery health flips, and at most once per
// interval when only counters moved, so a busy subscription writes its status every couple
// of seconds and an idle one never. Counter-only wakeups of all subscriptions together are
// also spaced by a rate: a hundred busy subscriptions would otherwise write fifty statuses
// a second, more than the changes they watch, and every one costs the API server more than
// a create. Their counters then lag longer; metrics stay current.
type wakeups struct {
	interval time.Duration
	pacer    *pacer
	queue    atomic.Pointer[workqueue.TypedRateLimitingInterface[reconcile.Request]]
	// later marks the subscriptions with a reconcile already due within the interval, so a
	// change per event costs one atomic swap, not a queue operation.
	later sync.Map // types.NamespacedName -> *atomic.Bool
}

// newWakeups: counter-only wakeups per subscription at most once per interval, and at most
// rate per second over all (no overall bound when rate <= 0).
func newWakeups(interval time.Duration, rate float64) *wakeups {
	return &wakeups{interval: interval, pacer: newPacer(rate)}
}

// source binds the wakeups to the controller's queue when the controller starts.
func (w *wakeups) source() source.Source {
	return source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		w.queue.Store(&q)
		return nil
	})
}

// Now asks for a reconcile of nn as soon as possible.
func (w *wakeups) Now(nn types.NamespacedName) {
	if q := w.queue.Load(); q != nil {
		(*q).Add(reconcile.Request{NamespacedName: nn})
	}
}

// Soon asks for a reconcile of nn within the interval. Cheap enough to call per event.
func (w *wakeups) Soon(nn types.NamespacedName) {
	q := w.queue.Load()
	if q == nil {
		return
	}
	flag, ok := w.later.Load(nn)
	if !ok {
		flag, _ = w.later.LoadOrStore(nn, &atomic.Bool{}) // once per subscription, not per event
	}
	if flag.(*atomic.Bool).CompareAndSwap(false, true) {
		(*q).AddAfter(reconcile.Request{NamespacedName: nn}, w.pacer.delay(time.Now(), w.interval))
	}
}

// reconciling is told when a reconcile of nn starts: later changes need a reconcile again.
func (w *wakeups) reconciling(nn types.NamespacedName) {
	if flag, ok := w.later.Load(nn); ok {
		flag.(*atomic.Bool).Store(false)
	}
}

// forget drops what is kept for a deleted subscription.
func (w *wakeups) forget(nn types.NamespacedName) { w.later.Delete(nn) }

// pacer hands out times at least spacing apart, each at least a given wait from the
// moment it is asked for: a rate limit that delays instead of refusing.
type pacer struct {
	spacing time.Duration
	// last is the latest time handed out, in Unix nanoseconds.
	last atomic.Int64
}

// newPacer spaces rate times per second; rate <= 0 spaces nothing.
func newPacer(rate float64) *pacer {
	if rate <= 0 {
		return &pacer{}
	}
	return &pacer{spacing: time.Duration(float64(time.Second) / rate)}
}

// delay reserves the next time at least wait after now and returns how far off it is.
func (p *pacer) delay(now time.Time, wait time.Duration) time.Duration {
	if p.spacing <= 0 {
		return wait
	}
	at := now.Add(wait).UnixNano()
	for {
		last := p.last.Load()
		slot := max(at, last+int64(p.spacing))
		if p.last.CompareAndSwap(last, slot) {
			return time.Duration(slot - now.UnixNano())
		}
	}
}
