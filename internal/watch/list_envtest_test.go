package watch_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	apiwatch "k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

// hooks let a test act between the pages of a list and cut the informer's watch.
type hooks struct {
	mu           sync.Mutex
	betweenPages func() // runs once, before the next page after it is set
	pages        atomic.Int64
	gate         *watchGate
}

// watchGate belongs to the watches opened since the last expire: down drops their events,
// expired ends them with 410 Gone.
type watchGate struct {
	down    atomic.Bool
	expired chan struct{}
}

func newHooks() *hooks { return &hooks{gate: &watchGate{expired: make(chan struct{})}} }

func (h *hooks) onNextPage(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.betweenPages = f
}

// cut drops what the current watch brings from now on, as if it had broken.
func (h *hooks) cut() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gate.down.Store(true)
}

// expire ends the current watch with 410 Gone: the reflector lists again.
func (h *hooks) expire() {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.gate.expired)
	h.gate = &watchGate{expired: make(chan struct{})}
}

type hookedClient struct {
	dynamic.Interface
	h *hooks
}

func (c hookedClient) Resource(gvr schema.GroupVersionResource) dynamic.NamespaceableResourceInterface {
	return hookedResource{c.Interface.Resource(gvr), c.h}
}

type hookedResource struct {
	dynamic.NamespaceableResourceInterface
	h *hooks
}

func (r hookedResource) Namespace(ns string) dynamic.ResourceInterface {
	return hookedScope{r.NamespaceableResourceInterface.Namespace(ns), r.h}
}

type hookedScope struct {
	dynamic.ResourceInterface
	h *hooks
}

func (s hookedScope) List(ctx context.Context, opts metav1.ListOptions) (*unstructured.UnstructuredList, error) {
	if opts.Continue != "" {
		s.h.mu.Lock()
		f := s.h.betweenPages
		s.h.betweenPages = nil
		s.h.mu.Unlock()
		if f != nil {
			f()
		}
	}
	s.h.pages.Add(1)
	return s.ResourceInterface.List(ctx, opts)
}

func (s hookedScope) Watch(ctx context.Context, opts metav1.ListOptions) (apiwatch.Interface, error) {
	w, err := s.ResourceInterface.Watch(ctx, opts)
	if err != nil {
		return nil, err
	}
	s.h.mu.Lock()
	gate := s.h.gate
	s.h.mu.Unlock()
	g := &gatedWatch{inner: w, gate: gate, out: make(chan apiwatch.Event), stop: make(chan struct{})}
	go g.run()
	return g, nil
}

type gatedWatch struct {
	inner    apiwatch.Interface
	gate     *watchGate
	out      chan apiwatch.Event
	stop     chan struct{}
	stopOnce sync.Once
}

func (g *gatedWatch) ResultChan() <-chan apiwatch.Event { return g.out }

func (g *gatedWatch) Stop() { g.stopOnce.Do(func() { close(g.stop); g.inner.Stop() }) }

func (g *gatedWatch) run() {
	defer close(g.out)
	send := func(ev apiwatch.Event) bool {
		select {
		case g.out <- ev:
			return true
		case <-g.stop:
			return false
		}
	}
	for {
		select {
		case ev, ok := <-g.inner.ResultChan():
			if !ok {
				return
			}
			if !g.gate.down.Load() && !send(ev) {
				return
			}
		case <-g.gate.expired:
			send(apiwatch.Event{Type: apiwatch.Error, Object: &metav1.Status{Status: metav1.StatusFailure,
				Code: 410, Reason: metav1.StatusReasonExpired, Message: "too old resource version"}})
			g.inner.Stop()
			return
		case <-g.stop:
			return
		}
	}
}

// pagedScope fills a new namespace with ConfigMaps cm-00… and starts a registry on it whose
// lists come in pages of 10, through h.
func pagedScope(t *testing.T, objects int) (*watch.Registry, watch.Key, *hooks, func(name, v string)) {
	t.Helper()
	t.Cleanup(watch.SetListPageSize(10))
	cs := kubernetes.NewForConfigOrDie(cfg)
	ns := newNamespace(t, cs)
	cms := cs.CoreV1().ConfigMaps(ns)
	ctx := context.Background()
	put := func(name, v string) {
		t.Helper()
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"v": v}}
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
				t.Error(err)
			}
		}
	}
	for n := range objects {
		put(fmt.Sprintf("cm-%02d", n), "1")
	}
	h := newHooks()
	reg := watch.New(hookedClient{dynamic.NewForConfigOrDie(cfg), h}, logr.Discard(), nil)
	t.Cleanup(reg.Stop)
	return reg, watch.Key{GVR: configMaps(), Namespace: ns}, h, put
}

func deleteConfigMap(t *testing.T, ns, name string) {
	t.Helper()
	cs := kubernetes.NewForConfigOrDie(cfg)
	if err := cs.CoreV1().ConfigMaps(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Error(err)
	}
}

// Changes made while the first list is between pages are not in its snapshot: the watch,
// from the snapshot's resourceVersion, brings each of them once.
func TestStreamedListMissesNoChangeMadeBetweenPages(t *testing.T) {
	g := NewWithT(t)
	reg, key, h, put := pagedScope(t, 25)
	h.onNextPage(func() {
		put("cm-01", "2") // on the page already in
		put("cm-22", "2") // on a page still to come
		deleteConfigMap(t, key.Namespace, "cm-23")
		put("cm-30", "1")
	})
	got := &collector{}
	reg.Subscribe(key, watch.Subscriber{ID: "s", Receiver: got})
	g.Eventually(synced(reg, key)).WithTimeout(20 * time.Second).Should(BeTrue())
	g.Expect(h.pages.Load()).To(BeNumerically(">=", 3), "the list came in pages")

	put("cm-barrier", "1")
	g.Eventually(got.names).WithTimeout(20*time.Second).Should(ContainElement("Added cm-barrier"), "barrier")
	g.Expect(got.names()).To(Equal([]string{"Updated cm-01", "Updated cm-22", "Deleted cm-23", "Added cm-30",
		"Added cm-barrier"}), "each change between pages once, in order, and nothing of the list itself")
}

// After the watch expires (410), the streamed relist sends what changed while no watch ran,
// page by page, then deletions; a deletion during the relist comes from the watch after it.
func TestStreamedRelistSendsTheGapOnce(t *testing.T) {
	g := NewWithT(t)
	reg, key, h, put := pagedScope(t, 25)
	got := &collector{}
	reg.Subscribe(key, watch.Subscriber{ID: "s", Receiver: got})
	g.Eventually(synced(reg, key)).WithTimeout(20 * time.Second).Should(BeTrue())
	put("cm-00", "2")
	g.Eventually(got.names).WithTimeout(20*time.Second).Should(ContainElement("Updated cm-00"), "the watch runs")

	h.cut()
	put("cm-02", "2")
	deleteConfigMap(t, key.Namespace, "cm-13")
	put("cm-40", "1")
	h.onNextPage(func() { deleteConfigMap(t, key.Namespace, "cm-24") })
	h.expire()
	g.Eventually(got.names).WithTimeout(30*time.Second).Should(ContainElement("Deleted cm-13"), "relisted")

	put("cm-barrier", "1")
	g.Eventually(got.names).WithTimeout(30*time.Second).Should(ContainElement("Added cm-barrier"), "barrier")
	g.Expect(got.names()).To(Equal([]string{"Updated cm-00", "Updated cm-02", "Added cm-40", "Deleted cm-13",
		"Deleted cm-24", "Added cm-barrier"}), "the gap's changes once, deletions after the last page")
}

// Old objects kept while the first list streams in cover every page: the first update of an
// object on any page carries the object as it was.
func TestStreamedListKeepsOldObjectsOfEveryPage(t *testing.T) {
	g := NewWithT(t)
	reg, key, _, put := pagedScope(t, 25)
	got := &collector{}
	reg.Subscribe(key, watch.Subscriber{ID: "s", NeedsOldObject: true, Receiver: got})
	g.Eventually(synced(reg, key)).WithTimeout(20 * time.Second).Should(BeTrue())
	put("cm-03", "2")
	put("cm-23", "2")
	g.Eventually(got.names).WithTimeout(20 * time.Second).Should(Equal([]string{"Updated cm-03", "Updated cm-23"}))
	got.mu.Lock()
	defer got.mu.Unlock()
	for _, ev := range got.events {
		g.Expect(ev.OldObject).NotTo(BeNil(), ev.Object.GetName())
		v, _, _ := unstructured.NestedString(ev.OldObject.Object, "data", "v")
		g.Expect(v).To(Equal("1"), ev.Object.GetName())
	}
}
