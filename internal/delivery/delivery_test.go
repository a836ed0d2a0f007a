package delivery

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

var configMaps = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

// newEvent is an Updated change of team-a/<name> at resourceVersion rv.
func newEvent(name string, rv int) *event.Event {
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{
			"namespace": "team-a", "name": name, "uid": "uid-" + name, "resourceVersion": strconv.Itoa(rv),
		},
	}}
	return event.New(event.Updated, configMaps, obj)
}

// fakeSink counts attempts and keeps the messages it accepted. send decides each attempt's
// outcome; n counts attempts across all messages, from 1.
type fakeSink struct {
	send func(ctx context.Context, msg sink.Message, n int) error

	mu    sync.Mutex
	calls int
	got   []sink.Message
}

func (f *fakeSink) Send(ctx context.Context, msg sink.Message) error {
	f.mu.Lock()
	f.calls++
	n := f.calls
	f.mu.Unlock()
	var err error
	if f.send != nil {
		err = f.send(ctx, msg, n)
	}
	if err == nil {
		f.mu.Lock()
		f.got = append(f.got, msg)
		f.mu.Unlock()
	}
	return err
}

func (f *fakeSink) attempts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeSink) accepted() []sink.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sink.Message(nil), f.got...)
}

// gatedSink accepts one message per value received from gate, holding each until then.
func gatedSink(gate <-chan struct{}) *fakeSink {
	return &fakeSink{send: func(ctx context.Context, _ sink.Message, _ int) error {
		select {
		case <-gate:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
}

// notifications counts Notify calls; urgent ones mark health flips and drops.
type notifications struct{ all, urgent atomic.Int64 }

func (n *notifications) notify(urgent bool) {
	n.all.Add(1)
	if urgent {
		n.urgent.Add(1)
	}
}

// recordingMetrics keeps the failure reasons and counts what else was reported.
type recordingMetrics struct {
	mu                                    sync.Mutex
	observed, delivered, dropped, letters int
	failed                                []string
}

func (m *recordingMetrics) Observed()               { m.mu.Lock(); m.observed++; m.mu.Unlock() }
func (m *recordingMetrics) Delivered(time.Duration) { m.mu.Lock(); m.delivered++; m.mu.Unlock() }
func (m *recordingMetrics) Dropped()                { m.mu.Lock(); m.dropped++; m.mu.Unlock() }
func (m *recordingMetrics) DeadLettered()           { m.mu.Lock(); m.letters++; m.mu.Unlock() }
func (m *recordingMetrics) Failed(reason string) {
	m.mu.Lock()
	m.failed = append(m.failed, reason)
	m.mu.Unlock()
}

func (m *recordingMetrics) drops() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dropped
}

func (m *recordingMetrics) failures() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.failed...)
}

func httpError(code int) error {
	return &sink.HTTPError{Method: http.MethodPost, URL: "http://sink", StatusCode: code,
		Status: fmt.Sprintf("%d %s", code, http.StatusText(code))}
}

// fastRetry keeps retry waits in milliseconds so tests do not wait on backoff.
var fastRetry = Retry{MaxAttempts: 5, Backoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond}

func newG(t *testing.T) *WithT {
	g := NewWithT(t)
	// The race detector slows everything down; give asynchronous checks room.
	g.SetDefaultEventuallyTimeout(10 * time.Second)
	return g
}

func TestOrderPerObjectUnderParallelism(t *testing.T) {
	g := newG(t)
	const objects, perObject = 12, 40
	// Random delays and retryable failures shuffle the lanes against each other; within an
	// object, a later change must still never overtake an earlier one, even across retries.
	s := &fakeSink{send: func(_ context.Context, _ sink.Message, _ int) error {
		for range rand.N(50) {
			runtime.Gosched()
		}
		if rand.N(5) == 0 {
			return httpError(http.StatusServiceUnavailable)
		}
		return nil
	}}
	stats := NewStats(Snapshot{})
	p := Start(Options{Sink: s, Parallelism: 4, QueueSize: objects * perObject,
		Retry: Retry{MaxAttempts: 100, Backoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}, Observer: &watching{stats: stats}})
	defer p.Stop()

	// Interleave the objects, with resourceVersions increasing globally as in a watch.
	sent := map[string][]string{}
	rv := 0
	for range perObject {
		for _, o := range rand.Perm(objects) {
			rv++
			ev := newEvent("cm-"+strconv.Itoa(o), rv)
			sent[ev.ObjectKey()] = append(sent[ev.ObjectKey()], ev.ResourceVersion())
			g.Expect(p.Offer(ev)).To(BeTrue())
		}
	}

	g.Eventually(func() int64 { return stats.Snapshot().Delivered }).Should(BeEquivalentTo(objects * perObject))
	got := map[string][]string{}
	for _, m := range s.accepted() {
		got[m.Event.ObjectKey()] = append(got[m.Event.ObjectKey()], m.Event.ResourceVersion())
	}
	g.Expect(got).To(HaveLen(objects))
	for key, want := range sent {
		g.Expect(got[key]).To(Equal(want), "resourceVersions of %s out of order or incomplete", key)
	}
	snap := stats.Snapshot()
	g.Expect(snap.Failed).To(BeZero())
	g.Expect(snap.Dropped).To(BeZero())
	g.Expect(snap.Observed).To(BeEquivalentTo(objects * perObject))
}

func TestDifferentObjectsGoInParallel(t *testing.T) {
	g := newG(t)
	const parallelism = 4
	entered := make(chan string, parallelism)
	release := make(chan struct{})
	s := &fakeSink{send: func(ctx context.Context, msg sink.Message, _ int) error {
		entered <- msg.Event.ObjectKey()
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	p := Start(Options{Sink: s, Parallelism: parallelism})
	defer p.Stop()

	// As many objects as lanes, each arriving while the ones before are in the sink: every
	// lane must be in the sink at the same time.
	for i := range parallelism {
		g.Expect(p.Offer(newEvent("cm-"+strconv.Itoa(i), i+1))).To(BeTrue())
	}
	for range parallelism {
		g.Eventually(entered).Should(Receive())
	}
	close(release)
	g.Eventually(func() int { return len(s.accepted()) }).Should(Equal(parallelism))
}

func TestRetriesThenSuccess(t *testing.T) {
	g := newG(t)
	const failures = 3
	lastAttempt := make(chan struct{})
	release := make(chan struct{})
	s := &fakeSink{send: func(_ context.Context, _ sink.Message, n int) error {
		if n <= failures {
			return httpError(http.StatusServiceUnavailable)
		}
		// Hold the successful attempt so the test can see the failing state first.
		close(lastAttempt)
		<-release
		return nil
	}}
	stats := NewStats(Snapshot{})
	var note notifications
	m := &recordingMetrics{}
	p := Start(Options{Sink: s, Retry: fastRetry, Observer: &watching{stats: stats, metrics: m, notify: &note}})
	defer p.Stop()

	g.Expect(p.Offer(newEvent("settings", 1))).To(BeTrue())

	g.Eventually(lastAttempt).Should(BeClosed())
	snap := stats.Snapshot()
	g.Expect(snap.Failing).To(BeTrue())
	g.Expect(snap.LastError).To(Equal("POST http://sink: 503 Service Unavailable"))
	g.Expect(snap.Failed).To(BeZero(), "a failed attempt that will be retried is not a failed delivery")
	g.Expect(note.urgent.Load()).To(BeEquivalentTo(1), "only the flip to failing is urgent")

	close(release)
	g.Eventually(func() int64 { return stats.Snapshot().Delivered }).Should(BeEquivalentTo(1))
	snap = stats.Snapshot()
	g.Expect(snap.Failing).To(BeFalse())
	g.Expect(snap.LastError).To(BeEmpty())
	g.Expect(snap.Failed).To(BeZero())
	g.Expect(snap.LastDeliveryTime).NotTo(BeZero())
	g.Expect(s.attempts()).To(Equal(failures + 1))
	g.Expect(note.urgent.Load()).To(BeEquivalentTo(2), "the flip back to healthy is urgent too")
	g.Expect(m.failures()).To(BeEmpty())
}

func TestGivingUp(t *testing.T) {
	badRequest := httpError(http.StatusBadRequest)
	unavailable := httpError(http.StatusServiceUnavailable)
	cases := []struct {
		name         string
		sinkErr      error
		deadLetter   func(n int) error // nil: no dead-letter sink
		wantAttempts int
		wantReason   string
		// dead-letter attempts made and whether one succeeded
		wantLetterTries int
		wantLettered    bool
	}{
		{name: "non-retryable goes to the dead letter at once", sinkErr: badRequest,
			deadLetter: func(int) error { return nil }, wantAttempts: 1, wantReason: "client_error",
			wantLetterTries: 1, wantLettered: true},
		{name: "retries exhausted without dead letter", sinkErr: unavailable,
			wantAttempts: fastRetry.MaxAttempts, wantReason: "server_error"},
		{name: "retries exhausted, then dead letter", sinkErr: unavailable,
			deadLetter: func(int) error { return nil }, wantAttempts: fastRetry.MaxAttempts,
			wantReason: "server_error", wantLetterTries: 1, wantLettered: true},
		{name: "dead letter retried", sinkErr: badRequest,
			deadLetter: func(n int) error {
				if n == 1 {
					return unavailable
				}
				return nil
			},
			wantAttempts: 1, wantReason: "client_error", wantLetterTries: 2, wantLettered: true},
		{name: "dead letter refuses", sinkErr: badRequest,
			deadLetter: func(int) error { return badRequest }, wantAttempts: 1, wantReason: "client_error",
			wantLetterTries: 1},
		{name: "dead letter down", sinkErr: badRequest,
			deadLetter: func(int) error { return unavailable }, wantAttempts: 1, wantReason: "client_error",
			wantLetterTries: deadLetterAttempts},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newG(t)
			s := &fakeSink{send: func(context.Context, sink.Message, int) error { return tc.sinkErr }}
			var dl *fakeSink
			dlDone := make(chan struct{})
			var dlOnce sync.Once
			seen := &watching{stats: NewStats(Snapshot{}), metrics: &recordingMetrics{}}
			opts := Options{Sink: s, Source: "/apis/x/v1/namespaces/team-a/watchsubscriptions/w", Retry: fastRetry,
				Observer: seen}
			if tc.deadLetter != nil {
				dl = &fakeSink{send: func(_ context.Context, _ sink.Message, n int) error {
					err := tc.deadLetter(n)
					if err == nil || n == tc.wantLetterTries {
						dlOnce.Do(func() { close(dlDone) }) // the last dead-letter attempt expected
					}
					return err
				}}
				opts.DeadLetter = dl
			} else {
				close(dlDone)
			}
			p := Start(opts)
			defer p.Stop()
			ev := newEvent("settings", 7)

			g.Expect(p.Offer(ev)).To(BeTrue())

			g.Eventually(func() int64 { return seen.stats.Snapshot().Failed }).Should(BeEquivalentTo(1))
			g.Eventually(dlDone).Should(BeClosed())
			// The dead-letter outcome is counted just after its last attempt returns.
			if tc.wantLettered {
				g.Eventually(func() int64 { return seen.stats.Snapshot().DeadLettered }).Should(BeEquivalentTo(1))
			}
			p.Stop() // no more attempts can happen past this point
			snap := seen.stats.Snapshot()
			g.Expect(s.attempts()).To(Equal(tc.wantAttempts))
			g.Expect(snap.Failed).To(BeEquivalentTo(1))
			g.Expect(snap.Delivered).To(BeZero())
			g.Expect(snap.Failing).To(BeTrue())
			wantLettered := int64(0)
			if tc.wantLettered {
				wantLettered = 1
			}
			g.Expect(snap.DeadLettered).To(Equal(wantLettered))
			g.Expect(seen.metrics.failures()).To(Equal([]string{tc.wantReason}))
			if dl == nil {
				return
			}
			g.Expect(dl.attempts()).To(Equal(tc.wantLetterTries))
			if !tc.wantLettered {
				return
			}
			letters := dl.accepted()
			g.Expect(letters).To(HaveLen(1))
			g.Expect(letters[0].Event).To(BeIdenticalTo(ev))
			g.Expect(letters[0].Source).To(Equal(opts.Source))
			g.Expect(letters[0].Extensions).To(Equal(map[string]string{
				"deliveryattempts": strconv.Itoa(tc.wantAttempts),
				"deliveryerror":    tc.sinkErr.Error(),
			}))
		})
	}
}

func TestAttemptTimeout(t *testing.T) {
	g := newG(t)
	// The sink never answers; each attempt must end at the timeout and count as retryable.
	s := &fakeSink{send: func(ctx context.Context, _ sink.Message, _ int) error {
		<-ctx.Done()
		return ctx.Err()
	}}
	m := &recordingMetrics{}
	stats := NewStats(Snapshot{})
	p := Start(Options{Sink: s, Timeout: 5 * time.Millisecond,
		Retry: Retry{MaxAttempts: 2, Backoff: time.Millisecond, MaxBackoff: time.Millisecond}, Observer: &watching{stats: stats, metrics: m}})
	defer p.Stop()

	g.Expect(p.Offer(newEvent("settings", 1))).To(BeTrue())

	g.Eventually(func() int64 { return stats.Snapshot().Failed }).Should(BeEquivalentTo(1))
	g.Expect(s.attempts()).To(Equal(2))
	g.Expect(m.failures()).To(Equal([]string{"timeout"}))
	g.Expect(stats.Snapshot().LastError).To(Equal(context.DeadlineExceeded.Error()))
}

func TestQueueFull(t *testing.T) {
	g := newG(t)
	gate := make(chan struct{})
	s := gatedSink(gate)
	stats := NewStats(Snapshot{})
	var note notifications
	m := &recordingMetrics{}
	var depth atomic.Int64
	p := Start(Options{Sink: s, QueueSize: 2, Parallelism: 1,
		Observer: &watching{stats: stats, metrics: m, notify: &note, depth: &depth}})
	defer p.Stop()

	// An event in the sink still holds its slot, so two fill the queue.
	g.Expect(p.Offer(newEvent("a", 1))).To(BeTrue())
	g.Expect(p.Offer(newEvent("a", 2))).To(BeTrue())
	g.Expect(p.Offer(newEvent("a", 3))).To(BeFalse())
	g.Expect(depth.Load()).To(BeEquivalentTo(2), "the depth reported counts the event in the sink")

	snap := stats.Snapshot()
	g.Expect(snap.Observed).To(BeEquivalentTo(3))
	g.Expect(snap.Dropped).To(BeEquivalentTo(1))
	g.Expect(snap.Failed).To(BeEquivalentTo(1), "a drop is a failed delivery too")
	g.Expect(snap.LastDropTime).NotTo(BeZero())
	recently, _ := snap.DroppedRecently(time.Now())
	g.Expect(recently).To(BeTrue())
	g.Expect(note.urgent.Load()).To(BeEquivalentTo(1), "a drop is urgent")
	g.Expect(m.drops()).To(Equal(1))

	// Put waits for room rather than dropping.
	putDone := make(chan error, 1)
	go func() { putDone <- p.Put(context.Background(), newEvent("a", 4)) }()
	g.Consistently(putDone, 50*time.Millisecond).ShouldNot(Receive())
	gate <- struct{}{} // event 1 delivered: its slot frees
	g.Eventually(putDone).Should(Receive(BeNil()))

	// Full again (2 and 4): a Put whose context ends gives up with the context's error.
	ctx, cancel := context.WithCancel(context.Background())
	go func() { putDone <- p.Put(ctx, newEvent("a", 5)) }()
	g.Consistently(putDone, 20*time.Millisecond).ShouldNot(Receive())
	cancel()
	g.Eventually(putDone).Should(Receive(MatchError(context.Canceled)))

	gate <- struct{}{}
	gate <- struct{}{}
	g.Eventually(func() int64 { return stats.Snapshot().Delivered }).Should(BeEquivalentTo(3))
	accepted := s.accepted()
	rvs := make([]string, 0, len(accepted))
	for _, msg := range accepted {
		rvs = append(rvs, msg.Event.ResourceVersion())
	}
	g.Expect(rvs).To(Equal([]string{"1", "2", "4"}))
	g.Expect(stats.Snapshot().Dropped).To(BeEquivalentTo(1), "a Put that gave up is not a drop")
	g.Eventually(depth.Load).Should(BeZero(), "the last depth reported is the empty queue")
}

func TestPutReturnsWhenPipelineStops(t *testing.T) {
	g := newG(t)
	// The sink ignores cancellation until released, so the one slot stays taken and the
	// pipeline ending is the only thing that can end the Put.
	release := make(chan struct{})
	entered := make(chan struct{})
	s := &fakeSink{send: func(context.Context, sink.Message, int) error {
		close(entered)
		<-release
		return nil
	}}
	p := Start(Options{Sink: s, QueueSize: 1, Parallelism: 1})
	g.Expect(p.Offer(newEvent("a", 1))).To(BeTrue())
	g.Eventually(entered).Should(BeClosed())
	putDone := make(chan error, 1)
	go func() { putDone <- p.Put(context.Background(), newEvent("a", 2)) }()

	stopped := make(chan struct{})
	go func() {
		p.Stop()
		close(stopped)
	}()

	g.Eventually(putDone).Should(Receive(MatchError(context.Canceled)))
	close(release)
	g.Eventually(stopped).Should(BeClosed())
}

func TestStop(t *testing.T) {
	cases := []struct {
		name string
		// sink behaviour; entered is closed once the pipeline is where the case wants it.
		send       func(ctx context.Context, n int, entered chan struct{}) error
		deadLetter bool
	}{
		{name: "attempt in flight", send: func(ctx context.Context, _ int, entered chan struct{}) error {
			close(entered)
			<-ctx.Done()
			return ctx.Err()
		}},
		// An hour of backoff: Stop must not wait for it.
		{name: "waiting to retry", send: func(_ context.Context, n int, entered chan struct{}) error {
			if n == 1 {
				close(entered)
			}
			return &sink.HTTPError{StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable",
				RetryAfter: time.Hour}
		}},
		{name: "dead letter in flight", deadLetter: true,
			send: func(context.Context, int, chan struct{}) error { return httpError(http.StatusBadRequest) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newG(t)
			before := runtime.NumGoroutine()
			entered := make(chan struct{})
			var sinkCtxErr atomic.Value
			s := &fakeSink{send: func(ctx context.Context, _ sink.Message, n int) error {
				err := tc.send(ctx, n, entered)
				if ctx.Err() != nil {
					sinkCtxErr.Store(ctx.Err())
				}
				return err
			}}
			stats := NewStats(Snapshot{})
			opts := Options{Sink: s, Parallelism: 2,
				Retry: Retry{MaxAttempts: 3, Backoff: time.Hour, MaxBackoff: time.Hour}, Observer: &watching{stats: stats}}
			if tc.deadLetter {
				opts.DeadLetter = &fakeSink{send: func(ctx context.Context, _ sink.Message, _ int) error {
					close(entered)
					<-ctx.Done()
					sinkCtxErr.Store(ctx.Err())
					return ctx.Err()
				}}
			}
			p := Start(opts)
			g.Expect(p.Offer(newEvent("a", 1))).To(BeTrue())
			g.Expect(p.Offer(newEvent("a", 2))).To(BeTrue()) // queued behind it: discarded on Stop
			g.Eventually(entered).Should(BeClosed())

			stopped := make(chan struct{})
			go func() {
				p.Stop()
				close(stopped)
			}()

			g.Eventually(stopped).Should(BeClosed())
			if tc.name != "waiting to retry" {
				g.Expect(sinkCtxErr.Load()).To(MatchError(context.Canceled), "the attempt's context is cancelled")
			}
			g.Expect(s.attempts()).To(Equal(1), "queued events are not tried after Stop")
			snap := stats.Snapshot()
			g.Expect(snap.Delivered).To(BeZero())
			if tc.deadLetter {
				// The event had already failed for good before Stop; only the letter was cut short.
				g.Expect(snap.Failed).To(BeEquivalentTo(1))
				g.Expect(snap.DeadLettered).To(BeZero())
			} else {
				g.Expect(snap.Failed).To(BeZero(), "a cancelled attempt is not a failure")
			}
			// Workers are gone once Stop returns.
			g.Eventually(runtime.NumGoroutine).Should(BeNumerically("<=", before))
		})
	}
}

// A lane's worker ends once its lane idled, so an idle subscription holds no goroutines,
// and the next event starts one again.
func TestAnIdleLaneEndsItsWorker(t *testing.T) {
	g := newG(t)
	before := runtime.NumGoroutine()
	s := &fakeSink{send: func(context.Context, sink.Message, int) error { return nil }}
	p := Start(Options{Sink: s, Parallelism: 2})
	defer p.Stop()
	for rv := 1; rv <= 3; rv++ {
		g.Expect(p.Offer(newEvent("a", rv))).To(BeTrue())
		g.Eventually(s.attempts).Should(Equal(rv))
	}
	g.Eventually(runtime.NumGoroutine).Should(BeNumerically("<=", before), "the idle lane's worker ended")

	g.Expect(p.Offer(newEvent("a", 4))).To(BeTrue())
	g.Eventually(s.attempts).Should(Equal(4), "an event after the worker ended is delivered")
}

func TestStopCancelledAttemptDoesNotFlipHealth(t *testing.T) {
	g := newG(t)
	entered := make(chan struct{})
	s := &fakeSink{send: func(ctx context.Context, _ sink.Message, _ int) error {
		close(entered)
		<-ctx.Done()
		return errors.New("request aborted")
	}}
	stats := NewStats(Snapshot{})
	var note notifications
	p := Start(Options{Sink: s, Observer: &watching{stats: stats, notify: &note}})
	g.Expect(p.Offer(newEvent("a", 1))).To(BeTrue())
	g.Eventually(entered).Should(BeClosed())

	p.Stop()

	snap := stats.Snapshot()
	g.Expect(snap.Failing).To(BeFalse(), "an attempt cut short by Stop says nothing about the sink")
	g.Expect(snap.LastError).To(BeEmpty())
	g.Expect(note.urgent.Load()).To(BeZero())
}

func TestBackoff(t *testing.T) {
	g := NewWithT(t)
	p := Start(Options{Sink: &fakeSink{}, Retry: Retry{Backoff: 100 * time.Millisecond, MaxBackoff: time.Second}})
	defer p.Stop()

	for attempt := 1; attempt <= 10; attempt++ {
		d := min(100*time.Millisecond<<(attempt-1), time.Second)
		seen := map[time.Duration]bool{}
		for range 200 {
			got := p.backoff(attempt, 0)
			g.Expect(got).To(BeNumerically(">=", d/2), "attempt %d", attempt)
			g.Expect(got).To(BeNumerically("<=", d), "attempt %d", attempt)
			seen[got] = true
		}
		// Jitter spreads retries of many subscriptions apart.
		g.Expect(len(seen)).To(BeNumerically(">", 1), "attempt %d: no jitter", attempt)
	}

	cases := []struct {
		retryAfter, want time.Duration
	}{
		{5 * time.Second, time.Second}, // capped at MaxBackoff
		{time.Second, time.Second},
		{300 * time.Millisecond, 300 * time.Millisecond},
		{time.Millisecond, time.Millisecond}, // the sink's word wins, even below Backoff
	}
	for _, tc := range cases {
		for attempt := 1; attempt <= 5; attempt++ {
			g.Expect(p.backoff(attempt, tc.retryAfter)).To(Equal(tc.want), "attempt %d, Retry-After %v", attempt, tc.retryAfter)
		}
	}
}

func TestBackoffDefaults(t *testing.T) {
	cases := []struct {
		name               string
		retry              Retry
		attempt            int
		wantMin, wantMax   time.Duration
		wantMaxAttempts    int
		wantBackoffCeiling time.Duration
	}{
		{name: "defaults", attempt: 1, wantMin: DefaultBackoff / 2, wantMax: DefaultBackoff,
			wantMaxAttempts: DefaultMaxAttempts, wantBackoffCeiling: DefaultMaxBackoff},
		{name: "defaults, late attempt", attempt: 20, wantMin: DefaultMaxBackoff / 2, wantMax: DefaultMaxBackoff,
			wantMaxAttempts: DefaultMaxAttempts, wantBackoffCeiling: DefaultMaxBackoff},
		// A ceiling below the base is raised to it rather than shrinking every wait.
		{name: "max below base", retry: Retry{MaxAttempts: 2, Backoff: 2 * time.Second, MaxBackoff: time.Second},
			attempt: 3, wantMin: time.Second, wantMax: 2 * time.Second, wantMaxAttempts: 2,
			wantBackoffCeiling: 2 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			p := Start(Options{Sink: &fakeSink{}, Retry: tc.retry})
			defer p.Stop()
			g.Expect(p.opts.Retry.MaxAttempts).To(Equal(tc.wantMaxAttempts))
			g.Expect(p.opts.Retry.MaxBackoff).To(Equal(tc.wantBackoffCeiling))
			for range 50 {
				got := p.backoff(tc.attempt, 0)
				g.Expect(got).To(BeNumerically(">=", tc.wantMin))
				g.Expect(got).To(BeNumerically("<=", tc.wantMax))
			}
		})
	}
}

// doneLog records the events a pipeline reported finished, by resourceVersion.
type doneLog struct {
	mu  sync.Mutex
	rvs []string
}

func (d *doneLog) done(ev *event.Event) {
	d.mu.Lock()
	d.rvs = append(d.rvs, ev.ResourceVersion())
	d.mu.Unlock()
}

func (d *doneLog) get() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.rvs...)
}

func TestDoneOnlyForFinishedEvents(t *testing.T) {
	g := newG(t)
	gate := make(chan struct{})
	s := &fakeSink{send: func(ctx context.Context, msg sink.Message, _ int) error {
		switch msg.Event.ResourceVersion() {
		case "2":
			return httpError(http.StatusBadRequest) // fails for good at once
		case "4":
			<-ctx.Done() // still in flight when the pipeline stops
			return ctx.Err()
		}
		select {
		case <-gate:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	var done doneLog
	p := Start(Options{Sink: s, QueueSize: 3, Parallelism: 1, Retry: fastRetry, Observer: &watching{done: &done}})

	g.Expect(p.Offer(newEvent("a", 1))).To(BeTrue())
	g.Expect(p.Offer(newEvent("a", 2))).To(BeTrue())
	g.Expect(p.Offer(newEvent("a", 4))).To(BeTrue())
	g.Expect(p.Offer(newEvent("a", 5))).To(BeFalse(), "the queue holds three")
	g.Expect(done.get()).To(Equal([]string{"5"}), "a dropped event is finished with at once")

	gate <- struct{}{}
	g.Eventually(done.get).Should(Equal([]string{"5", "1", "2"}), "delivered, then failed for good")
	g.Eventually(s.attempts).Should(Equal(3))
	p.Stop()
	g.Consistently(done.get, 50*time.Millisecond).Should(Equal([]string{"5", "1", "2"}),
		"an event cut off by Stop is not finished: a checkpoint must not cover it")
}

func TestDrainWaitsForQueuedEvents(t *testing.T) {
	g := newG(t)
	gate := make(chan struct{})
	s := gatedSink(gate)
	p := Start(Options{Sink: s, QueueSize: 10, Parallelism: 1})
	defer p.Stop()
	g.Expect(p.Offer(newEvent("a", 1))).To(BeTrue())
	g.Expect(p.Offer(newEvent("a", 2))).To(BeTrue())

	short, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	g.Expect(p.Drain(short)).To(BeFalse(), "a drain that runs out of time says so")

	drained := make(chan bool, 1)
	go func() { drained <- p.Drain(context.Background()) }()
	g.Consistently(drained, 30*time.Millisecond).ShouldNot(Receive())
	gate <- struct{}{}
	gate <- struct{}{}
	g.Eventually(drained).Should(Receive(BeTrue()))
	g.Expect(s.accepted()).To(HaveLen(2))
}

func TestReplacementTakesOverWhatTheOldPipelineHeld(t *testing.T) {
	g := newG(t)
	var mu sync.Mutex
	var order []string
	failing := true
	s := &fakeSink{send: func(ctx context.Context, msg sink.Message, _ int) error {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			return httpError(http.StatusServiceUnavailable) // the old sink is down
		}
		order = append(order, msg.Event.ResourceVersion())
		return nil
	}}
	delivered := func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), order...) }
	var done doneLog
	slowRetry := Retry{MaxAttempts: 100, Backoff: time.Hour, MaxBackoff: time.Hour}

	old := Start(Options{Sink: s, Parallelism: 2, Retry: slowRetry, Observer: &watching{done: &done}})
	g.Expect(old.Offer(newEvent("a", 1))).To(BeTrue())
	g.Expect(old.Offer(newEvent("a", 2))).To(BeTrue())
	g.Eventually(s.attempts).Should(Equal(1), "event 1 is in flight, waiting to retry")

	replacement := Start(Options{Sink: s, Parallelism: 2, Held: true, Observer: &watching{done: &done}})
	defer replacement.Stop()
	g.Expect(replacement.Offer(newEvent("a", 3))).To(BeTrue())
	g.Expect(replacement.Offer(newEvent("b", 4))).To(BeTrue())
	g.Consistently(s.attempts, 50*time.Millisecond).Should(Equal(1), "a held pipeline sends nothing")

	mu.Lock()
	failing = false // the new spec points at a working sink
	mu.Unlock()
	replacement.TakeOver(old)
	g.Eventually(delivered).Should(HaveLen(4))
	got := delivered()
	g.Expect(got).To(ContainElements("1", "2", "3", "4"), "nothing the old pipeline held is lost")
	g.Expect(slices.Index(got, "1")).To(BeNumerically("<", slices.Index(got, "2")))
	g.Expect(slices.Index(got, "2")).To(BeNumerically("<", slices.Index(got, "3")),
		"an object's events keep their order across the change")
	g.Expect(done.get()).To(ConsistOf("1", "2", "3", "4"))
	g.Expect(old.Offer(newEvent("a", 5))).To(BeFalse(), "the replaced pipeline is stopped")
}

// TestHandOverLetsTheAttemptInFlightFinish: the sink is answering when the spec changes; its
// answer is awaited rather than cut short, so the event is not sent again.
func TestHandOverLetsTheAttemptInFlightFinish(t *testing.T) {
	g := NewWithT(t)
	answer := make(chan struct{})
	var mu sync.Mutex
	var sent []string
	s := &fakeSink{send: func(ctx context.Context, msg sink.Message, n int) error {
		mu.Lock()
		sent = append(sent, msg.Event.ResourceVersion())
		mu.Unlock()
		if n == 1 {
			select { // the first answer takes a while
			case <-answer:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}}
	var done doneLog
	old := Start(Options{Sink: s, Parallelism: 1, Observer: &watching{done: &done}})
	g.Expect(old.Offer(newEvent("a", 1))).To(BeTrue())
	g.Expect(old.Offer(newEvent("a", 2))).To(BeTrue())
	g.Eventually(s.attempts).Should(Equal(1), "event 1 is in flight")

	replacement := Start(Options{Sink: s, Parallelism: 1, Held: true, Observer: &watching{done: &done}})
	defer replacement.Stop()
	released := make(chan struct{})
	go func() {
		replacement.TakeOver(old)
		close(released)
	}()
	close(answer)
	<-released
	g.Eventually(done.get).Should(ConsistOf("1", "2"))
	mu.Lock()
	defer mu.Unlock()
	g.Expect(sent).To(Equal([]string{"1", "2"}), "event 1 was answered: it is not sent again")
}

// watching is the tests' Observer: status counters, metrics, notifications and Done, each
// optional, fed the way the controller feeds its own.
type watching struct {
	stats   *Stats
	metrics *recordingMetrics
	notify  *notifications
	done    *doneLog
	// depth is the last queue depth reported, when set.
	depth *atomic.Int64
}

func (w *watching) note(urgent bool) {
	if w.notify != nil {
		w.notify.notify(urgent)
	}
}

func (w *watching) Observed() {
	if w.stats != nil {
		w.stats.Observed()
	}
	if w.metrics != nil {
		w.metrics.Observed()
	}
	w.note(false)
}

func (w *watching) Attempted(n int, took time.Duration, err error) {
	flipped := w.stats != nil && w.stats.Attempted(n, err)
	if w.metrics != nil && err == nil {
		for range n {
			w.metrics.Delivered(took)
		}
	}
	if flipped || err == nil {
		w.note(flipped)
	}
}

func (w *watching) Failed(reason string) {
	if w.stats != nil {
		w.stats.Failed()
	}
	if w.metrics != nil {
		w.metrics.Failed(reason)
	}
	w.note(false)
}

func (w *watching) DeadLettered() {
	if w.stats != nil {
		w.stats.DeadLettered()
	}
	if w.metrics != nil {
		w.metrics.DeadLettered()
	}
}

func (w *watching) Dropped(evicted bool) {
	if w.stats != nil {
		w.stats.Dropped(evicted)
	}
	if w.metrics != nil {
		w.metrics.Dropped()
	}
	w.note(true)
}

func (w *watching) Accepted(*event.Event, time.Time) {}

func (w *watching) Coalesced() {
	if w.stats != nil {
		w.stats.Coalesced()
	}
}

func (w *watching) QueueDepth(n int) {
	if w.depth != nil {
		w.depth.Store(int64(n))
	}
}

func (w *watching) Done(ev *event.Event) {
	if w.done != nil {
		w.done.done(ev)
	}
}
