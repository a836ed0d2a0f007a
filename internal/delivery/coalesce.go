package delivery

import (
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// RateLimit bounds how fast a pipeline hands events to its lanes.
type RateLimit struct {
	// PerSecond is the sustained rate; Burst how many may go at once.
	PerSecond float64
	Burst     int
}

// holding is the stage before the lanes of a subscription that coalesces or is rate
// limited. Each object's events wait here, in order: for the coalescing window after the
// first of them, and for the rate limiter. While an object's events wait, an update to it
// is merged into the last of them (event.Merge), so a burst becomes one event with the
// latest state and a rate limit merges what it holds back instead of dropping it. A
// deletion is never merged: it waits behind the object's held event and goes right after
// it. Objects are released in the order their first held event arrived (the window is the
// same for all), so one object's burst delays no other object beyond the rate limit.
type holding struct {
	window  time.Duration
	limiter *rate.Limiter // nil: no rate limit

	mu      sync.Mutex
	byKey   map[string]*heldObject
	order   []*heldObject // by due time, which is arrival order
	running bool          // the release loop runs
	flush   bool          // draining: release everything now
	wake    chan struct{}
}

// heldObject is one object's waiting events, oldest first; only the last may absorb an
// update.
type heldObject struct {
	key    string
	events []*event.Event
	due    time.Time
}

func newHolding(window time.Duration, limit *RateLimit) *holding {
	if window <= 0 && limit == nil {
		return nil
	}
	h := &holding{window: max(window, 0), byKey: map[string]*heldObject{}, wake: make(chan struct{}, 1)}
	if limit != nil {
		h.limiter = rate.NewLimiter(rate.Limit(limit.PerSecond), max(limit.Burst, 1))
	}
	return h
}

// absorb merges ev into the last held event of its object when it can; it returns the
// event replaced and the merged one, or nils.
func (h *holding) absorb(ev *event.Event) (replaced, merged *event.Event) {
	if ev.Type == event.Resync {
		return nil, nil
	}
	key := ev.ObjectKey()
	h.mu.Lock()
	defer h.mu.Unlock()
	o := h.byKey[key]
	if o == nil {
		return nil, nil
	}
	last := o.events[len(o.events)-1]
	if !event.Mergeable(last, ev) {
		return nil, nil
	}
	merged = event.Merge(last, ev)
	o.events[len(o.events)-1] = merged
	return last, merged
}

// add holds ev behind its object's held events, or as the first of a new held object; it
// tells whether the release loop must be started.
func (h *holding) add(ev *event.Event, now time.Time) (start bool) {
	key := ev.ObjectKey()
	if ev.Type == event.Resync {
		key = "\x00resync:" + ev.Stream // no object: held on its own, in order
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if o := h.byKey[key]; o != nil {
		o.events = append(o.events, ev)
		return false
	}
	o := &heldObject{key: key, events: []*event.Event{ev}, due: now.Add(h.window)}
	h.byKey[key] = o
	h.order = append(h.order, o)
	if h.running {
		return false
	}
	h.running = true
	return true
}

// next is the object to release next and how long until it is due; ok is false (and the
// loop marked stopped) when nothing is held.
func (h *holding) next(now time.Time) (o *heldObject, wait time.Duration, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.order) == 0 {
		h.running = false
		return nil, 0, false
	}
	o = h.order[0]
	if h.flush {
		return o, 0, true
	}
	return o, o.due.Sub(now), true
}

// take removes o, the first held object, and returns its events: from now on a change to
// the object is held anew.
func (h *holding) take(o *heldObject) []*event.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.order) == 0 || h.order[0] != o {
		return nil // taken by a handover meanwhile
	}
	h.order[0] = nil
	h.order = h.order[1:]
	if h.byKey[o.key] == o {
		delete(h.byKey, o.key)
	}
	return o.events
}

// drain empties the stage, returning every held event in order, for a pipeline taking
// over.
func (h *holding) drain() []*event.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*event.Event
	for _, o := range h.order {
		out = append(out, o.events...)
	}
	h.order, h.byKey = nil, map[string]*heldObject{}
	return out
}

// flushNow makes the release loop hand everything over at once, window and rate limit
// aside: the operator is stopping, and the events should be delivered while it still can.
func (h *holding) flushNow() {
	h.mu.Lock()
	h.flush = true
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *holding) flushing() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.flush
}

// release hands held objects to the lanes as they fall due and the rate limit allows,
// until nothing is held or the pipeline stops taking events. One goroutine per pipeline,
// only while something is held.
func (p *Pipeline) release() {
	h := p.hold
	for {
		o, wait, ok := h.next(time.Now())
		if !ok {
			return
		}
		if wait > 0 && !p.pause(wait) {
			h.mu.Lock()
			h.running = false
			h.mu.Unlock()
			return
		}
		if wait > 0 {
			continue // woken early (a flush), or due now: look again
		}
		if h.limiter != nil && !h.flushing() {
			r := h.limiter.ReserveN(time.Now(), min(len(o.events), h.limiter.Burst()))
			if d := r.Delay(); d > 0 && !p.pause(d) {
				r.Cancel()
				h.mu.Lock()
				h.running = false
				h.mu.Unlock()
				return
			}
		}
		for _, ev := range h.take(o) {
			p.enqueue(ev)
		}
	}
}

// pause waits d, or less when a flush wakes it; false when the pipeline stops taking
// events first.
func (p *Pipeline) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-p.hold.wake:
	case <-p.stopping:
		return false
	case <-p.ctx.Done():
		return false
	}
	return true
}
