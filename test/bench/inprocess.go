package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/operator"
)

// runningOperator is the whole operator in a manager of its own, wired as the tests and
// the binary wire it.
type runningOperator struct {
	*operator.Operator
	cancel context.CancelFunc
	done   chan error
}

// startOperator starts the operator and warms it up: the controller's workers, caches and
// Event broadcaster start lazily and stay, so a baseline taken before the first
// subscription would charge them to it.
func (h *harness) startOperator(ctx context.Context) (*runningOperator, error) {
	r, err := launchOperator(h.opCfg, operatorOptions(h.operatorNS))
	if err != nil {
		return nil, err
	}
	if err := h.warmUp(ctx, r); err != nil {
		return nil, errors.Join(fmt.Errorf("warming up the operator: %w", err), r.stop())
	}
	return r, nil
}

// operatorOptions are the binary's defaults, SubjectAccessReview included: every namespace
// the harness creates lets its default ServiceAccount list and watch what is in it.
func operatorOptions(checkpointNamespace string) operator.Options {
	return operator.Options{CheckpointNamespace: checkpointNamespace}
}

// launchOperator starts the operator with opts in a manager of its own on cfg.
func launchOperator(cfg *rest.Config, opts operator.Options) (*runningOperator, error) {
	mgr, err := operator.NewEmbeddedManager(cfg)
	if err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	op, err := operator.Setup(mgr, opts)
	if err != nil {
		return nil, fmt.Errorf("operator: %w", err)
	}
	mctx, cancel := context.WithCancel(context.Background())
	r := &runningOperator{Operator: op, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- mgr.Start(mctx) }()
	return r, nil
}

func (r *runningOperator) stop() error {
	r.cancel()
	return <-r.done
}

func (h *harness) warmUp(ctx context.Context, r *runningOperator) error {
	ns, err := h.namespace(ctx, "warm-up")
	if err != nil {
		return err
	}
	ws := subscription(ns, "warm-up", secrets, h.sink.URL)
	if err := h.k8s.Create(ctx, ws); err != nil {
		return err
	}
	if err := h.waitReady(ctx, ns, 1, time.Minute); err != nil {
		return err
	}
	return h.unsubscribe(ctx, ns, r)
}

// waitNoInformers waits until the registry has stopped every informer.
func (r *runningOperator) waitNoInformers(ctx context.Context, timeout time.Duration) error {
	return poll(ctx, 5*time.Millisecond, timeout, "the registry to stop every informer", func() (bool, error) {
		select {
		case err := <-r.done:
			r.done <- err
			return false, fmt.Errorf("the manager stopped: %w", err)
		default:
		}
		return len(r.Registry.Keys()) == 0, nil
	})
}

// subscription is a WatchSubscription on gvr in its own namespace, posting to url.
func subscription(ns, name string, gvr schema.GroupVersionResource, url string) *notifyv1.WatchSubscription {
	return &notifyv1.WatchSubscription{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: notifyv1.WatchSubscriptionSpec{
			Resource: notifyv1.ResourceRef{Group: gvr.Group, Version: gvr.Version, Resource: gvr.Resource},
			Sink:     &notifyv1.Sink{Webhook: &notifyv1.WebhookSink{URL: url}},
		},
	}
}

// gvrOf gives the i-th subscription's resource.
type gvrOf func(i int) schema.GroupVersionResource

// all gives every subscription the same resource.
func all(gvr schema.GroupVersionResource) gvrOf {
	return func(int) schema.GroupVersionResource { return gvr }
}

// createSubscriptions creates n subscriptions named sub-<i> in ns, gvr(i) their resource,
// from several goroutines as a `kubectl apply` of many files would; tweaks change each
// spec before it is created.
func (h *harness) createSubscriptions(ctx context.Context, ns string, n int, gvr gvrOf,
	tweaks ...func(*notifyv1.WatchSubscription)) error {
	return parallel(n, 16, func(i int) error {
		ws := subscription(ns, "sub-"+strconv.Itoa(i), gvr(i), h.sink.URL)
		for _, tweak := range tweaks {
			tweak(ws)
		}
		return h.k8s.Create(ctx, ws)
	})
}

// unsubscribe deletes the subscriptions of ns and waits until the operator has stopped
// every informer.
func (h *harness) unsubscribe(ctx context.Context, ns string, r *runningOperator) error {
	if err := h.deleteSubscriptions(ctx, ns); err != nil {
		return err
	}
	return r.waitNoInformers(ctx, time.Minute)
}

func (h *harness) deleteSubscriptions(ctx context.Context, ns string) error {
	return h.k8s.DeleteAllOf(ctx, &notifyv1.WatchSubscription{}, client.InNamespace(ns))
}

// waitReady polls until n subscriptions of ns are Ready for their current generation.
func (h *harness) waitReady(ctx context.Context, ns string, n int, timeout time.Duration) error {
	ready := 0
	var notReady string // one of those not Ready, with its condition
	err := poll(ctx, 100*time.Millisecond, timeout, "subscriptions to be Ready", func() (bool, error) {
		list := &notifyv1.WatchSubscriptionList{}
		if err := h.k8s.List(ctx, list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		ready = 0
		for i := range list.Items {
			if ws := &list.Items[i]; isReady(ws) {
				ready++
			} else {
				notReady = ws.Name + ": " + fmt.Sprint(ws.Status.Conditions)
			}
		}
		return ready == n, nil
	})
	if err != nil {
		return fmt.Errorf("%d of %d Ready (%s): %w", ready, n, notReady, err)
	}
	return nil
}

func isReady(ws *notifyv1.WatchSubscription) bool {
	for _, c := range ws.Status.Conditions {
		if c.Type == notifyv1.ConditionReady {
			return ws.Status.ObservedGeneration == ws.Generation && c.Status == metav1.ConditionTrue &&
				c.Reason == notifyv1.ReasonWatching
		}
	}
	return false
}

// readyTracker follows the subscriptions of a namespace through a watch and counts the
// Ready ones, so convergence is timed to the moment the API server has the last status,
// without listing a thousand objects over and over.
type readyTracker struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	ready map[string]bool
}

func (h *harness) trackReady(ctx context.Context, ns string) (*readyTracker, error) {
	gvr := notifyv1.GroupVersion.WithResource("watchsubscriptions")
	inf := dynamicinformer.NewFilteredDynamicInformer(h.dyn, gvr, ns, 0, cache.Indexers{}, nil).Informer()
	t := &readyTracker{ready: map[string]bool{}}
	set := func(obj any) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return
		}
		ws := &notifyv1.WatchSubscription{}
		if runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, ws) != nil {
			return
		}
		t.mu.Lock()
		t.ready[ws.Name] = isReady(ws)
		t.mu.Unlock()
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, obj any) { set(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if u, ok := obj.(*unstructured.Unstructured); ok {
				t.mu.Lock()
				delete(t.ready, u.GetName())
				t.mu.Unlock()
			}
		},
	}); err != nil {
		return nil, err
	}
	tctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	t.wg.Go(func() { inf.RunWithContext(tctx) })
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.stop()
		return nil, errors.New("the Ready tracker did not sync")
	}
	return t, nil
}

func (t *readyTracker) count() (ready, total int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range t.ready {
		if r {
			ready++
		}
	}
	return ready, len(t.ready)
}

// waitReady waits until n subscriptions are Ready.
func (t *readyTracker) waitReady(ctx context.Context, n int, timeout time.Duration) error {
	return poll(ctx, 5*time.Millisecond, timeout, fmt.Sprintf("%d subscriptions to be Ready", n), func() (bool, error) {
		ready, _ := t.count()
		return ready >= n, nil
	})
}

func (t *readyTracker) stop() {
	t.cancel()
	t.wg.Wait()
}

// operatorCounter sums one of the operator's Prometheus counters over the subscriptions of
// a namespace, read in-process from the controller-runtime registry.
func operatorCounter(name, namespace string) (float64, error) {
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		return 0, err
	}
	total := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["namespace"] == namespace {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total, nil
}

// parallel runs fn(0..n-1) on workers goroutines; after the first error no new call starts.
func parallel(n, workers int, fn func(i int) error) error {
	var (
		next  atomic.Int64
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return first != nil
	}
	for range min(workers, n) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n && !failed(); i = int(next.Add(1) - 1) {
				if err := fn(i); err != nil {
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}
