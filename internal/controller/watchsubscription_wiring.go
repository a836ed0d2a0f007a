package controller

import (
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/delivery"
	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

// wired is what one subscription has running: its delivery pipeline and its places in the
// shared informers' fan-outs.
type wired struct {
	uid        types.UID
	generation int64
	keys       []watch.Key
	// sinkFingerprint changes when a Secret the sinks read changes.
	sinkFingerprint string
	pipeline        *delivery.Pipeline
	// progress outlives a rewiring, so events the replaced pipeline still delivers keep
	// holding the checkpoint back.
	progress *watch.Progress
	// replaces is the pipeline this wiring's pipeline took over; nil for a fresh start.
	replaces    *delivery.Pipeline
	unsubscribe []func()
	started     time.Time
}

// wiring tracks every subscription's running parts, its counters, and which informers it
// uses so informer state changes reach the right subscriptions.
type wiring struct {
	mu    sync.Mutex
	subs  map[types.NamespacedName]*wired
	stats map[types.NamespacedName]*statsEntry
	byKey map[watch.Key]map[types.NamespacedName]bool
}

type statsEntry struct {
	uid   types.UID
	stats *delivery.Stats
}

func newWiring() *wiring {
	return &wiring{subs: map[types.NamespacedName]*wired{}, stats: map[types.NamespacedName]*statsEntry{},
		byKey: map[watch.Key]map[types.NamespacedName]bool{}}
}

// current returns what runs for nn, and whether it matches this uid, generation and keys.
func (w *wiring) current(nn types.NamespacedName, uid types.UID, generation int64, keys []watch.Key, sinkFingerprint string) (*wired, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c, ok := w.subs[nn]
	if !ok {
		return nil, false
	}
	return c, c.uid == uid && c.generation == generation && slices.Equal(c.keys, keys) &&
		c.sinkFingerprint == sinkFingerprint
}

// uidOf is the uid of the subscription wired or counted under nn.
func (w *wiring) uidOf(nn types.NamespacedName) (types.UID, bool) {
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

// statsFor returns the counters of a subscription, starting from its status after a restart.
func (w *wiring) statsFor(ws *notifyv1.WatchSubscription) *delivery.Stats {
	nn := types.NamespacedName{Namespace: ws.Namespace, Name: ws.Name}
	w.mu.Lock()
	defer w.mu.Unlock()
	if e, ok := w.stats[nn]; ok && e.uid == ws.UID {
		return e.stats
	}
	s := delivery.NewStats(ws.Status.EventsObserved, ws.Status.EventsDelivered, ws.Status.EventsFailed, ws.Status.EventsDropped)
	w.stats[nn] = &statsEntry{uid: ws.UID, stats: s}
	return s
}

// peekStats returns the counters if the subscription has any running or kept.
func (w *wiring) peekStats(nn types.NamespacedName, uid types.UID) (*delivery.Stats, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	e, ok := w.stats[nn]
	if !ok || e.uid != uid {
		return nil, false
	}
	return e.stats, true
}

// replace records c as what runs for nn and unsubscribes what ran before. The new wiring
// is subscribed before the old one leaves, so a shared informer is not restarted and no
// change falls between the two; then c's held pipeline takes over what the old one had
// not delivered yet, ahead of its own events, and starts.
func (w *wiring) replace(nn types.NamespacedName, c *wired) {
	w.teardownLocked(nn, false, func() {
		w.subs[nn] = c
		w.index(nn, c)
	})
	if c.replaces != nil {
		c.pipeline.Release(c.replaces)
		c.replaces = nil // handed over: let the old pipeline go
	}
}

func (w *wiring) index(nn types.NamespacedName, c *wired) {
	for _, k := range c.keys {
		if w.byKey[k] == nil {
			w.byKey[k] = map[types.NamespacedName]bool{}
		}
		w.byKey[k][nn] = true
	}
}

// teardown stops what runs for nn: after it returns nothing more is delivered.
// forget also drops the counters (the subscription is gone).
func (w *wiring) teardown(nn types.NamespacedName, forget bool) {
	w.teardownLocked(nn, forget, func() {})
}

// teardownLocked unlinks the wiring of nn, runs then under the same lock, and stops the
// unlinked wiring outside it. A stopped pipeline keeps what it had not finished with, so a
// new wiring's Release can still take it over.
func (w *wiring) teardownLocked(nn types.NamespacedName, forget bool, then func()) {
	w.mu.Lock()
	c, ok := w.subs[nn]
	delete(w.subs, nn)
	if ok {
		for _, k := range c.keys {
			delete(w.byKey[k], nn)
			if len(w.byKey[k]) == 0 {
				delete(w.byKey, k)
			}
		}
	}
	if forget {
		delete(w.stats, nn)
	}
	then()
	w.mu.Unlock()
	if !ok {
		return
	}
	for _, unsubscribe := range c.unsubscribe {
		unsubscribe()
	}
	c.pipeline.Stop()
}

// subscribersOf lists the subscriptions using the informer for key.
func (w *wiring) subscribersOf(key watch.Key) []types.NamespacedName {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]types.NamespacedName, 0, len(w.byKey[key]))
	for nn := range w.byKey[key] {
		out = append(out, nn)
	}
	return out
}
