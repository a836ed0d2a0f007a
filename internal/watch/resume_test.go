package watch_test

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/dynamic-notifier/dynamic-notifier/internal/checkpoint"
	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

// memStore keeps checkpoints in memory; the ConfigMap store has its own test.
type memStore struct {
	mu     sync.Mutex
	points map[watch.PointKey]watch.Point
	saves  int
}

func (m *memStore) Load(context.Context) (map[watch.PointKey]watch.Point, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.points), nil
}

func (m *memStore) Save(_ context.Context, p map[watch.PointKey]watch.Point) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.points, m.saves = maps.Clone(p), m.saves+1
	return nil
}

// sub is the point of the subscriber every test here calls "sub" (in its one stream).
func (m *memStore) sub() (watch.Point, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return pointOf(m.points, "sub")
}

// pointOf finds the point of a subscriber that has one stream.
func pointOf(points map[watch.PointKey]watch.Point, subscriber string) (watch.Point, bool) {
	for k, p := range points {
		if k.Subscriber == subscriber {
			return p, true
		}
	}
	return watch.Point{}, false
}

// delivering is a Receiver that finishes every event at once, like a sink that answers
// immediately, unless hold is set.
type delivering struct {
	collector
	progress *watch.Progress
	mu       sync.Mutex
	hold     bool
	held     []*event.Event
}

func (d *delivering) Offer(ev *event.Event) bool {
	d.collector.Offer(ev)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.hold {
		d.held = append(d.held, ev)
	} else {
		d.progress.Done(ev)
	}
	return true
}

// Put takes an initial event like any other: finished at once unless held.
func (d *delivering) Put(_ context.Context, ev *event.Event) error {
	d.Offer(ev)
	return nil
}

func (d *delivering) release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, ev := range d.held {
		d.progress.Done(ev)
	}
	d.held, d.hold = nil, false
}

func (d *delivering) ids() []string {
	d.collector.mu.Lock()
	defer d.collector.mu.Unlock()
	out := make([]string, len(d.events))
	for i, ev := range d.events {
		out[i] = ev.ID()
	}
	return out
}

func (d *delivering) subscriber(name string) watch.Subscriber {
	return watch.Subscriber{ID: name + "#1", Checkpoint: name, Progress: d.progress, Receiver: d}
}

func newDelivering() *delivering { return &delivering{progress: watch.NewProgress()} }

// runningRegistry starts a registry with checkpoints the way the manager runs it; stop
// shuts it down (drain, last save) and waits.
func runningRegistry(t *testing.T, store checkpoint.Store) (*watch.Registry, func()) {
	t.Helper()
	log := testr.NewWithOptions(t, testr.Options{Verbosity: 1})
	reg := watch.New(dynamic.NewForConfigOrDie(cfg), log, nil)
	keeper := checkpoint.NewKeeper(reg, store, 50*time.Millisecond, 5*time.Second, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = keeper.Start(ctx)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Error("registry did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	return reg, stop
}

// compactEtcd drops etcd's history up to now, as its periodic compaction does.
func compactEtcd(t *testing.T) {
	t.Helper()
	if err := testenv.CompactEtcd(env); err != nil {
		t.Fatal(err)
	}
}

// configMapScope is a new namespace's ConfigMaps and the informer key that watches them.
func configMapScope(t *testing.T) (typedcorev1.ConfigMapInterface, watch.Key) {
	t.Helper()
	cs := kubernetes.NewForConfigOrDie(cfg)
	ns := newNamespace(t, cs)
	return cs.CoreV1().ConfigMaps(ns), watch.Key{GVR: configMaps(), Namespace: ns}
}

func configMaps() schema.GroupVersionResource {
	return schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
}

func id(obj metav1.Object, t event.Type) string {
	return string(obj.GetUID()) + ":" + obj.GetResourceVersion() + ":" + string(t)
}

func TestRestartResumesFromCheckpointWithoutAddedStorm(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	cms, key := configMapScope(t)
	store := &memStore{}

	existing := map[string]*corev1.ConfigMap{}
	for _, name := range []string{"a", "b", "c"} {
		cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		g.Expect(err).NotTo(HaveOccurred())
		existing[name] = cm
	}

	reg, stop := runningRegistry(t, store)
	first := newDelivering()
	reg.Subscribe(key, first.subscriber("sub"))
	g.Eventually(synced(reg, key)).Should(BeTrue())
	a1 := existing["a"].DeepCopy()
	a1.Data = map[string]string{"v": "1"}
	a1, err := cms.Update(ctx, a1, metav1.UpdateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(first.ids).Should(Equal([]string{id(a1, event.Updated)}))
	stop()
	saved, ok := store.sub()
	g.Expect(ok).To(BeTrue(), "shutdown saves a checkpoint")
	g.Expect(saved.ResourceVersion).To(Equal(a1.ResourceVersion), "the checkpoint covers what was delivered")

	// While no registry runs: an update, a delete and a create.
	a2 := a1.DeepCopy()
	a2.Data = map[string]string{"v": "2"}
	a2, err = cms.Update(ctx, a2, metav1.UpdateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(cms.Delete(ctx, "b", metav1.DeleteOptions{})).To(Succeed())
	d, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "d"}}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())

	reg2, _ := runningRegistry(t, store)
	second := newDelivering()
	reg2.Subscribe(key, second.subscriber("sub"))
	g.Eventually(func() []string {
		ids := second.ids()
		// The Deleted id carries the deletion's resourceVersion, which the test cannot know;
		// keep the uid and the type.
		for i, s := range ids {
			if len(s) > 0 && s[len(s)-len(":Deleted"):] == ":Deleted" {
				ids[i] = string(existing["b"].UID) + ":Deleted"
			}
		}
		return ids
	}).Should(Equal([]string{id(a2, event.Updated), string(existing["b"].UID) + ":Deleted", id(d, event.Added)}),
		"the changes made while stopped, in order, and no Added for objects that already existed")

	// Later changes flow as usual and move the checkpoint.
	c1 := existing["c"].DeepCopy()
	c1.Data = map[string]string{"v": "1"}
	c1, err = cms.Update(ctx, c1, metav1.UpdateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(second.ids).Should(ContainElement(id(c1, event.Updated)))
	g.Eventually(func() string { p, _ := store.sub(); return p.ResourceVersion }).Should(Equal(c1.ResourceVersion))
}

// TestResumedSubscriberGetsNoInitialEventsAgain: initial events go out once, in the run that
// first subscribed; a restart resumes from the checkpoint instead of sending every object
// again.
func TestResumedSubscriberGetsNoInitialEventsAgain(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	cms, key := configMapScope(t)
	store := &memStore{}
	names := []string{"a", "b"}
	existing := make([]*corev1.ConfigMap, 0, len(names))
	for _, name := range names {
		cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		g.Expect(err).NotTo(HaveOccurred())
		existing = append(existing, cm)
	}

	reg, stop := runningRegistry(t, store)
	first := newDelivering()
	sub := first.subscriber("sub")
	sub.SendInitialEvents = true
	reg.Subscribe(key, sub)
	g.Eventually(first.ids).Should(ConsistOf(id(existing[0], event.Added), id(existing[1], event.Added)))
	g.Eventually(func() bool { _, ok := store.sub(); return ok }).Should(BeTrue(), "checkpointed once they are delivered")
	stop()

	reg2, _ := runningRegistry(t, store)
	second := newDelivering()
	sub = second.subscriber("sub")
	sub.SendInitialEvents = true
	reg2.Subscribe(key, sub)
	g.Eventually(synced(reg2, key)).Should(BeTrue())
	c, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c"}}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(second.ids).Should(ContainElement(id(c, event.Added)))
	g.Expect(second.ids()).To(Equal([]string{id(c, event.Added)}), "no initial event again, only the change after")
}

func TestLateJoinerResumesFromTheBuffer(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	cms, key := configMapScope(t)
	store := &memStore{}

	reg, stop := runningRegistry(t, store)
	early, late := newDelivering(), newDelivering()
	reg.Subscribe(key, early.subscriber("early"))
	reg.Subscribe(key, late.subscriber("late"))
	g.Eventually(synced(reg, key)).Should(BeTrue())
	x, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(late.ids).Should(Equal([]string{id(x, event.Added)}))
	stop()

	y, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "y"}}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())

	reg2, _ := runningRegistry(t, store)
	early2, late2 := newDelivering(), newDelivering()
	reg2.Subscribe(key, early2.subscriber("early"))
	g.Eventually(early2.ids).Should(Equal([]string{id(y, event.Added)}))
	// A change after the restart, before the second subscriber is back.
	z, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "z"}}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(early2.ids).Should(Equal([]string{id(y, event.Added), id(z, event.Added)}))

	reg2.Subscribe(key, late2.subscriber("late"))
	g.Eventually(late2.ids).Should(Equal([]string{id(y, event.Added), id(z, event.Added)}),
		"a subscriber that comes back late gets what it missed from the resume buffer")
}

func TestCheckpointNeverCoversEventsInFlight(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	cms, key := configMapScope(t)
	store := &memStore{}

	reg, _ := runningRegistry(t, store)
	sub := newDelivering()
	reg.Subscribe(key, sub.subscriber("sub"))
	g.Eventually(synced(reg, key)).Should(BeTrue())
	g.Eventually(func() bool { _, ok := store.sub(); return ok }).Should(BeTrue())
	before, _ := store.sub()

	sub.mu.Lock()
	sub.hold = true
	sub.mu.Unlock()
	created := make([]*corev1.ConfigMap, 0, 2)
	for _, name := range []string{"p", "q"} {
		cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		g.Expect(err).NotTo(HaveOccurred())
		created = append(created, cm)
	}
	g.Eventually(sub.ids).Should(HaveLen(2))
	g.Consistently(func() string { p, _ := pointOf(reg.Checkpoints(), "sub"); return p.ResourceVersion }, "300ms").
		Should(Equal(before.ResourceVersion), "held events keep the checkpoint where it was")

	sub.release()
	g.Eventually(func() string { p, _ := store.sub(); return p.ResourceVersion }).
		Should(Equal(created[1].ResourceVersion), "finished events move the checkpoint")
}

func TestCheckpointOutsideTheWatchWindowResyncs(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(cfg)
	ns := newNamespace(t, cs)
	// Pod templates are served from etcd, not the watch cache (see TestMain), so a compaction
	// makes the API server answer 410 Gone as after a long outage.
	pts := cs.CoreV1().PodTemplates(ns)
	key := watch.Key{GVR: schema.GroupVersionResource{Version: "v1", Resource: "podtemplates"}, Namespace: ns}
	template := func(name string) *corev1.PodTemplate {
		return &corev1.PodTemplate{ObjectMeta: metav1.ObjectMeta{Name: name}, Template: corev1.PodTemplateSpec{
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}
	}

	old, err := pts.Create(ctx, template("old"), metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	compactEtcd(t)
	// A checkpoint from before the compaction: the API server can no longer watch from it.
	store := &memStore{points: map[watch.PointKey]watch.Point{
		{Subscriber: "sub", Stream: key.String()}: {Stream: key.String(), ResourceVersion: "2", Time: time.Now().Add(time.Hour)},
	}}
	var resyncs []event.ResyncInfo
	var mu sync.Mutex
	reg, _ := runningRegistry(t, store)
	d := newDelivering()
	s := d.subscriber("sub")
	s.OnResync = func(info event.ResyncInfo) { mu.Lock(); resyncs = append(resyncs, info); mu.Unlock() }
	reg.Subscribe(key, s)

	g.Eventually(d.ids, "20s").Should(ContainElement("resync:sub:"+key.String()+":2"),
		"a resync event when the watch cannot resume from the checkpoint")
	g.Expect(d.ids()).To(ContainElement(id(old, event.Updated)),
		"objects changed since the checkpoint are re-sent (Updated: created before the checkpoint time)")
	mu.Lock()
	defer mu.Unlock()
	g.Expect(resyncs).To(HaveLen(1))
	g.Expect(resyncs[0].Reason).To(Equal(watch.ResyncWatchExpired))

	// And the stream goes on.
	n, err := pts.Create(ctx, template("new"), metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(d.ids).Should(ContainElement(id(n, event.Added)))
	g.Expect(slices.Index(d.ids(), id(n, event.Added))).To(BeNumerically(">", slices.Index(d.ids(), "resync:sub:"+key.String()+":2")))
}

func TestPointBefore(t *testing.T) {
	early, late := time.Unix(1000, 0), time.Unix(2000, 0)
	for _, tc := range []struct {
		name string
		p, q watch.Point
		want bool
	}{
		{"by resourceVersion, as numbers", watch.Point{ResourceVersion: "9", Time: late},
			watch.Point{ResourceVersion: "10", Time: early}, true},
		{"a later resourceVersion", watch.Point{ResourceVersion: "10"}, watch.Point{ResourceVersion: "9"}, false},
		{"by time when one is not a number", watch.Point{ResourceVersion: "x", Time: early},
			watch.Point{ResourceVersion: "10", Time: late}, true},
		{"the same point", watch.Point{ResourceVersion: "10"}, watch.Point{ResourceVersion: "10"}, false},
	} {
		if got := tc.p.Before(tc.q); got != tc.want {
			t.Errorf("%s: Before = %v, want %v", tc.name, got, tc.want)
		}
	}
}
