// Package delivery moves one subscription's events from the watch fan-out to its sink:
// a bounded queue that never blocks the informer, lanes that keep each object's events in
// order while different objects go in parallel, retries with backoff, a dead-letter sink,
// and the counters its status reports. It knows nothing about informers.
package delivery

import (
	"context"
	"maps"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

// Defaults of zero Options, the API's (see notifyv1).
const (
	DefaultTimeout      = notifyv1.DefaultTimeout
	DefaultMaxAttempts  = notifyv1.DefaultMaxAttempts
	DefaultBackoff      = notifyv1.DefaultBackoff
	DefaultMaxBackoff   = notifyv1.DefaultMaxBackoff
	DefaultQueueSize    = notifyv1.DefaultMaxQueueSize
	DefaultParallelism  = notifyv1.DefaultParallelism
	deadLetterAttempts  = 3
	droppedRecentlyWait = time.Minute
)

// CoalescedExtension is the CloudEvents extension attribute that tells how many changes an
// event stands for when several were merged into it.
const CoalescedExtension = "coalesced"

// MaxBatchBytes bounds a batched request: the events of a batch go in requests of at most
// about 1 MiB (their data and attributes), though an event larger than that goes on its own.
const MaxBatchBytes = 1 << 20

// Retry is the retry policy.
type Retry struct {
	MaxAttempts         int
	Backoff, MaxBackoff time.Duration
}

// Options configure a pipeline. Zero values take the defaults above.
type Options struct {
	Sink sink.Sink
	// DeadLetter receives events that failed for good; nil drops them.
	DeadLetter sink.Sink
	// Source is the CloudEvents source of every event: the subscription's API path.
	Source      string
	QueueSize   int
	Parallelism int
	Timeout     time.Duration
	Retry       Retry
	// Observer hears what happens to each event; nil hears nothing.
	Observer Observer
	Log      logr.Logger
	// Shape encodes an event's data for this subscription; nil sends the shared encoding.
	// It returns the data's content type too ("" means application/json).
	Shape func(*event.Event) (data []byte, contentType string, err error)
	// Filter, when set, decides in the lane whether a queued change is delivered at all:
	// a subscription's CEL expression, too costly to run in the informer's fan-out. Only
	// changes it keeps count as observed. Initial events (filtered when listed) and Resync
	// events skip it.
	Filter func(*event.Event) bool
	// Held keeps the workers from starting until TakeOver: events offered meanwhile wait.
	Held bool
	// Budget, when set, bounds the bytes held for delivery across the process (see
	// MemoryBudget); events over this pipeline's share are dropped, oldest first.
	Budget *MemoryBudget
	// CoalesceWindow, when set, holds each object's events for this long after the first,
	// merging its updates meanwhile into one event with the latest state (see holding).
	CoalesceWindow time.Duration
	// RateLimit, when set, bounds how fast events go to the lanes; what it holds back is
	// merged per object instead of dropped.
	RateLimit *RateLimit
	// HandOverWait is how long an attempt in flight may go on when a successor takes over
	// (default 5s): its answer may be on the way, and cutting it short could deliver the
	// event twice. A sink that hangs longer is cut short.
	HandOverWait time.Duration
}

// DefaultHandOverWait is HandOverWait's default.
const DefaultHandOverWait = 5 * time.Second

// Observer hears what a pipeline does with its events: the controller implements it once
// per subscription, for its status counters, its metrics, its status wake-ups and its
// checkpoints. It is called from the pipeline's goroutines, per event: it must be cheap and
// must not block.
type Observer interface {
	// Observed: a change for the subscription was queued, or dropped at once.
	Observed()
	// Attempted: one request delivered n events, taking took, or failed with err (and
	// may be tried again).
	Attempted(n int, took time.Duration, err error)
	// Accepted: the sink accepted ev, answering at at; after Attempted counted the request,
	// once for each of its events.
	Accepted(ev *event.Event, at time.Time)
	// Failed: an event failed for good; reason sorts its last error (sink.FailureReason).
	Failed(reason string)
	// DeadLettered: the dead-letter sink took a failed event.
	DeadLettered()
	// Dropped: an event found no room, in the queue or (evicted) in the memory budget.
	Dropped(evicted bool)
	// Coalesced: a change was merged into a held event of its object; it is Done at once.
	Coalesced()
	// QueueDepth: how many events are queued or in flight now.
	QueueDepth(n int)
	// Done: an event is finished with, delivered, failed for good or dropped. An event
	// still queued or in flight when the pipeline stops is never Done, so a checkpoint built
	// from Done never covers it.
	Done(ev *event.Event)
}

type nopObserver struct{}

func (nopObserver) Observed()                           {}
func (nopObserver) Attempted(int, time.Duration, error) {}
func (nopObserver) Accepted(*event.Event, time.Time)    {}
func (nopObserver) Failed(string)                       {}
func (nopObserver) DeadLettered()                       {}
func (nopObserver) Dropped(bool)                        {}
func (nopObserver) Coalesced()                          {}
func (nopObserver) QueueDepth(int)                      {}
func (nopObserver) Done(*event.Event)                   {}

// Pipeline is one subscription's queue and workers.
type Pipeline struct {
	opts  Options
	slots chan struct{} // one token per queued or held event: bounds the queue across lanes
	lanes []*lane
	// assigned keeps each object's queued events on one lane.
	assigned *laneAssignments
	// hold is the stage before the lanes when the subscription coalesces or is rate
	// limited; nil otherwise.
	hold   *holding
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// depthMu orders the queue depth reports: each reads the depth under it, so the last
	// report follows the last change.
	depthMu sync.Mutex

	// mu orders starting workers against Stop and TakeOver (taken before a lane's mu).
	mu            sync.Mutex
	stopped, held bool
	// stopping is closed when the pipeline stops taking events and waiting between
	// retries; released when Release has handed a predecessor's events over.
	stopping, released chan struct{}
	stopOnce           sync.Once

	// batch is how many queued events of a lane go in one request: 1 unless the sink
	// takes batches.
	batch int
}

// lane is a FIFO worked by at most one goroutine, started when events arrive and ended
// when the lane is empty, so an idle subscription holds no goroutines; an object's events
// always use the same lane.
type lane struct {
	mu      sync.Mutex
	queue   []*event.Event
	running bool
	// current are the events being delivered, kept until they are finished with so a
	// pipeline taking over after Stop can retry them.
	current []*event.Event
	// Scratch space of the lane's one worker, reused from delivery to delivery.
	batchBuf []*event.Event
	msgBuf   []sink.Message
	// waiting tells that the worker waits for more events; wake tells it one came, that
	// the pipeline stopped, or, with the queue empty, that it idled long enough to end.
	waiting bool
	wake    chan struct{}
	// linger is the worker's idle clock, ticking every laneLinger while it runs; busy tells
	// the clock that the worker took events since the last tick.
	linger *time.Timer
	busy   bool
	// worker counts the workers started, so a tick knows whether its own still runs.
	worker int
	// clock bounds the worker's attempts.
	clock attemptClock
}

// laneLinger is how long a lane's worker idles, at least, before it ends (at most twice
// that). A worker started per event costs a goroutine and the growth of its stack to the
// depth of an HTTP request, each time: at one event per write, more than the pipeline's
// own work. The clock is not reset per event: a timer armed at every wait costs a delivery
// more than the wait itself.
const laneLinger = time.Second

// Start builds a pipeline and starts its workers.
func Start(opts Options) *Pipeline {
	opts = withDefaults(opts)
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pipeline{opts: opts, slots: make(chan struct{}, opts.QueueSize), ctx: ctx, cancel: cancel, held: opts.Held,
		batch: 1, stopping: make(chan struct{}), released: make(chan struct{}),
		hold: newHolding(opts.CoalesceWindow, opts.RateLimit)}
	if !opts.Held {
		close(p.released)
	}
	if b, ok := opts.Sink.(sink.Batcher); ok {
		p.batch = max(b.BatchSize(), 1)
	}
	p.lanes = make([]*lane, opts.Parallelism)
	p.assigned = newLaneAssignments(opts.Parallelism)
	for i := range p.lanes {
		p.lanes[i] = &lane{wake: make(chan struct{}, 1)}
	}
	return p
}

// spawn starts the worker of a lane marked running, unless the pipeline is held or
// stopped; then the lane is unmarked, and TakeOver starts it later.
func (p *Pipeline) spawn(l *lane) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped || p.held {
		l.mu.Lock()
		l.running = false
		l.mu.Unlock()
		return
	}
	p.wg.Go(func() { p.work(l) })
}

// startWorkers starts a worker on every lane that has events and none. Called with p.mu held.
func (p *Pipeline) startWorkers() {
	for _, l := range p.lanes {
		l.mu.Lock()
		start := !l.running && len(l.queue) > 0
		if start {
			l.running = true
		}
		l.mu.Unlock()
		if start {
			p.wg.Go(func() { p.work(l) })
		}
	}
}

// TakeOver starts a held pipeline's workers. With the pipeline it replaces (the
// subscription's spec or sink changed), it first stops that one (see handOver) and puts
// what it had not settled ahead of its own events: nothing queued is thrown away and an
// object's events keep their order across the change. Call it once the replaced pipeline
// gets no more events; it may take up to the replaced pipeline's HandOverWait.
func (p *Pipeline) TakeOver(replaced *Pipeline) {
	defer p.markReleased()
	if replaced != nil {
		p.prepend(replaced.handOver())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held = false
	if !p.stopped {
		p.startWorkers()
	}
}

func (p *Pipeline) markReleased() {
	select {
	case <-p.released:
	default:
		close(p.released)
	}
}

// handOver stops the pipeline for a successor and returns the events it had not settled,
// in order per lane. A pipeline still held hands over its predecessor's events too. Waits
// between retries end at once; an attempt in flight gets up to HandOverWait to finish.
func (p *Pipeline) handOver() []*event.Event {
	<-p.released
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.stopTaking()
	finished := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(finished)
	}()
	wait := time.NewTimer(p.opts.HandOverWait)
	defer wait.Stop()
	select {
	case <-finished:
	case <-wait.C:
	}
	p.Stop() // the successor counts the events against the budget again
	var left []*event.Event
	for _, l := range p.lanes {
		l.mu.Lock()
		left = append(left, l.current...)
		left = append(left, l.queue...)
		l.current, l.queue = nil, nil
		l.mu.Unlock()
	}
	if p.hold != nil {
		// Held events are younger than any queued event of their object.
		left = append(left, p.hold.drain()...)
	}
	return left
}

// prepend puts events ahead of those queued. Called before the workers start.
func (p *Pipeline) prepend(events []*event.Event) {
	ahead := make([][]*event.Event, len(p.lanes))
	for _, ev := range events {
		select {
		case p.slots <- struct{}{}:
			if !p.admit(ev) {
				<-p.slots
				p.dropped(ev, false)
				continue
			}
			i := p.assigned.assign(ev)
			ahead[i] = append(ahead[i], ev)
		default:
			p.dropped(ev, false)
		}
	}
	for i, l := range p.lanes {
		if len(ahead[i]) == 0 {
			continue
		}
		l.mu.Lock()
		l.queue = append(ahead[i], l.queue...)
		l.mu.Unlock()
	}
	p.reportDepth()
}

func withDefaults(o Options) Options {
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.Parallelism <= 0 {
		o.Parallelism = DefaultParallelism
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Retry.MaxAttempts <= 0 {
		o.Retry.MaxAttempts = DefaultMaxAttempts
	}
	if o.Retry.Backoff <= 0 {
		o.Retry.Backoff = DefaultBackoff
	}
	if o.Retry.MaxBackoff <= 0 {
		o.Retry.MaxBackoff = DefaultMaxBackoff
	}
	if o.HandOverWait <= 0 {
		o.HandOverWait = DefaultHandOverWait
	}
	o.Retry.MaxBackoff = max(o.Retry.MaxBackoff, o.Retry.Backoff)
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	return o
}

// Stop ends delivery at once: an attempt in flight is cancelled, nothing more is sent, and
// Stop waits for the workers to end. What was not finished with stays for a pipeline that
// takes over (TakeOver); calling Stop again does nothing more.
func (p *Pipeline) Stop() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.stopTaking()
	p.cancel()
	p.wg.Wait()
	if p.opts.Budget != nil {
		p.opts.Budget.forget(p) // what it still holds is handed over or let go
	}
	p.opts.Observer.QueueDepth(0)
}

func (p *Pipeline) stopTaking() {
	p.stopOnce.Do(func() {
		close(p.stopping)
		// Workers waiting for events wait on their lane's wake-up alone.
		for _, l := range p.lanes {
			l.mu.Lock()
			if l.waiting {
				l.wakeUp()
			}
			l.mu.Unlock()
		}
	})
}

// halted tells whether the pipeline stopped taking events (or was stopped).
func (p *Pipeline) halted() bool {
	select {
	case <-p.stopping:
		return true
	default:
		return p.ctx.Err() != nil
	}
}

// Drain waits until every queued event is finished with, or ctx ends; false if events
// were left. New events may still arrive: stop the informers first.
func (p *Pipeline) Drain(ctx context.Context) bool {
	if p.hold != nil {
		p.hold.flushNow()
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for len(p.slots) > 0 {
		select {
		case <-ctx.Done():
			return false
		case <-p.ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}

// Offer queues ev without blocking; false when the queue is full and ev was dropped.
func (p *Pipeline) Offer(ev *event.Event) bool {
	if p.ctx.Err() != nil {
		return false // stopped: the subscription has left, nothing to count
	}
	if !p.filtered(ev) {
		p.observe()
	}
	if p.merge(ev) {
		return true // merged into its object's held event: it needs no room of its own
	}
	select {
	case p.slots <- struct{}{}:
		if !p.admit(ev) {
			<-p.slots
			p.dropped(ev, false)
			return false
		}
		p.queue(ev)
		return true
	default:
		p.dropped(ev, false)
		return false
	}
}

// merge merges ev into the held event of its object, when there is one it can join.
func (p *Pipeline) merge(ev *event.Event) bool {
	if p.hold == nil {
		return false
	}
	replaced, merged := p.hold.absorb(ev)
	if merged == nil {
		return false
	}
	if p.opts.Budget != nil {
		p.opts.Budget.swap(p, replaced, merged)
	}
	p.opts.Observer.Coalesced()
	p.opts.Observer.Done(ev)
	return true
}

// queue hands an event that has its room to the holding stage, or to its lane.
func (p *Pipeline) queue(ev *event.Event) {
	if p.hold == nil {
		p.enqueue(ev)
		return
	}
	if p.hold.add(ev, time.Now()) {
		p.startRelease()
	}
	p.reportDepth()
}

// startRelease starts the holding stage's release loop, unless the pipeline was stopped
// (what is held then waits for a successor).
func (p *Pipeline) startRelease() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		p.hold.mu.Lock()
		p.hold.running = false
		p.hold.mu.Unlock()
		return
	}
	p.wg.Go(p.release)
}

// dropped counts an event the pipeline had no room for (evicted: in the memory budget),
// and finishes with it.
func (p *Pipeline) dropped(ev *event.Event, evicted bool) {
	p.opts.Observer.Dropped(evicted)
	p.opts.Observer.Done(ev)
}

// admit counts ev against the memory budget, if there is one; false when it must go.
func (p *Pipeline) admit(ev *event.Event) bool {
	return p.opts.Budget == nil || p.opts.Budget.admit(p, ev)
}

// evictOldest drops queued events, oldest first across lanes (events in flight stay), until
// at least need bytes are freed or none is left; it returns the bytes freed.
func (p *Pipeline) evictOldest(need int64) int64 {
	var freed int64
	for freed < need {
		var oldest *lane
		var oldestAt time.Time
		for _, l := range p.lanes {
			l.mu.Lock()
			if len(l.queue) > 0 && (oldest == nil || l.queue[0].ObservedAt.Before(oldestAt)) {
				oldest, oldestAt = l, l.queue[0].ObservedAt
			}
			l.mu.Unlock()
		}
		if oldest == nil {
			return freed
		}
		oldest.mu.Lock()
		if len(oldest.queue) == 0 {
			oldest.mu.Unlock()
			continue
		}
		ev := oldest.queue[0]
		oldest.queue[0] = nil
		oldest.queue = oldest.queue[1:]
		oldest.mu.Unlock()
		freed += int64(ev.Size())
		p.assigned.release(ev)
		p.opts.Budget.release(p, ev)
		<-p.slots
		p.dropped(ev, true)
	}
	p.reportDepth()
	return freed
}

// Put queues ev, waiting for room until ctx or the pipeline ends.
func (p *Pipeline) Put(ctx context.Context, ev *event.Event) error {
	if err := p.ctx.Err(); err != nil {
		return err
	}
	if !p.filtered(ev) {
		p.observe()
	}
	if p.merge(ev) {
		return nil
	}
	select {
	case p.slots <- struct{}{}:
		if !p.admit(ev) {
			<-p.slots
			p.dropped(ev, false)
			return nil
		}
		p.queue(ev)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.ctx.Done():
		return p.ctx.Err()
	}
}

// filtered tells whether ev still has to pass the Filter in its lane.
func (p *Pipeline) filtered(ev *event.Event) bool {
	return p.opts.Filter != nil && !ev.Initial && ev.Type != event.Resync
}

func (p *Pipeline) observe() {
	p.opts.Observer.Observed()
}

func (p *Pipeline) enqueue(ev *event.Event) {
	l := p.lanes[p.assigned.assign(ev)]
	l.mu.Lock()
	l.queue = append(l.queue, ev)
	start, wake := !l.running, l.waiting
	l.running = true
	l.mu.Unlock()
	switch {
	case start:
		p.spawn(l)
	case wake:
		l.wakeUp()
	}
	p.reportDepth()
}

// work delivers a lane's events in order. With a batching sink it takes what is already
// queued, up to the batch size, so batches form only under backlog and add no latency.
func (p *Pipeline) work(l *lane) {
	l.mu.Lock()
	l.worker++
	worker := l.worker
	l.linger = time.AfterFunc(laneLinger, func() { l.tick(worker) })
	l.mu.Unlock()
	for {
		l.mu.Lock()
		l.current = nil // the previous batch, if any, is settled
		if len(l.queue) == 0 && !p.halted() {
			select {
			case <-l.wake: // from before it waited: stale
			default:
			}
			l.waiting = true
			l.mu.Unlock()
			<-l.wake // an event, the idle clock, or the pipeline stopping
			l.mu.Lock()
			l.waiting = false
		}
		if len(l.queue) == 0 || p.halted() {
			// Woken with nothing queued: the idle clock ran out, or the pipeline stopped.
			l.running = false
			l.retire()
			l.mu.Unlock()
			return
		}
		l.busy = true
		n := min(len(l.queue), p.batch)
		evs := append(l.batchBuf[:0], l.queue[:n]...)
		clear(l.queue[:n])
		l.queue = l.queue[n:]
		l.current = evs
		l.mu.Unlock()
		if !p.deliver(l, evs) {
			l.mu.Lock()
			l.retire()
			l.mu.Unlock()
			return // stopped: the events not settled stay current
		}
		// current, still evs, is reset at the next lock: only stopAndTake reads it, once
		// the workers have ended.
		clear(evs) // let delivered events go
		l.batchBuf = evs
		p.reportDepth()
	}
}

// wakeUp wakes the lane's waiting worker, unless it is being woken already.
func (l *lane) wakeUp() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// retire stops the clocks of a worker that ends. Called with l.mu held.
func (l *lane) retire() {
	l.linger.Stop()
	l.linger = nil
	l.clock.stop()
}

// tick is the idle clock of a worker: it wakes the worker to end when it waited for
// events since the last tick without taking any, and ticks again otherwise.
func (l *lane) tick(worker int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.worker != worker || l.linger == nil:
		// Its worker ended.
	case l.waiting && !l.busy:
		l.wakeUp()
	default:
		l.busy = false
		l.linger.Reset(laneLinger)
	}
}

// keep makes events the lane's current ones: a pipeline stopping mid-delivery hands over
// exactly the events it has not settled, so none is sent twice or lost.
func (l *lane) keep(events []*event.Event) {
	l.mu.Lock()
	l.current = events
	l.mu.Unlock()
}

// eventsOf lists the events of msgs, in order, in a new slice.
func eventsOf(msgs []sink.Message) []*event.Event {
	out := make([]*event.Event, len(msgs))
	for i, m := range msgs {
		out[i] = m.Event
	}
	return out
}

// finish is the end of an event's way: Done, and its queue slot given back.
func (p *Pipeline) finish(ev *event.Event) {
	p.assigned.release(ev)
	if p.opts.Budget != nil {
		p.opts.Budget.release(p, ev)
	}
	p.opts.Observer.Done(ev)
	<-p.slots
}

// reportDepth tells the Observer how many events are queued, held or in flight now.
func (p *Pipeline) reportDepth() {
	p.depthMu.Lock()
	defer p.depthMu.Unlock()
	p.opts.Observer.QueueDepth(len(p.slots))
}

// fit is how many of msgs, from the first, go in one request: as many as stay within
// MaxBatchBytes with their attributes, and always at least one.
func fit(msgs []sink.Message) int {
	size := 0
	for i, m := range msgs {
		if size += len(m.Data) + sink.AttributesSize; size > MaxBatchBytes && i > 0 {
			return i
		}
	}
	return len(msgs)
}

// deliver settles evs in order, each delivered or failed for good and then finished; with
// a batching sink, as few requests as MaxBatchBytes allows. False when the pipeline
// stopped first.
func (p *Pipeline) deliver(l *lane, evs []*event.Event) bool {
	msgs := l.msgBuf[:0]
	defer func() {
		clear(msgs)
		l.msgBuf = msgs[:0]
	}()
	for i, ev := range evs {
		if p.filtered(ev) {
			if !p.opts.Filter(ev) {
				p.finish(ev) // not for this subscription after all
				continue
			}
			p.observe()
		}
		msg := sink.Message{Event: ev, Source: p.opts.Source}
		if n := ev.Changes(); n > 1 {
			msg.Extensions = map[string]string{CoalescedExtension: strconv.Itoa(n)}
		}
		data, contentType, err := p.data(ev)
		if err != nil {
			// Only this event fails; it is dead-lettered ahead of the batch it left.
			if !p.giveUp(l, msg, err, 0) {
				l.keep(append(eventsOf(msgs), evs[i:]...))
				return false
			}
			p.finish(ev)
			continue
		}
		msg.Data, msg.ContentType = data, contentType
		msgs = append(msgs, msg)
	}
	for rest := msgs; len(rest) > 0; {
		n := fit(rest)
		if !p.send(l, rest, n) {
			return false
		}
		rest = rest[n:]
	}
	return true
}

// data is what an event's message carries: the subscription's shaped payload, or the
// event's shared encoding. Resolved before sending, so an event that cannot be encoded
// fails alone instead of failing the batch it would be in.
func (p *Pipeline) data(ev *event.Event) ([]byte, string, error) {
	var data []byte
	var contentType string
	var err error
	if p.opts.Shape != nil {
		data, contentType, err = p.opts.Shape(ev)
	} else {
		data, err = ev.Data()
	}
	if err != nil {
		return nil, "", sink.Unencodable(ev, err)
	}
	return data, contentType, nil
}

// send delivers the first n of msgs as one request (one message: on its own), retrying it
// whole, and settles their events; a request the sink finds too large (413) is split in
// two. False when the pipeline stopped first, leaving the unsettled of msgs as current.
func (p *Pipeline) send(l *lane, msgs []sink.Message, n int) bool {
	chunk := msgs[:n]
	var err error
	attempts := 0
	for attempts < p.opts.Retry.MaxAttempts {
		attempts++
		start := time.Now()
		err = p.attempt(l, p.opts.Sink, chunk)
		if p.ctx.Err() != nil {
			l.keep(eventsOf(msgs)) // stopped mid-attempt: neither delivered nor failed
			return false
		}
		if err == nil {
			// Counted before the events are finished with, so whoever sees them Done
			// sees them counted.
			answered := time.Now()
			p.opts.Observer.Attempted(len(chunk), answered.Sub(start), nil)
			for _, m := range chunk {
				p.opts.Observer.Accepted(m.Event, answered)
				p.finish(m.Event)
			}
			return true
		}
		if n > 1 && sink.TooLarge(err) {
			half := n / 2
			return p.send(l, msgs, half) && p.send(l, msgs[half:], n-half)
		}
		p.opts.Observer.Attempted(0, time.Since(start), err)
		if !sink.Retryable(err) || attempts == p.opts.Retry.MaxAttempts {
			break
		}
		if !p.sleep(p.backoff(attempts, sink.RetryAfter(err))) {
			l.keep(eventsOf(msgs))
			return false
		}
	}
	// Each event of a failed batch is dead-lettered on its own: the batch is this
	// operator's packaging, not something a dead-letter receiver should have to know.
	for i, m := range chunk {
		if !p.giveUp(l, m, err, attempts) {
			l.keep(eventsOf(msgs[i:]))
			return false
		}
		p.finish(m.Event)
	}
	return true
}

// attempt sends msgs to s: as one batch when there are several (the pipeline batches only
// for a Batcher), else on its own.
func (p *Pipeline) attempt(l *lane, s sink.Sink, msgs []sink.Message) error {
	ctx := l.clock.begin(p.ctx, p.opts.Timeout)
	defer l.clock.end()
	if len(msgs) > 1 {
		return s.(sink.Batcher).SendBatch(ctx, msgs)
	}
	return s.Send(ctx, msgs[0])
}

// giveUp counts a final failure and hands the event to the dead-letter sink, if any; false
// when the pipeline stopped before that was settled.
func (p *Pipeline) giveUp(l *lane, msg sink.Message, cause error, attempts int) bool {
	p.opts.Observer.Failed(sink.FailureReason(cause))
	if p.opts.DeadLetter == nil {
		p.opts.Log.V(1).Info("Event dropped after its last attempt", "id", msg.Event.ID(), "attempts", attempts,
			"error", cause.Error())
		return true
	}
	exts := map[string]string{"deliveryerror": cause.Error(), "deliveryattempts": strconv.Itoa(attempts)}
	maps.Copy(exts, msg.Extensions)
	msg.Extensions = exts
	for try := 1; try <= deadLetterAttempts; try++ {
		err := p.attempt(l, p.opts.DeadLetter, []sink.Message{msg})
		if err == nil {
			p.opts.Observer.DeadLettered()
			return true
		}
		if p.ctx.Err() != nil {
			return false // stopped: not a dead-letter failure
		}
		if !sink.Retryable(err) || try == deadLetterAttempts || !p.sleep(p.backoff(try, sink.RetryAfter(err))) {
			if p.halted() {
				return false
			}
			p.opts.Log.Info("Dead-letter delivery failed", "id", msg.Event.ID(), "error", err.Error())
			return true
		}
	}
	return true
}

// backoff is exponential with equal jitter, or what the sink asked for (capped).
func (p *Pipeline) backoff(attempt int, retryAfter time.Duration) time.Duration {
	r := p.opts.Retry
	if retryAfter > 0 {
		return min(retryAfter, r.MaxBackoff)
	}
	d := r.Backoff
	for i := 1; i < attempt && d < r.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, r.MaxBackoff)
	return d/2 + rand.N(d/2+1) //nolint:gosec // jitter needs no cryptographic randomness
}

func (p *Pipeline) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.ctx.Done():
		return false
	case <-p.stopping:
		return false
	}
}
