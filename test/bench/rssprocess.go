package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// shippedContainerLimit is the shipped Deployment's memory limit, 256Mi; the process sets
// GOMEMLIMIT to 90% of it (operator.UseContainerMemoryLimit).
const shippedContainerLimit = 256 << 20

// naiveProcessMain is main of the naive baseline's process: POST /start starts one dynamic
// informer factory on the ConfigMaps of ns (managedFields kept, a counting handler), GET
// /synced says whether its cache has synced.
func naiveProcessMain(cfg *rest.Config, ns string) int {
	quietLogs()
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "naive process:", err)
		return 1
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fail(err)
	}
	var (
		once   sync.Once
		synced atomic.Bool
		events atomic.Int64
	)
	count := func(any) { events.Add(1) }
	mux := http.NewServeMux()
	mux.HandleFunc("POST /start", func(w http.ResponseWriter, _ *http.Request) {
		once.Do(func() {
			f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, 0, ns, nil)
			inf := f.ForResource(configMaps).Informer()
			_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
				AddFunc: count, UpdateFunc: func(_, obj any) { count(obj) }, DeleteFunc: count,
			})
			f.Start(make(chan struct{})) // runs until the process ends
			go func() {
				if cache.WaitForCacheSync(make(chan struct{}), inf.HasSynced) {
					synced.Store(true)
				}
			}()
		})
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /synced", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(synced.Load())
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	return serveProcess(mux, nil, fail)
}

// post sends an empty POST to the process.
func (p *operatorProcess) post(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url+path, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("process %s: %w", path, err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("process %s: %s", path, resp.Status)
	}
	return nil
}

// rssReading is one process's resident memory (VmRSS, what `kubectl top` and the OOM killer
// see) through an initial sync of objects objects, no collection forced.
type rssReading struct {
	// Idle is before the sync, once the process has started; Peak the most it was from the
	// sync's start until Settled, which is read RSSSettle after the sync.
	Idle    uint64 `json:"idle"`
	Peak    uint64 `json:"peak"`
	Settled uint64 `json:"settled"`
	// PeakFromHWM says the kernel's high-water mark could be reset, so Peak covers the
	// moments between the 20 ms samples too.
	PeakFromHWM      bool    `json:"peakFromHWM"`
	PeakPerObject    float64 `json:"peakPerObject"`
	SettledPerObject float64 `json:"settledPerObject"`
	Sync             string  `json:"sync"`
}

// rssThroughSync starts a process as spec says, and reads its RSS while load runs (until
// the process has the objects) and RSSSettle after.
func (h *harness) rssThroughSync(ctx context.Context, spec processSpec, objects int,
	load func(ctx context.Context, p *operatorProcess) error) (rssReading, error) {
	var r rssReading
	p, err := h.startProcess(ctx, spec, shippedContainerLimit)
	if err != nil {
		return r, err
	}
	defer p.stop()
	sleep(ctx, h.opts.Settle) // start-up work (caches, first status writes) done
	r.Idle, _ = p.rss()
	if r.PeakFromHWM, err = p.resetPeaks(ctx); err != nil {
		return r, err
	}

	var sampled atomic.Uint64
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if now, _ := p.rss(); now > sampled.Load() {
				sampled.Store(now)
			}
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	start := time.Now()
	err = load(ctx, p)
	r.Sync = time.Since(start).Round(time.Millisecond).String()
	if err == nil {
		sleep(ctx, h.opts.RSSSettle)
	}
	cancel()
	wg.Wait()
	if err != nil {
		return r, err
	}
	now, hwm := p.rss()
	r.Settled, r.Peak = now, sampled.Load()
	if r.PeakFromHWM {
		r.Peak = max(r.Peak, hwm)
	}
	r.PeakPerObject = float64(int64(r.Peak)-int64(r.Idle)) / float64(objects)
	r.SettledPerObject = float64(int64(r.Settled)-int64(r.Idle)) / float64(objects)
	return r, nil
}
