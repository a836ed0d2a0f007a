package watch

import (
	"context"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/filter"
)

type subscriber struct {
	Subscriber
	ctx    context.Context
	cancel context.CancelFunc

	// Guarded by informer.mu.
	catchingUp bool
	buffer     overflowBuffer
	floor      uint64 // events at or below this resourceVersion were in the initial LIST
	// resumeFrom: replayed changes at or below it are not for this subscriber (its
	// checkpoint, or where the stream was when it joined).
	resumeFrom uint64
	// point is the checkpoint it resumed from; zero when it did not resume.
	point Point
}

func newSubscriber(ctx context.Context, cancel context.CancelFunc, sub Subscriber) *subscriber {
	return &subscriber{Subscriber: sub, ctx: ctx, cancel: cancel, catchingUp: sub.SendInitialEvents,
		buffer: newOverflowBuffer(catchUpBufferLimit)}
}

func (s *subscriber) resumed() bool { return s.point.Stream != "" }

// group is subscribers whose filters prefilter alike. The fan-out runs only the cheap part
// of filters (Filter.Prefilter), under the informer's lock; CEL expressions run in each
// subscription's delivery workers, so a costly one cannot stall the watch.
type group struct {
	filter *filter.Filter
	subs   []*subscriber
}

// regroup rebuilds the filter index. Called with mu held whenever subs changes.
func (i *informer) regroup() {
	bySig := map[string]*group{}
	groups := make([]*group, 0, len(i.groups))
	for _, s := range i.subs {
		sig := s.Filter.Signature()
		g := bySig[sig]
		if g == nil {
			g = &group{filter: s.Filter}
			groups = append(groups, g)
			bySig[sig] = g
		}
		g.subs = append(g.subs, s)
	}
	i.groups = groups
}

// add joins sub. stale is a checkpoint the informer can no longer serve (its resume window
// closed): the subscriber is told so with a Resync event.
func (i *informer) add(sub Subscriber, stale *Point) *subscriber {
	ctx, cancel := context.WithCancel(i.reg.ctx)
	s := newSubscriber(ctx, cancel, sub)
	i.mu.Lock()
	if old, ok := i.subs[sub.ID]; ok {
		old.cancel()
		i.forgetOld(old)
	}
	var point *Point
	if i.resume != nil && sub.Checkpoint != "" {
		if p, ok := i.resume.waiting[sub.Checkpoint]; ok {
			point = &p
		}
	}
	switch {
	case point != nil:
		// Its initial events went out in an earlier life; it resumes instead.
		s.catchingUp, s.point = false, *point
		s.resumeFrom, _ = parseRV(point.ResourceVersion)
	case stale != nil:
		s.catchingUp, s.point = false, *stale
		s.resumeFrom = max(i.listRV, i.seen)
	case i.synced:
		s.resumeFrom = max(i.listRV, i.seen)
	default:
		s.resumeFrom = notJoinedYet
	}
	i.subs[sub.ID] = s
	i.regroup()
	if sub.Checkpoint != "" && i.synced {
		i.reg.checkpointSoon()
	}
	if point != nil {
		i.joinResume(s)
	} else if stale != nil {
		i.offerResync(s, ResyncCheckpointUnavailable, stale.ResourceVersion)
	}
	if s.needsOld() {
		i.holdOld()
	}
	// A subscriber that resumes had its initial events in the run that first subscribed.
	catchUp := s.catchingUp
	i.mu.Unlock()
	if catchUp {
		i.reg.wg.Go(func() { i.catchUp(s) })
	}
	return s
}

// replace puts sub in old's place in one step: it goes on from old's position in the
// stream (and resume state), and no change goes to both. Initial events are sent only if
// sub asks for them. Called with the registry lock held.
func (i *informer) replace(old *subscriber, sub Subscriber) *subscriber {
	ctx, cancel := context.WithCancel(i.reg.ctx)
	s := newSubscriber(ctx, cancel, sub)
	i.mu.Lock()
	if i.subs[old.ID] == old {
		delete(i.subs, old.ID)
		s.resumeFrom, s.floor, s.point = old.resumeFrom, old.floor, old.point
		if !sub.SendInitialEvents && old.catchingUp {
			// Its live events waited for an initial list that is no longer wanted.
			for _, ev := range old.buffer.events {
				s.receive(ev)
			}
		}
		i.forgetOld(old)
	} else {
		s.resumeFrom = max(i.listRV, i.seen)
		if !i.synced {
			s.resumeFrom = notJoinedYet
		}
	}
	old.cancel()
	if prev, ok := i.subs[sub.ID]; ok && prev != old {
		prev.cancel()
		i.forgetOld(prev)
	}
	i.subs[sub.ID] = s
	i.regroup()
	if s.needsOld() {
		i.holdOld()
	}
	// A subscriber that resumes had its initial events in the run that first subscribed.
	catchUp := s.catchingUp
	i.mu.Unlock()
	if catchUp {
		i.reg.wg.Go(func() { i.catchUp(s) })
	}
	return s
}

func (i *informer) remove(s *subscriber) int {
	s.cancel()
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.subs[s.ID] == s {
		delete(i.subs, s.ID)
		i.regroup()
		i.forgetOld(s)
	}
	return len(i.subs)
}

// forgetOld stops keeping old objects when the last subscriber needing them leaves.
func (i *informer) forgetOld(s *subscriber) {
	if s.needsOld() {
		i.releaseOld()
	}
}

// fanOut hands ev to every matching subscriber. Called with mu held; never blocks.
func (i *informer) fanOut(ev *event.Event) {
	objLabels := filter.Labels(ev.Object)
	for _, g := range i.groups {
		if g.filter != nil && !g.filter.Prefilter(ev, objLabels) {
			continue
		}
		for _, s := range g.subs {
			i.offerTo(s, ev)
		}
	}
	i.keepForWaiting(ev)
}

// offerIfMatching hands ev to s if s wants it. Called with mu held.
func (i *informer) offerIfMatching(s *subscriber, ev *event.Event) {
	if s.Filter != nil && !s.Filter.Prefilter(ev, filter.Labels(ev.Object)) {
		return
	}
	i.offerTo(s, ev)
}

// offerTo hands a matching ev to s, unless s has it already. Called with mu held.
func (i *informer) offerTo(s *subscriber, ev *event.Event) {
	if ev.Replayed && ev.StreamRV != 0 && ev.StreamRV <= s.resumeFrom {
		return // it had this change before the restart, or joined after it
	}
	if s.catchingUp {
		s.buffer.add(ev)
		return
	}
	if s.floor != 0 {
		if ev.StreamRV != 0 && ev.StreamRV <= s.floor {
			return // already sent from the initial LIST
		}
		s.floor = 0 // watch events arrive in order: later ones are all newer
	}
	s.receive(ev)
}

// receive records ev as open for checkpoints, then hands it to the Receiver.
func (s *subscriber) receive(ev *event.Event) {
	if s.Progress != nil {
		s.Progress.offered(ev)
	}
	s.Receiver.Offer(ev)
}
