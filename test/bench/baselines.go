package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	apiwatch "k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
)

// rawWatch is the "raw" baseline: a plain client-go watch on one resource and namespace,
// decoding into unstructured objects as the operator does, and nothing else.
type rawWatch struct {
	w    apiwatch.Interface
	done chan struct{}
}

// startRawWatch lists (for a resourceVersion) and watches from there; onEvent is called on
// the watch goroutine for every change with the time it arrived.
func (h *harness) startRawWatch(ctx context.Context, gvr schema.GroupVersionResource, ns string,
	onEvent func(obj *unstructured.Unstructured, at time.Duration)) (*rawWatch, error) {
	ri := h.dyn.Resource(gvr).Namespace(ns)
	list, err := ri.List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return nil, err
	}
	w, err := ri.Watch(ctx, metav1.ListOptions{ResourceVersion: list.GetResourceVersion()})
	if err != nil {
		return nil, err
	}
	r := &rawWatch{w: w, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for ev := range w.ResultChan() {
			at := now()
			if u, ok := ev.Object.(*unstructured.Unstructured); ok && ev.Type != apiwatch.Error {
				onEvent(u, at)
			}
		}
	}()
	return r, nil
}

func (r *rawWatch) stop() {
	r.w.Stop()
	<-r.done
}

// openRawWatches is the raw counterpart of convergence: the time to open one plain watch
// per resource, all at once.
func (h *harness) openRawWatches(ctx context.Context, ns string,
	gvrs []schema.GroupVersionResource) (time.Duration, error) {
	start := time.Now()
	ws := make([]apiwatch.Interface, len(gvrs))
	err := parallel(len(gvrs), len(gvrs), func(i int) error {
		var err error
		ws[i], err = h.dyn.Resource(gvrs[i]).Namespace(ns).Watch(ctx, metav1.ListOptions{})
		return err
	})
	took := time.Since(start)
	for _, w := range ws {
		if w != nil {
			w.Stop()
		}
	}
	return took, err
}

// naiveInformers is the "naive" baseline: one dynamic shared informer factory per
// subscription, each with its own informer, watch and full unstructured cache, as
// operators built from blog posts do.
type naiveInformers struct {
	stop      chan struct{}
	factories []dynamicinformer.DynamicSharedInformerFactory
	mu        sync.Mutex
	events    int
}

// startNaive starts n factories on gvr in ns and waits for their caches to sync.
func (h *harness) startNaive(ctx context.Context, gvr schema.GroupVersionResource, ns string,
	n int) (*naiveInformers, error) {
	return h.startNaiveOn(ctx, all(gvr), ns, n)
}

// startNaiveOn starts n factories, the i-th on gvr(i) in ns, and waits for their caches to sync.
func (h *harness) startNaiveOn(ctx context.Context, gvr gvrOf, ns string, n int) (*naiveInformers, error) {
	b := &naiveInformers{stop: make(chan struct{})}
	count := func(any) {
		b.mu.Lock()
		b.events++
		b.mu.Unlock()
	}
	for i := range n {
		f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(h.dyn, 0, ns, nil)
		// A handler, as any real consumer has one: it costs a listener and its buffer.
		if _, err := f.ForResource(gvr(i)).Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: count, UpdateFunc: func(_, obj any) { count(obj) }, DeleteFunc: count,
		}); err != nil {
			b.close()
			return nil, err
		}
		f.Start(b.stop)
		b.factories = append(b.factories, f)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for i, f := range b.factories {
		for _, synced := range f.WaitForCacheSync(wctx.Done()) {
			if !synced {
				b.close()
				return nil, errors.Join(wctx.Err(), fmt.Errorf("naive informer %d did not sync", i))
			}
		}
	}
	return b, nil
}

// close stops every informer and waits for their goroutines.
func (b *naiveInformers) close() {
	close(b.stop)
	for _, f := range b.factories {
		f.Shutdown()
	}
}
