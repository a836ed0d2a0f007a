package delivery

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

// countdown closes done when the n-th call to hit arrives.
type countdown struct {
	left atomic.Int64
	done chan struct{}
}

func newCountdown(n int) *countdown {
	c := &countdown{done: make(chan struct{})}
	c.left.Store(int64(n))
	return c
}

func (c *countdown) hit() {
	if c.left.Add(-1) == 0 {
		close(c.done)
	}
}

// nopSink accepts everything; it only counts, so the benchmark measures the engine itself.
type nopSink struct{ c *countdown }

func (s nopSink) Send(context.Context, sink.Message) error {
	s.c.hit()
	return nil
}

// benchEvents builds n events over 64 objects, so all lanes are busy, before timing starts.
// Each is encoded already, as the first of its subscribers leaves it: the encoding is one
// per event, not per pipeline (event.BenchmarkDataEncode measures it).
func benchEvents(b *testing.B, n int) []*event.Event {
	evs := make([]*event.Event, n)
	for i := range evs {
		evs[i] = newEvent("cm-"+strconv.Itoa(i%64), i+1)
		if _, err := evs[i].Data(); err != nil {
			b.Fatal(err)
		}
	}
	return evs
}

// runPipeline times b.N events from Put to the last one arriving at the sink. Put, not
// Offer: a benchmark that drops events would measure nothing useful.
func runPipeline(b *testing.B, s sink.Sink, c *countdown) {
	evs := benchEvents(b, b.N)
	p := Start(Options{Sink: s, Parallelism: 4, QueueSize: 10000,
		Source: "/apis/notify.example/v1/namespaces/bench/watchsubscriptions/w"})
	defer p.Stop()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for _, ev := range evs {
		if err := p.Put(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
	<-c.done
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkPipelineToHTTPSink(b *testing.B) {
	c := newCountdown(b.N)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
		c.hit()
	}))
	defer srv.Close()
	client, err := sink.NewClients(sink.ClientOptions{}).For(sink.TLSMaterial{InsecureSkipVerify: false})
	if err != nil {
		b.Fatal(err)
	}
	runPipeline(b, &sink.Webhook{URL: srv.URL, Client: client}, c)
}

func BenchmarkPipelineToNopSink(b *testing.B) {
	c := newCountdown(b.N)
	runPipeline(b, nopSink{c}, c)
}
