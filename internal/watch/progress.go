package watch

import (
	"sync"
	"time"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// Progress tracks which of one subscriber's events are still queued or in flight, per
// stream, so a checkpoint never covers an event that has not been finished with. Its Done
// method is what the delivery pipeline calls. Safe for concurrent use.
type Progress struct {
	mu   sync.Mutex
	open map[openKey]openEvent
	// pins count a stream's open events that have no place in it: initial events (no
	// checkpoint is taken until they are all finished with, so a crash sends them again)
	// and resync events (the checkpoint stays where the subscriber resumed from until the
	// resync is delivered, so a crash resyncs again).
	pins map[string]pin
}

type pin struct{ initial, resync int }

// openKey is one tracked event. Events with StreamRV 0 (initial events from a LIST, Resync
// events, non-numeric resourceVersions) are not tracked. One flat map, so an event finished
// before the next arrives allocates nothing.
type openKey struct {
	stream string
	rv     uint64
}

type openEvent struct {
	count      int
	observedAt time.Time
}

// NewProgress returns an empty tracker.
func NewProgress() *Progress { return &Progress{open: map[openKey]openEvent{}, pins: map[string]pin{}} }

// offered records ev as open.
func (p *Progress) offered(ev *event.Event) {
	if ev.StreamRV == 0 {
		p.pin(ev, 1)
		return
	}
	k := openKey{ev.Stream, ev.StreamRV}
	p.mu.Lock()
	defer p.mu.Unlock()
	o := p.open[k]
	o.count++
	if o.observedAt.IsZero() {
		o.observedAt = ev.ObservedAt
	}
	p.open[k] = o
}

// Done marks ev as finished with (delivered, failed for good or dropped).
func (p *Progress) Done(ev *event.Event) {
	if ev.StreamRV == 0 {
		p.pin(ev, -1)
		return
	}
	k := openKey{ev.Stream, ev.StreamRV}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch o, ok := p.open[k]; {
	case !ok:
	case o.count > 1:
		o.count--
		p.open[k] = o
	default:
		delete(p.open, k)
	}
}

// oldestOpen is the smallest open resourceVersion of a stream and when it was observed.
func (p *Progress) oldestOpen(stream string) (uint64, time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var oldest uint64
	var at time.Time
	found := false
	for k, o := range p.open {
		if k.stream == stream && (!found || k.rv < oldest) {
			oldest, at, found = k.rv, o.observedAt, true
		}
	}
	return oldest, at, found
}

// pin counts an initial or resync event of a stream in (delta 1) or out (-1).
func (p *Progress) pin(ev *event.Event, delta int) {
	if ev.Stream == "" || !ev.Initial && ev.Type != event.Resync {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	pn := p.pins[ev.Stream]
	if ev.Initial {
		pn.initial += delta
	} else {
		pn.resync += delta
	}
	if pn == (pin{}) {
		delete(p.pins, ev.Stream)
	} else {
		p.pins[ev.Stream] = pn
	}
}

// pinned tells whether a stream has initial or resync events still open.
func (p *Progress) pinned(stream string) (initial, resync bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pn := p.pins[stream]
	return pn.initial > 0, pn.resync > 0
}
