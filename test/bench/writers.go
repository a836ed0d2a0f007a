package main

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// writes describes a batch of ConfigMap creations named <prefix>-<i>.
type writes struct {
	ns, prefix string
	// from is the first index; count writes follow.
	from, count int
	workers     int
	// bytes is the size of the ConfigMap's data.
	bytes int
	// interval, when set, starts one write per interval instead of back to back, so
	// latency is measured on an idle pipeline rather than behind a queue.
	interval time.Duration
	// started, when set, is told each write's index just before its Create call.
	started func(i int, at time.Duration)
}

// writeResult is when the first write started and the last one returned.
type writeResult struct {
	First, Last time.Duration
}

// create runs the writes and returns the first error, if any.
func (h *harness) create(ctx context.Context, w writes) (writeResult, error) {
	data := map[string]string{"payload": strings.Repeat("x", max(w.bytes, 1))}
	var last atomic.Int64
	first := now()
	write := func(i int) error {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: w.prefix + "-" + strconv.Itoa(w.from+i), Namespace: w.ns},
			Data: data}
		if w.started != nil {
			w.started(i, now())
		}
		_, err := h.cs.CoreV1().ConfigMaps(w.ns).Create(ctx, cm, metav1.CreateOptions{})
		last.Store(int64(now()))
		return err
	}
	var err error
	if w.interval > 0 {
		err = paced(ctx, w.count, w.workers, w.interval, write)
	} else {
		err = parallel(w.count, w.workers, write)
	}
	return writeResult{First: first, Last: time.Duration(last.Load())}, err
}

// paced starts fn(i) every interval on up to workers goroutines. A write that has to wait
// for a free worker starts late rather than being skipped.
func paced(ctx context.Context, n, workers int, interval time.Duration, fn func(i int) error) error {
	sem := make(chan struct{}, workers)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := range n {
		select {
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		case sem <- struct{}{}:
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	wg.Wait()
	return first
}

// indexOf reads i from an object name or API path ending in <prefix>-<i>.
func indexOf(name string) (int, bool) {
	i, err := strconv.Atoi(name[strings.LastIndexByte(name, '-')+1:])
	return i, err == nil
}

// update makes changes to the ConfigMaps <prefix>-0 … <prefix>-<objects-1> of ns, round
// robin, from workers goroutines as fast as the API server takes them: each is a merge
// patch setting data.seq to the change's number, so every one is a real change.
func (h *harness) update(ctx context.Context, ns, prefix string, objects, changes, workers int) (writeResult, error) {
	var last atomic.Int64
	first := now()
	err := parallel(changes, workers, func(i int) error {
		patch := []byte(`{"data":{"seq":"` + strconv.Itoa(i) + `"}}`)
		_, err := h.cs.CoreV1().ConfigMaps(ns).Patch(ctx, prefix+"-"+strconv.Itoa(i%objects), types.MergePatchType,
			patch, metav1.PatchOptions{})
		last.Store(int64(now()))
		return err
	})
	return writeResult{First: first, Last: time.Duration(last.Load())}, err
}
