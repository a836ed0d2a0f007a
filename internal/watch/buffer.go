package watch

import "github.com/dynamic-notifier/dynamic-notifier/internal/event"

// overflowBuffer keeps events for someone who cannot take them yet, up to a limit. Past
// it, it lets them all go and remembers that it overflowed: whoever reads it then has to
// catch up another way (list again, or resync) instead of getting a stream with a hole.
type overflowBuffer struct {
	limit      int
	events     []*event.Event
	overflowed bool
}

func newOverflowBuffer(limit int) overflowBuffer { return overflowBuffer{limit: limit} }

func (b *overflowBuffer) add(ev *event.Event) {
	switch {
	case b.overflowed:
	case len(b.events) >= b.limit:
		b.events, b.overflowed = nil, true
	default:
		b.events = append(b.events, ev)
	}
}

// reset empties the buffer and forgets that it overflowed.
func (b *overflowBuffer) reset() { b.events, b.overflowed = nil, false }
