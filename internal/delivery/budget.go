package delivery

import (
	"sync"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// MemoryBudget bounds the bytes of the events that every pipeline of the process holds for
// delivery together: one tenant with a dead sink and a busy resource must not fill the
// memory every other tenant runs in. Pipelines use what is free; once the budget is full,
// the pipeline holding the most beyond its fair share (the budget divided by the pipelines
// holding events) drops its oldest queued events until the new one fits. A pipeline within
// its share never loses an event to another's flood. Safe for concurrent use.
//
// Bytes are counted as event.Event.Size, about the size of an object as JSON; an event
// queued by several subscriptions is counted by each.
type MemoryBudget struct {
	limit int64

	mu   sync.Mutex
	used int64
	held map[*Pipeline]int64
}

// NewMemoryBudget returns a budget of limit bytes; nil (no budget) when limit <= 0.
func NewMemoryBudget(limit int64) *MemoryBudget {
	if limit <= 0 {
		return nil
	}
	return &MemoryBudget{limit: limit, held: map[*Pipeline]int64{}}
}

// Limit is the budget in bytes.
func (b *MemoryBudget) Limit() int64 { return b.limit }

// Used is how many bytes pipelines hold now.
func (b *MemoryBudget) Used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// admit counts ev's bytes for p, first making room when the budget is full. False when ev
// itself had to go: p is over its share and has nothing older to give up.
func (b *MemoryBudget) admit(p *Pipeline, ev *event.Event) bool {
	size := int64(ev.Size())
	for {
		b.mu.Lock()
		if b.used+size <= b.limit {
			b.used += size
			b.held[p] += size
			b.mu.Unlock()
			return true
		}
		victim, excess := b.mostOverShare(p, size)
		b.mu.Unlock()
		switch {
		case victim == nil:
			// Nobody is over their share: the flood is everyone's. Take it, a little over.
			b.mu.Lock()
			b.used += size
			b.held[p] += size
			b.mu.Unlock()
			return true
		case victim.evictOldest(min(excess, b.usedOver(size))) > 0:
			continue // room was made; try again
		case victim == p:
			return false // p is over its share with nothing older queued: this event goes
		default:
			// The victim's events are all in flight: nothing to take from it now.
			b.mu.Lock()
			b.used += size
			b.held[p] += size
			b.mu.Unlock()
			return true
		}
	}
}

// usedOver is how many bytes must go for size more to fit.
func (b *MemoryBudget) usedOver(size int64) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(b.used+size-b.limit, 1)
}

// mostOverShare is the pipeline holding the most beyond its fair share, counting size for p,
// and by how much; nil when none is over. Called with mu held.
func (b *MemoryBudget) mostOverShare(p *Pipeline, size int64) (*Pipeline, int64) {
	holders := int64(len(b.held))
	if _, ok := b.held[p]; !ok {
		holders++
	}
	share := b.limit / max(holders, 1)
	var victim *Pipeline
	var most int64
	for q, held := range b.held {
		if q == p {
			held += size
		}
		if over := held - share; over > most {
			victim, most = q, over
		}
	}
	if _, ok := b.held[p]; !ok && size-share > most {
		victim, most = p, size-share
	}
	return victim, most
}

// release gives back the bytes of an event p finished with.
func (b *MemoryBudget) release(p *Pipeline, ev *event.Event) {
	size := int64(ev.Size())
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= size
	if b.held[p] -= size; b.held[p] <= 0 {
		delete(b.held, p)
	}
}

// forget gives back everything p holds (it stopped, or handed its events over).
func (b *MemoryBudget) forget(p *Pipeline) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= b.held[p]
	delete(b.held, p)
}

// swap accounts merged in place of replaced (see holding): the object's latest state takes
// the room of the event it joined, without evicting anything, since nothing new is queued.
func (b *MemoryBudget) swap(p *Pipeline, replaced, merged *event.Event) {
	delta := int64(merged.Size() - replaced.Size())
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used += delta
	b.held[p] += delta
}
