package controller

import (
	"context"
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/delivery"
	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

// runningSubscription is what one subscription has running: its delivery pipeline and its places in the
// shared informers' fan-outs.
type runningSubscription struct {
	uid        types.UID
	generation int64
	keys       []watch.Key
	// sinkFingerprint changes when a Secret the sinks read changes.
	sinkFingerprint string
	pipeline        *delivery.Pipeline
	// sinks are the pipeline's, closed once it has stopped.
	sinks     openedSinks
	queueSize int
	// progress outlives a spec change, so events the replaced pipeline still delivers keep
	// holding the checkpoint back.
	progress *watch.Progress
	handles  map[watch.Key]*watch.Handle
	started  time.Time
}

// handle is the subscriber's place in the stream of key; nil when it has none.
func (c *runningSubscription) handle(key watch.Key) *watch.Handle {
	if c == nil {
		return nil
	}
	return c.handles[key]
}

// runningSubscriptions tracks every subscription's running parts, its counters, and which informers it
// uses so informer state changes reach the right subscriptions.
type runningSubscriptions struct {
	mu    sync.Mutex
	subs  map[types.NamespacedName]*runningSubscription
	stats map[types.NamespacedName]*statsEntry // by subscription, outliving its pipelines
	byKey map[watch.Key]map[types.NamespacedName]bool
}

type statsEntry struct {
	uid      types.UID
	counters *counters
}

func newRunningSubscriptions() *runningSubscriptions {
	return &runningSubscriptions{subs: map[types.NamespacedName]*runningSubscription{}, stats: map[types.NamespacedName]*statsEntry{},
		byKey: map[watch.Key]map[types.NamespacedName]bool{}}
}

// current returns what runs for nn, and whether it matches this uid, generation and keys.
func (w *runningSubscriptions) current(nn types.NamespacedName, uid types.UID, generation int64, keys []watch.Key, sinkFingerprint string) (*runningSubscription, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c, ok := w.subs[nn]
	if !ok {
		return nil, false
	}
	return c, c.uid == uid && c.generation == generation && slices.Equal(c.keys, keys) &&
		c.sinkFingerprint == sinkFingerprint
}

// running returns what runs for nn if it belongs to the subscription of this uid.
func (w *runningSubscriptions) get(nn types.NamespacedName, uid types.UID) *runningSubscription {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c, ok := w.subs[nn]; ok && c.uid == uid {
		return c
	}
	return nil
}

// uidOf is the uid of the subscription running or counted under nn.
func (w *runningSubscriptions) uidOf(nn types.NamespacedName) (types.UID, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c, ok := w.subs[nn]; ok {
		return c.uid, true
	}
	if e, ok := w.stats[nn]; ok {
		return e.uid, true
	}
	return "", false
}

// countersFor returns the counters of a subscription, starting from its status after a
// restart.
func (w *runningSubscriptions) countersFor(ws *notifyv1.WatchSubscription) *counters {
	nn := types.NamespacedName{Namespace: ws.Namespace, Name: ws.Name}
	w.mu.Lock()
	defer w.mu.Unlock()
	if e, ok := w.stats[nn]; ok && e.uid == ws.UID {
		return e.counters
	}
	s := delivery.NewStats(delivery.Snapshot{Observed: ws.Status.EventsObserved, Delivered: ws.Status.EventsDelivered,
		Failed: ws.Status.EventsFailed, Dropped: ws.Status.EventsDropped, Coalesced: ws.Status.EventsCoalesced})
	c := &counters{delivery: s}
	w.stats[nn] = &statsEntry{uid: ws.UID, counters: c}
	return c
}

// peekCounters returns the counters if the subscription has any running or kept.
func (w *runningSubscriptions) peekCounters(nn types.NamespacedName, uid types.UID) (*counters, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	e, ok := w.stats[nn]
	if !ok || e.uid != uid {
		return nil, false
	}
	return e.counters, true
}

// replace records c as what runs for nn in the place of old, whose subscribers c has
// already taken over where both watch the same stream. It removes old's subscribers from
// the streams c does not watch, then c's held pipeline takes over what old's had not
// delivered yet, ahead of its own events, and starts.
func (w *runningSubscriptions) replace(nn types.NamespacedName, c, old *runningSubscription) {
	w.mu.Lock()
	if prev, ok := w.subs[nn]; ok {
		w.unindex(nn, prev)
	}
	w.subs[nn] = c
	w.index(nn, c)
	w.mu.Unlock()
	if old == nil {
		return
	}
	for k, h := range old.handles {
		if _, kept := c.handles[k]; !kept {
			h.Unsubscribe()
		}
	}
	// The old pipeline's attempt in flight may take a moment to answer: hand over aside,
	// the new pipeline holds its events meanwhile. The old pipeline has stopped when
	// TakeOver returns: its sinks are closed then, not under an attempt in flight.
	go func() {
		c.pipeline.TakeOver(old.pipeline)
		old.sinks.close()
	}()
}

func (w *runningSubscriptions) index(nn types.NamespacedName, c *runningSubscription) {
	for _, k := range c.keys {
		if w.byKey[k] == nil {
			w.byKey[k] = map[types.NamespacedName]bool{}
		}
		w.byKey[k][nn] = true
	}
}

// teardown stops what runs for nn: after it returns nothing more is delivered.
// forget also drops the counters (the subscription is gone).
func (w *runningSubscriptions) teardown(nn types.NamespacedName, forget bool) {
	w.mu.Lock()
	c, ok := w.subs[nn]
	if ok {
		delete(w.subs, nn)
		w.unindex(nn, c)
	}
	if forget {
		delete(w.stats, nn)
	}
	w.mu.Unlock()
	if !ok {
		return
	}
	for _, h := range c.handles {
		h.Unsubscribe()
	}
	c.pipeline.Stop()
	c.sinks.close()
}

func (w *runningSubscriptions) unindex(nn types.NamespacedName, c *runningSubscription) {
	for _, k := range c.keys {
		delete(w.byKey[k], nn)
		if len(w.byKey[k]) == 0 {
			delete(w.byKey, k)
		}
	}
}

// drain waits, for every running pipeline at once, until it has finished with what it
// holds or ctx ends.
func (w *runningSubscriptions) drain(ctx context.Context) (pipelines, drained int) {
	w.mu.Lock()
	running := make([]*delivery.Pipeline, 0, len(w.subs))
	for _, c := range w.subs {
		running = append(running, c.pipeline)
	}
	w.mu.Unlock()
	results := make(chan bool, len(running))
	for _, p := range running {
		go func() { results <- p.Drain(ctx) }()
	}
	for range running {
		if <-results {
			drained++
		}
	}
	return len(running), drained
}

// subscribersOf lists the subscriptions using the informer for key.
func (w *runningSubscriptions) subscribersOf(key watch.Key) []types.NamespacedName {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]types.NamespacedName, 0, len(w.byKey[key]))
	for nn := range w.byKey[key] {
		out = append(out, nn)
	}
	return out
}
