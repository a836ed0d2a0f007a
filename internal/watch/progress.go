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
	open map[string]map[uint64]openEvent
}

type openEvent struct {
	count      int
	observedAt time.Time
}

// NewProgress returns an empty tracker.
func NewProgress() *Progress { return &Progress{open: map[string]map[uint64]openEvent{}} }

// tracked is the resourceVersion of an event checkpoints account for; events without a
// stream (initial events from a LIST), Resync events and non-numeric resourceVersions are
// not tracked.
func tracked(ev *event.Event) (uint64, bool) {
	return ev.StreamRV, ev.StreamRV != 0
}

// offered records ev as open.
func (p *Progress) offered(ev *event.Event) {
	rv, ok := tracked(ev)
	if !ok {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	stream := p.open[ev.Stream]
	if stream == nil {
		stream = map[uint64]openEvent{}
		p.open[ev.Stream] = stream
	}
	o := stream[rv]
	o.count++
	if o.observedAt.IsZero() {
		o.observedAt = ev.ObservedAt
	}
	stream[rv] = o
}

// Done marks ev as finished with (delivered, failed for good or dropped).
func (p *Progress) Done(ev *event.Event) {
	rv, ok := tracked(ev)
	if !ok {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	stream := p.open[ev.Stream]
	o, ok := stream[rv]
	if !ok {
		return
	}
	if o.count--; o.count > 0 {
		stream[rv] = o
		return
	}
	delete(stream, rv)
	if len(stream) == 0 {
		delete(p.open, ev.Stream)
	}
}

// oldestOpen is the smallest open resourceVersion of a stream and when it was observed.
func (p *Progress) oldestOpen(stream string) (uint64, time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var oldest uint64
	var at time.Time
	found := false
	for rv, o := range p.open[stream] {
		if !found || rv < oldest {
			oldest, at, found = rv, o.observedAt, true
		}
	}
	return oldest, at, found
}
