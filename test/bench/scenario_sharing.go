package main

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// sharePhase is one side (ours or naive) at one subscription count.
type sharePhase struct {
	Subscriptions int `json:"subscriptions"`
	// Informers is the registry's count for ours, the factories for naive.
	Informers int `json:"informers"`
	// Watches is the API server's count of ConfigMap watches opened by this side.
	Watches   int   `json:"watches"`
	HeapDelta int64 `json:"heapDelta"`
	RSSDelta  int64 `json:"rssDelta"`
	Before    heap  `json:"before"`
	After     heap  `json:"after"`
	// Setup is from the first create until every subscription is Ready (ours) or every
	// informer synced (naive).
	Setup string `json:"setup"`
}

type shareDetails struct {
	Objects int          `json:"objects"`
	Ours    []sharePhase `json:"ours"`
	Naive   []sharePhase `json:"naive"`
}

// runSharing: N subscriptions on ConfigMaps in one namespace. Ours should open one API
// server watch for all of them; naive opens one each, and caches the namespace N times.
func runSharing(ctx context.Context, h *harness) ([]Row, any, error) {
	ns, err := h.namespace(ctx, "share")
	if err != nil {
		return nil, nil, err
	}
	// Objects, so every naive informer has something to cache, as it would in real life.
	if _, err := h.create(ctx, writes{ns: ns, prefix: "obj", count: h.opts.ShareObjects, workers: 8,
		bytes: h.opts.ObjectBytes}); err != nil {
		return nil, nil, err
	}
	defer func() { _ = h.deleteConfigMaps(context.WithoutCancel(ctx), ns) }()

	details := &shareDetails{Objects: h.opts.ShareObjects}
	var rows []Row
	for _, n := range h.opts.ShareSubs {
		ours, err := h.shareOurs(ctx, ns, n)
		if err != nil {
			return rows, details, fmt.Errorf("ours, %d subscriptions: %w", n, err)
		}
		details.Ours = append(details.Ours, ours)
		naive, err := h.shareNaive(ctx, ns, n)
		if err != nil {
			return rows, details, fmt.Errorf("naive, %d subscriptions: %w", n, err)
		}
		details.Naive = append(details.Naive, naive)
		h.logf("sharing %d: watches %d vs %d, heap %s vs %s, RSS %s vs %s", n, ours.Watches, naive.Watches,
			format(float64(ours.HeapDelta), "bytes"), format(float64(naive.HeapDelta), "bytes"),
			format(float64(ours.RSSDelta), "bytes"), format(float64(naive.RSSDelta), "bytes"))

		label := "Sharing, " + subs(n)
		id := "sharing/" + strconv.Itoa(n) + "/"
		rows = append(rows,
			newRow(id+"watches", label, "API server watches opened", "", float64(ours.Watches), float64(naive.Watches), "naive").
				goal("= distinct (GVR, scope) = 1", ours.Watches == 1),
			newRow(id+"heap", label, "heap in use, delta", "bytes", float64(ours.HeapDelta), float64(naive.HeapDelta), "naive"),
			newRow(id+"rss", label, "RSS, delta", "bytes", float64(ours.RSSDelta), float64(naive.RSSDelta), "naive"),
		)
	}
	return rows, details, nil
}

func (h *harness) shareOurs(ctx context.Context, ns string, n int) (sharePhase, error) {
	p := sharePhase{Subscriptions: n}
	r, err := h.startOperator(ctx)
	if err != nil {
		return p, err
	}
	defer h.stopOperator(r)
	watchesBefore, err := h.watches(ctx, configMaps)
	if err != nil {
		return p, err
	}
	p.Before = h.settledHeap(ctx, fmt.Sprintf("sharing-%d-ours-before", n))

	tracker, err := h.trackReady(ctx, ns)
	if err != nil {
		return p, err
	}
	start := time.Now()
	err = h.createSubscriptions(ctx, ns, n, all(configMaps))
	if err == nil {
		err = tracker.waitReady(ctx, n, readyTimeout(n))
	}
	p.Setup = time.Since(start).Round(time.Millisecond).String()
	tracker.stop() // not the operator's: out of the heap figure
	if err != nil {
		return p, err
	}
	p.Informers = len(r.Registry.Keys())
	watches, err := h.waitWatches(ctx, watchesBefore+p.Informers, 10*time.Second, configMaps)
	if err != nil {
		return p, err
	}
	p.Watches = watches - watchesBefore
	p.After = h.settledHeap(ctx, fmt.Sprintf("sharing-%d-ours-after", n))
	p.HeapDelta, p.RSSDelta = heapDelta(p.Before, p.After), rssDelta(p.Before, p.After)

	if err := h.unsubscribe(ctx, ns, r); err != nil {
		return p, err
	}
	_, err = h.waitWatches(ctx, watchesBefore, 10*time.Second, configMaps)
	return p, err
}

func (h *harness) shareNaive(ctx context.Context, ns string, n int) (sharePhase, error) {
	p := sharePhase{Subscriptions: n, Informers: n}
	watchesBefore, err := h.watches(ctx, configMaps)
	if err != nil {
		return p, err
	}
	p.Before = h.settledHeap(ctx, fmt.Sprintf("sharing-%d-naive-before", n))
	start := time.Now()
	b, err := h.startNaive(ctx, configMaps, ns, n)
	if err != nil {
		return p, err
	}
	p.Setup = time.Since(start).Round(time.Millisecond).String()
	watches, err := h.waitWatches(ctx, watchesBefore+n, 30*time.Second, configMaps)
	if err != nil {
		b.close()
		return p, err
	}
	p.Watches = watches - watchesBefore
	p.After = h.settledHeap(ctx, fmt.Sprintf("sharing-%d-naive-after", n))
	p.HeapDelta, p.RSSDelta = heapDelta(p.Before, p.After), rssDelta(p.Before, p.After)
	b.close()
	_, err = h.waitWatches(ctx, watchesBefore, 30*time.Second, configMaps)
	return p, err
}

// readyTimeout bounds a wait for n subscriptions: generous, it only stops a stuck run.
func readyTimeout(n int) time.Duration { return 2*time.Minute + time.Duration(n)*100*time.Millisecond }

// stopOperator stops the operator and drops the sink connections it kept alive, so the
// next phase's baseline does not include them.
func (h *harness) stopOperator(r *runningOperator) {
	if err := r.stop(); err != nil {
		h.logf("operator stopped with: %v", err)
	}
	h.sink.closeIdle()
}
