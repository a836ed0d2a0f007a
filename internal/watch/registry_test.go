package watch_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

var (
	cfg *rest.Config
	env *envtest.Environment
)

func TestMain(m *testing.M) {
	testenv.MainWith(m, testenv.UncachedPodTemplates, func(e *envtest.Environment, c *rest.Config) error {
		cfg, env = c, e
		return nil
	})
}

// collector is a Receiver that keeps everything, in order.
type collector struct {
	mu     sync.Mutex
	events []*event.Event
}

func (c *collector) Offer(ev *event.Event) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, ev)
	return true
}

func (c *collector) Put(_ context.Context, ev *event.Event) error {
	c.Offer(ev)
	return nil
}

// names lists "Type name" per event.
func (c *collector) names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.events))
	for i, ev := range c.events {
		out[i] = string(ev.Type) + " " + ev.Object.GetName()
	}
	return out
}

func newNamespace(t *testing.T, cs kubernetes.Interface) string {
	t.Helper()
	ns, err := cs.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "watch-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// synced polls whether the informer for key has had its first list.
func synced(reg *watch.Registry, key watch.Key) func() bool {
	return func() bool { st, _ := reg.State(key); return st.Synced }
}

func TestLateJoinerGetsEveryObjectExactlyOnceUnderConcurrentWrites(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(cfg)
	ns := newNamespace(t, cs)
	reg := watch.New(dynamic.NewForConfigOrDie(cfg), logr.Discard(), nil)
	t.Cleanup(reg.Stop)
	key := watch.Key{GVR: schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, Namespace: ns}

	first := &collector{}
	reg.Subscribe(key, watch.Subscriber{ID: "first", Receiver: first})
	g.Eventually(synced(reg, key)).WithTimeout(10 * time.Second).Should(BeTrue())

	const total = 150
	create := func(i int) {
		_, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%03d", i)}}, metav1.CreateOptions{})
		g.Expect(err).NotTo(HaveOccurred())
	}
	for i := range total / 2 {
		create(i)
	}
	// Join while writes continue: the joiner's LIST and the live stream overlap.
	late := &collector{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := total / 2; i < total; i++ {
			create(i)
		}
	}()
	reg.Subscribe(key, watch.Subscriber{ID: "late", SendInitialEvents: true, Receiver: late})
	<-done

	want := make([]string, total)
	for i := range want {
		want[i] = fmt.Sprintf("Added cm-%03d", i)
	}
	g.Eventually(late.names).WithTimeout(10*time.Second).Should(ConsistOf(want), "every object once, no gap, no duplicate")
	g.Eventually(first.names).WithTimeout(10 * time.Second).Should(Equal(want))

	// After catching up, the joiner follows the live stream like everyone else.
	g.Expect(cs.CoreV1().ConfigMaps(ns).Delete(ctx, "cm-000", metav1.DeleteOptions{})).To(Succeed())
	g.Eventually(late.names).Should(ContainElement("Deleted cm-000"))
	g.Consistently(late.names).WithTimeout(300 * time.Millisecond).Should(HaveLen(total + 1))
}

func TestLastUnsubscribeStopsTheInformer(t *testing.T) {
	g := NewWithT(t)
	cs := kubernetes.NewForConfigOrDie(cfg)
	ns := newNamespace(t, cs)
	reg := watch.New(dynamic.NewForConfigOrDie(cfg), logr.Discard(), nil)
	t.Cleanup(reg.Stop)
	key := watch.Key{GVR: schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, Namespace: ns}
	other := watch.Key{GVR: key.GVR, Namespace: ""}

	a := reg.Subscribe(key, watch.Subscriber{ID: "a", Receiver: &collector{}})
	b := reg.Subscribe(key, watch.Subscriber{ID: "b", Receiver: &collector{}})
	c := reg.Subscribe(other, watch.Subscriber{ID: "c", Receiver: &collector{}})
	g.Expect(reg.Keys()).To(ConsistOf(key, other), "one informer per distinct scope")
	g.Expect(reg.Subscribers(key)).To(Equal(2))

	a.Unsubscribe()
	a.Unsubscribe() // idempotent
	g.Expect(reg.Keys()).To(ConsistOf(key, other))
	b.Unsubscribe()
	g.Expect(reg.Keys()).To(Equal([]watch.Key{other}))
	_, running := reg.State(key)
	g.Expect(running).To(BeFalse())
	c.Unsubscribe()
	g.Expect(reg.Keys()).To(BeEmpty())
}
