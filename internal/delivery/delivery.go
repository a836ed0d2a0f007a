// Package delivery moves one subscription's events from the watch fan-out to its sink:
// a bounded queue that never blocks the informer, a worker that sends in order, and the
// counters its status reports. It knows nothing about informers.
package delivery

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

// Stats are a subscription's counters. They outlive pipelines: a spec change rebuilds the
// pipeline but keeps counting.
type Stats struct {
	observed, delivered, failed, dropped atomic.Int64

	mu               sync.Mutex
	lastEventTime    time.Time
	lastDeliveryTime time.Time
	lastError        string
	failing          bool
}

// NewStats starts counting from the values a status already reports (after a restart).
func NewStats(observed, delivered, failed int64) *Stats {
	s := &Stats{}
	s.observed.Store(observed)
	s.delivered.Store(delivered)
	s.failed.Store(failed)
	return s
}

// Snapshot is a consistent copy of the counters for status.
type Snapshot struct {
	Observed, Delivered, Failed, Dropped int64
	LastEventTime, LastDeliveryTime      time.Time
	// Failing is true while the last attempt failed and none has succeeded since.
	Failing   bool
	LastError string
}

// Snapshot copies the counters.
func (s *Stats) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Snapshot{
		Observed: s.observed.Load(), Delivered: s.delivered.Load(),
		Failed: s.failed.Load(), Dropped: s.dropped.Load(),
		LastEventTime: s.lastEventTime, LastDeliveryTime: s.lastDeliveryTime,
		Failing: s.failing, LastError: s.lastError,
	}
}

// Options configure a pipeline.
type Options struct {
	Sink sink.Sink
	// Source is the CloudEvents source of every event: the subscription's API path.
	Source    string
	QueueSize int
	Timeout   time.Duration
	Stats     *Stats
	Log       logr.Logger
	// Notify is told that the counters changed; urgent when the delivery health flipped.
	Notify func(urgent bool)
}

// Pipeline is one subscription's queue and worker.
type Pipeline struct {
	opts   Options
	queue  chan *event.Event
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// Start builds a pipeline and starts its worker.
func Start(opts Options) *Pipeline {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 1000
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Notify == nil {
		opts.Notify = func(bool) {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pipeline{opts: opts, queue: make(chan *event.Event, opts.QueueSize), ctx: ctx, cancel: cancel,
		done: make(chan struct{})}
	go p.work()
	return p
}

// Stop ends delivery at once: queued events are discarded. It waits for an attempt in
// flight to end (bounded by the timeout, and cancelled).
func (p *Pipeline) Stop() {
	p.cancel()
	<-p.done
}

// Offer queues ev without blocking; false when the queue is full and ev was dropped.
func (p *Pipeline) Offer(ev *event.Event) bool {
	p.observe()
	select {
	case p.queue <- ev:
		return true
	default:
		p.opts.Stats.dropped.Add(1)
		p.opts.Stats.failed.Add(1)
		p.opts.Notify(false)
		return false
	}
}

// Put queues ev, waiting for room until ctx or the pipeline ends.
func (p *Pipeline) Put(ctx context.Context, ev *event.Event) error {
	p.observe()
	select {
	case p.queue <- ev:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.ctx.Done():
		return p.ctx.Err()
	}
}

func (p *Pipeline) observe() {
	s := p.opts.Stats
	s.observed.Add(1)
	s.mu.Lock()
	s.lastEventTime = time.Now()
	s.mu.Unlock()
	p.opts.Notify(false)
}

func (p *Pipeline) work() {
	defer close(p.done)
	for {
		select {
		case <-p.ctx.Done():
			return
		case ev := <-p.queue:
			p.deliver(ev)
		}
	}
}

func (p *Pipeline) deliver(ev *event.Event) {
	ctx, cancel := context.WithTimeout(p.ctx, p.opts.Timeout)
	err := p.opts.Sink.Send(ctx, ev, p.opts.Source)
	cancel()
	if p.ctx.Err() != nil {
		return // stopped mid-attempt: neither delivered nor failed
	}
	s := p.opts.Stats
	s.mu.Lock()
	wasFailing := s.failing
	if err == nil {
		s.delivered.Add(1)
		s.lastDeliveryTime = time.Now()
		s.failing, s.lastError = false, ""
	} else {
		s.failed.Add(1)
		s.failing, s.lastError = true, err.Error()
	}
	flipped := wasFailing != s.failing
	s.mu.Unlock()
	if err != nil && flipped {
		p.opts.Log.Info("Delivery failing", "error", err.Error())
	}
	p.opts.Notify(flipped)
}
