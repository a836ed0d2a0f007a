package main

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// percentiles of a latency distribution, in milliseconds.
type percentiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// summarize computes nearest-rank percentiles.
func summarize(samples []time.Duration) percentiles {
	if len(samples) == 0 {
		return percentiles{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	at := func(p float64) float64 {
		i := max(int(p*float64(len(s))+0.999999)-1, 0)
		return ms(s[min(i, len(s)-1)])
	}
	return percentiles{N: len(s), P50: at(0.50), P95: at(0.95), P99: at(0.99), Max: ms(s[len(s)-1])}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// latencyRecorder turns arrivals into write-to-arrival latencies: the writer records when
// write i started, arrivals name the object, whose name ends in -<i>.
type latencyRecorder struct {
	starts []atomic.Int64
	// firsts is when the first delivery of each write arrived: with a fan-out, the
	// difference to all deliveries is the cost of the fan-out itself.
	firsts []atomic.Int64

	mu        sync.Mutex
	ours, raw []time.Duration
	unknown   int

	// usage is the process's, while the writes were timed.
	usage processUsage
}

func newLatencyRecorder(writes int) *latencyRecorder {
	return &latencyRecorder{starts: make([]atomic.Int64, writes), firsts: make([]atomic.Int64, writes)}
}

func (l *latencyRecorder) started(i int, at time.Duration) { l.starts[i].Store(int64(at)) }

func (l *latencyRecorder) ourArrival(d delivery) {
	if i, ok := l.record(&l.ours, d.Subject, d.At); ok {
		l.firsts[i].CompareAndSwap(0, int64(d.At))
	}
}

func (l *latencyRecorder) rawArrival(name string, at time.Duration) { l.record(&l.raw, name, at) }

// record adds the latency of an arrival for the write its name ends in.
func (l *latencyRecorder) record(dst *[]time.Duration, name string, at time.Duration) (int, bool) {
	i, ok := indexOf(name)
	l.mu.Lock()
	defer l.mu.Unlock()
	if !ok || i < 0 || i >= len(l.starts) || l.starts[i].Load() == 0 {
		l.unknown++
		return 0, false
	}
	*dst = append(*dst, at-time.Duration(l.starts[i].Load()))
	return i, true
}

// firstDeliveries are the latencies of each write's first delivery.
func (l *latencyRecorder) firstDeliveries() []time.Duration {
	var out []time.Duration
	for i := range l.firsts {
		if first := l.firsts[i].Load(); first != 0 {
			out = append(out, time.Duration(first-l.starts[i].Load()))
		}
	}
	return out
}

func (l *latencyRecorder) counts() (ours, raw int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ours), len(l.raw)
}

// waitCount waits until count() reaches want, or stops moving for idle. Falling short is
// a figure to report, not an error.
func waitCount(ctx context.Context, want int, idle time.Duration, count func() int) {
	last, since := count(), time.Now()
	for last < want && ctx.Err() == nil && time.Since(since) < idle {
		sleep(ctx, 10*time.Millisecond)
		if n := count(); n != last {
			last, since = n, time.Now()
		}
	}
}
