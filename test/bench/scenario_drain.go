package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	pipeline "github.com/dynamic-notifier/dynamic-notifier/internal/delivery"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

// drainPhase: the fan-out's creates reach every subscription while the sink holds all
// requests, so the deliveries wait in the operator's queues; then the sink opens and the
// operator delivers the backlog as fast as it can. Unlike the live fan-out, whose rate
// cannot exceed the rate the API server takes the writes, this is the delivery path's own
// capacity.
type drainPhase struct {
	Subscriptions int    `json:"subscriptions"`
	Writes        int    `json:"writes"`
	ContentMode   string `json:"contentMode"`
	Expected      int    `json:"expected"`
	Delivered     int    `json:"delivered"`
	// Seconds from opening the sink until the last delivery arrived; Rate is Delivered over it.
	Seconds      float64 `json:"seconds"`
	Rate         float64 `json:"rate"`
	SinkRequests int64   `json:"sinkRequests"`
}

// rawPostsPhase is the baseline: the same number of binary-mode CloudEvents, one request
// each, posted straight to the sink by as many goroutines as the operator has delivery
// lanes, over a kept-alive client.
type rawPostsPhase struct {
	Posts   int     `json:"posts"`
	Senders int     `json:"senders"`
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"rate"`
}

func runDrain(ctx context.Context, h *harness) ([]Row, any, error) {
	type details struct {
		Drains []drainPhase  `json:"drains"`
		Raw    rawPostsPhase `json:"rawPosts"`
	}
	var d details
	for _, mode := range []notifyv1.ContentMode{notifyv1.ContentModeBinary, notifyv1.ContentModeBatched} {
		p, err := h.drain(ctx, h.opts.FanOutSubs, h.opts.FanOutWrites, mode)
		d.Drains = append(d.Drains, p)
		if err != nil {
			return nil, d, fmt.Errorf("%s: %w", mode, err)
		}
	}
	var err error
	senders := h.opts.FanOutSubs * pipeline.DefaultParallelism
	if d.Raw, err = h.rawPosts(ctx, h.opts.FanOutSubs*h.opts.FanOutWrites, senders); err != nil {
		return nil, d, fmt.Errorf("raw posts: %w", err)
	}
	rows := make([]Row, 0, len(d.Drains))
	for _, p := range d.Drains {
		label := fmt.Sprintf("Fan-out backlog, %s × %d creates, %s", subs(p.Subscriptions), p.Writes, p.ContentMode)
		rows = append(rows, newRow("drain/"+p.ContentMode, label, "deliveries/s to the sink", "/s",
			p.Rate, d.Raw.Rate, fmt.Sprintf("raw POSTs from %d senders", d.Raw.Senders)).
			goal("≥ 20,000/s, all delivered", p.Delivered == p.Expected && p.Rate >= 20000).
			note("%d of %d delivered in %.2f s; %d requests", p.Delivered, p.Expected, p.Seconds, p.SinkRequests))
	}
	return rows, d, nil
}

func (h *harness) drain(ctx context.Context, nSubs, nWrites int, mode notifyv1.ContentMode) (drainPhase, error) {
	p := drainPhase{Subscriptions: nSubs, Writes: nWrites, ContentMode: string(mode), Expected: nSubs * nWrites}
	ns, r, done, err := h.subscribedNamespace(ctx, "drain", nSubs, func(ws *notifyv1.WatchSubscription) {
		ws.Spec.Sink.Webhook.ContentMode = mode
	})
	if err != nil {
		return p, err
	}
	defer done()

	var delivered atomic.Int64
	var last atomic.Int64
	h.sink.handle(func(dl delivery) {
		delivered.Add(1)
		last.Store(int64(dl.At))
	})
	defer h.sink.handle(nil)
	release := h.sink.hold()
	released := false
	defer func() {
		if !released {
			release()
		}
	}()

	if _, err := h.create(ctx, writes{ns: ns, prefix: "d", count: nWrites, workers: h.opts.Writers,
		bytes: h.opts.ObjectBytes}); err != nil {
		return p, err
	}
	queued := "every subscription to have queued every create"
	if err := poll(ctx, 20*time.Millisecond, time.Minute, queued, func() (bool, error) {
		observed, err := operatorCounter("dynamicnotifier_events_observed_total", ns)
		return int(observed) == p.Expected, err
	}); err != nil {
		return p, err
	}

	requestsBefore := h.sink.requests.Load()
	opened := now()
	release()
	released = true
	waitCount(ctx, p.Expected, 10*time.Second, func() int { return int(delivered.Load()) })
	h.sink.handle(nil)
	p.Delivered = int(delivered.Load())
	p.SinkRequests = h.sink.requests.Load() - requestsBefore
	if end := time.Duration(last.Load()); end > opened {
		p.Seconds = (end - opened).Seconds()
		p.Rate = float64(p.Delivered) / p.Seconds
	}
	h.logf("drain %d × %d %s: %d of %d delivered in %.2f s (%.0f/s), %d requests", nSubs, nWrites, mode,
		p.Delivered, p.Expected, p.Seconds, p.Rate, p.SinkRequests)

	return p, h.unsubscribe(ctx, ns, r)
}

// rawPosts sends n binary-mode CloudEvents of the benchmark's object size to the sink from
// senders goroutines and times them.
func (h *harness) rawPosts(ctx context.Context, n, senders int) (rawPostsPhase, error) {
	p := rawPostsPhase{Posts: n, Senders: senders}
	client, err := sink.NewClients(sink.ClientOptions{}).For(sink.TLSMaterial{})
	if err != nil {
		return p, err
	}
	body := []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"payload":"` +
		strings.Repeat("x", max(h.opts.ObjectBytes, 1)) + `"}}`)
	var delivered atomic.Int64
	h.sink.handle(func(delivery) { delivered.Add(1) })
	defer h.sink.handle(nil)
	start := time.Now()
	at := start.UTC().Format(time.RFC3339Nano)
	err = parallel(n, senders, func(i int) error {
		return postCloudEvent(ctx, client, h.sink.URL, "/raw", plainChange{id: strconv.Itoa(i), body: body,
			subject: "/api/v1/namespaces/raw/configmaps/d-" + strconv.Itoa(i), time: at})
	})
	p.Seconds = time.Since(start).Seconds()
	p.Rate = float64(delivered.Load()) / p.Seconds
	client.CloseIdleConnections()
	h.logf("raw posts: %d from %d senders in %.2f s (%.0f/s)", n, senders, p.Seconds, p.Rate)
	return p, err
}
