package checkpoint_test

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/dynamic-notifier/dynamic-notifier/internal/checkpoint"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

var k8s client.Client

func TestMain(m *testing.M) {
	testenv.Main(m, func(_ *envtest.Environment, cfg *rest.Config) error {
		var err error
		k8s, err = client.New(cfg, client.Options{})
		return err
	})
}

func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "checkpoint-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

func key(sub, stream string) watch.PointKey { return watch.PointKey{Subscriber: sub, Stream: stream} }

func TestSaveAndLoadRoundTrip(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	store := &checkpoint.ConfigMaps{Client: k8s, Namespace: newNamespace(t)}

	points, err := store.Load(ctx)
	g.Expect(err).NotTo(HaveOccurred(), "no ConfigMap yet is not an error")
	g.Expect(points).To(BeEmpty())

	at := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	first := map[watch.PointKey]watch.Point{key("ns/a/uid-a", "configmaps./v1@ns"): {Stream: "configmaps./v1@ns", ResourceVersion: "10", Time: at}}
	g.Expect(store.Save(ctx, first)).To(Succeed(), "the first save creates the ConfigMap")
	second := map[watch.PointKey]watch.Point{
		key("ns/a/uid-a", "configmaps./v1@ns"):    {Stream: "configmaps./v1@ns", ResourceVersion: "12", Time: at},
		key("ns/a/uid-a", "configmaps./v1@other"): {Stream: "configmaps./v1@other", ResourceVersion: "9", Time: at},
		key("ns/b/uid-b", "secrets./v1@*"):        {Stream: "secrets./v1@*", ResourceVersion: "11", Time: at},
	}
	g.Expect(store.Save(ctx, second)).To(Succeed(), "later saves replace it")

	got, err := (&checkpoint.ConfigMaps{Client: k8s, Namespace: store.Namespace}).Load(ctx)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got).To(Equal(second), "one point per subscriber and stream: a subscription over two namespaces keeps both")

	var list corev1.ConfigMapList
	g.Expect(k8s.List(ctx, &list, client.InNamespace(store.Namespace))).To(Succeed())
	g.Expect(list.Items).NotTo(BeEmpty())
	for _, cm := range list.Items {
		g.Expect(cm.Labels).To(HaveKeyWithValue("app.kubernetes.io/managed-by", "dynamic-notifier"))
	}
}

// TestTenThousandSubscriptionsSaveAndOnlyChangesAreWritten: one ConfigMap overflowed its 1 MiB
// at about 5,800 subscriptions; spread over several, 10,000 subscriptions with two streams
// each fit, and a change to one subscription rewrites one ConfigMap.
func TestTenThousandSubscriptionsSaveAndOnlyChangesAreWritten(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	counting, store := countingStore(ns)
	at := time.Now().UTC().Truncate(time.Second)
	points := map[watch.PointKey]watch.Point{}
	for i := range 10000 {
		sub := fmt.Sprintf("namespace-%04d/subscription-%04d/%08d-1111-2222-3333-444444444444", i%500, i, i)
		for _, stream := range []string{"deployments.apps/v1@namespace-a", "deployments.apps/v1@namespace-b"} {
			points[key(sub, stream)] = watch.Point{Stream: stream, ResourceVersion: fmt.Sprint(1000000 + i), Time: at}
		}
	}
	g.Expect(store.Save(ctx, points)).To(Succeed())
	const shards = 16 // 20,000 points at 1,500 a ConfigMap
	g.Expect(counting.writes()).To(Equal(shards), "every shard created in one request")

	got, err := (&checkpoint.ConfigMaps{Client: k8s, Namespace: ns}).Load(ctx)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got).To(HaveLen(len(points)))
	g.Expect(got).To(Equal(points))

	for k, p := range points {
		p.ResourceVersion = "2000000"
		points[k] = p
		break
	}
	g.Expect(store.Save(ctx, points)).To(Succeed())
	g.Expect(counting.writes()).To(Equal(shards+1), "a change to one point rewrites one ConfigMap")
	g.Expect(store.Save(ctx, points)).To(Succeed())
	g.Expect(counting.writes()).To(Equal(shards+1), "nothing changed, nothing written")
}

// TestSaveAsksOnceForEachShard: a shard Load did not see is created at once and one it saw
// is updated at once; where that guess is stale, the other request follows and the point
// is stored all the same.
func TestSaveAsksOnceForEachShard(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	at := time.Now().UTC().Truncate(time.Second)
	points := func(rv string) map[watch.PointKey]watch.Point {
		return map[watch.PointKey]watch.Point{key("ns/a/uid-a", "s@ns"): {Stream: "s@ns", ResourceVersion: rv, Time: at}}
	}

	counting, store := countingStore(ns)
	_, err := store.Load(ctx)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(store.Save(ctx, points("1"))).To(Succeed())
	g.Expect(counting.writes()).To(Equal(1), "a new shard: one create, no update that fails first")
	g.Expect(store.Save(ctx, points("2"))).To(Succeed())
	g.Expect(counting.writes()).To(Equal(2), "a shard written before: one update")

	restarted, again := countingStore(ns)
	loaded, err := again.Load(ctx)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(loaded).To(Equal(points("2")))
	g.Expect(again.Save(ctx, points("3"))).To(Succeed())
	g.Expect(restarted.writes()).To(Equal(1), "a shard Load saw: one update")

	stale, unloaded := countingStore(ns)
	g.Expect(unloaded.Save(ctx, points("4"))).To(Succeed(), "a shard that exists after all is updated")
	g.Expect(stale.writes()).To(Equal(2), "the create that found it, then the update")
	got, err := (&checkpoint.ConfigMaps{Client: k8s, Namespace: ns}).Load(ctx)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got).To(Equal(points("4")))
}

// points gives n subscribers one point each on one stream, at resourceVersion rv.
func points(n int, rv string) map[watch.PointKey]watch.Point {
	at := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	out := map[watch.PointKey]watch.Point{}
	for i := range n {
		// Subscribers are namespace/name/uid, and a uid is random: hex of a multiplicative hash.
		out[key(fmt.Sprintf("ns/sub-%05d/%08x-7d3c-4d2e-9f1a-%012x", i, uint32(i)*2654435761, i), "configmaps./v1@ns")] =
			watch.Point{Stream: "configmaps./v1@ns", ResourceVersion: rv, Time: at}
	}
	return out
}

func checkpointConfigMaps(t *testing.T, ns string) map[string]int {
	t.Helper()
	var list corev1.ConfigMapList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, cm := range list.Items {
		out[cm.Name] = strings.Count(cm.Data["checkpoints.json"], `"resourceVersion"`)
	}
	return out
}

// TestASmallInstallationSavesOneConfigMap: a hundred subscribers are one write a save, not
// one per shard; more points spread over more ConfigMaps, and a store that finds the 32
// ConfigMaps of an earlier version moves their points into its one and empties the rest.
func TestASmallInstallationSavesOneConfigMap(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	counting, store := countingStore(ns)
	g.Expect(store.Save(ctx, points(100, "10"))).To(Succeed())
	g.Expect(counting.writes()).To(Equal(1), "100 points: one ConfigMap")
	g.Expect(checkpointConfigMaps(t, ns)).To(Equal(map[string]int{checkpoint.DefaultName + "-00": 100}))

	grown := points(4000, "11")
	g.Expect(store.Save(ctx, grown)).To(Succeed())
	spread := checkpointConfigMaps(t, ns)
	g.Expect(spread).To(HaveLen(4), "4,000 points: four ConfigMaps of at most 1,500 each (by hash, so some leeway)")
	total := 0
	for _, n := range spread {
		total += n
	}
	g.Expect(total).To(Equal(4000), "each point stored once")
	got, err := (&checkpoint.ConfigMaps{Client: k8s, Namespace: ns}).Load(ctx)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got).To(Equal(grown))

	old := newNamespace(t)
	g.Expect((&checkpoint.ConfigMaps{Client: k8s, Namespace: old, Shards: checkpoint.DefaultShards}).
		Save(ctx, points(100, "12"))).To(Succeed())
	g.Expect(len(checkpointConfigMaps(t, old))).To(BeNumerically(">", 10), "the old layout: spread over many")
	upgraded := &checkpoint.ConfigMaps{Client: k8s, Namespace: old}
	loaded, err := upgraded.Load(ctx)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(loaded).To(Equal(points(100, "12")))
	g.Expect(upgraded.Save(ctx, points(100, "13"))).To(Succeed())
	for name, n := range checkpointConfigMaps(t, old) {
		if name == checkpoint.DefaultName+"-00" {
			g.Expect(n).To(Equal(100), "every point in the one ConfigMap")
		} else {
			g.Expect(n).To(BeZero(), "%s emptied", name)
		}
	}
}

// TestAGrowthCutShortLosesNoPoint: when more points need a second ConfigMap, half of the
// first one's move there. They are written in their new ConfigMap before the old one is
// rewritten without them, and the old one is left alone when that write fails: a save cut
// short after any write leaves each point somewhere, and where it is twice, Load resumes
// from the older (some changes sent again, none skipped).
func TestAGrowthCutShortLosesNoPoint(t *testing.T) {
	for _, tc := range []struct {
		name string
		// fail says whether the n-th write (from 1) fails.
		fail func(n int) bool
	}{
		{"the process stops after the first write", func(n int) bool { return n > 1 }},
		{"the first write fails", func(n int) bool { return n == 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			ctx := context.Background()
			ns := newNamespace(t)
			before := points(100, "20")
			g.Expect((&checkpoint.ConfigMaps{Client: k8s, Namespace: ns}).Save(ctx, before)).To(Succeed())
			g.Expect(checkpointConfigMaps(t, ns)).To(HaveLen(1))

			store := &checkpoint.ConfigMaps{Client: &faultyWriter{Client: k8s, fail: tc.fail}, Namespace: ns}
			_, err := store.Load(ctx)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(store.Save(ctx, points(2000, "30"))).NotTo(Succeed(), "2,000 points need two ConfigMaps")

			got, err := (&checkpoint.ConfigMaps{Client: k8s, Namespace: ns}).Load(ctx)
			g.Expect(err).NotTo(HaveOccurred())
			for k := range before {
				g.Expect(got).To(HaveKeyWithValue(k, HaveField("ResourceVersion", "20")),
					"%s: stored before the save, resumed from there", k)
			}
		})
	}
}

// faultyWriter fails the writes (creates and updates) fail picks.
type faultyWriter struct {
	client.Client
	fail func(n int) bool
	n    int
}

func (f *faultyWriter) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	if f.n++; f.fail(f.n) {
		return apierrors.NewServiceUnavailable("injected")
	}
	return f.Client.Update(ctx, obj, opts...)
}

func (f *faultyWriter) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	if f.n++; f.fail(f.n) {
		return apierrors.NewServiceUnavailable("injected")
	}
	return f.Client.Create(ctx, obj, opts...)
}

func TestVersionOneDocumentIsReadAndRemoved(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	legacy := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: checkpoint.DefaultName, Labels: map[string]string{
		"app.kubernetes.io/name": "dynamic-notifier", "app.kubernetes.io/component": "checkpoints",
		"app.kubernetes.io/managed-by": "dynamic-notifier"}},
		Data: map[string]string{"checkpoints.json": `{"version": 1, "subscriptions": {"ns/a/u": ` +
			`{"stream": "configmaps./v1@ns", "resourceVersion": "7", "time": "2026-11-26T09:00:00Z"}}}`}}
	g.Expect(k8s.Create(ctx, legacy)).To(Succeed())
	store := &checkpoint.ConfigMaps{Client: k8s, Namespace: ns}
	got, err := store.Load(ctx)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got).To(HaveKeyWithValue(key("ns/a/u", "configmaps./v1@ns"), HaveField("ResourceVersion", "7")))
	g.Expect(store.Save(ctx, got)).To(Succeed())
	err = k8s.Get(ctx, client.ObjectKeyFromObject(legacy), &corev1.ConfigMap{})
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the version 1 document is removed once saved anew: %v", err)
	again, err := (&checkpoint.ConfigMaps{Client: k8s, Namespace: ns}).Load(ctx)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(again).To(Equal(got))
}

func TestUnreadableCheckpointsMeanStartingFresh(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	for _, data := range []string{`not json`, `{"version": 99, "points": [{"subscriber": "x", "stream": "s", "resourceVersion": "1"}]}`} {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: checkpoint.DefaultName + "-00",
			Labels: map[string]string{"app.kubernetes.io/name": "dynamic-notifier", "app.kubernetes.io/component": "checkpoints",
				"app.kubernetes.io/managed-by": "dynamic-notifier"}},
			Data: map[string]string{"checkpoints.json": data}}
		_ = k8s.Delete(ctx, cm)
		g.Eventually(func() error { return k8s.Create(ctx, cm.DeepCopy()) }).Should(Succeed())
		points, err := (&checkpoint.ConfigMaps{Client: k8s, Namespace: ns}).Load(ctx)
		g.Expect(err).NotTo(HaveOccurred(), data)
		g.Expect(points).To(BeEmpty(), data)
	}
}

// countingStore is a store in ns whose writes are counted.
func countingStore(ns string) (*countingWriter, *checkpoint.ConfigMaps) {
	counting := &countingWriter{Client: k8s}
	return counting, &checkpoint.ConfigMaps{Client: counting, Namespace: ns}
}

// countingWriter counts the ConfigMap writes that reach the API server.
type countingWriter struct {
	client.Client
	mu sync.Mutex
	n  int
}

func (c *countingWriter) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	c.count()
	return c.Client.Update(ctx, obj, opts...)
}

func (c *countingWriter) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	c.count()
	return c.Client.Create(ctx, obj, opts...)
}

func (c *countingWriter) count() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
}

func (c *countingWriter) writes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func TestReplicasSharingConfigMapsKeepEachOthersPoints(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	at := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	owns := func(resource string) func(watch.PointKey) bool {
		return func(pk watch.PointKey) bool { return strings.HasPrefix(pk.Stream, resource+".") }
	}
	// Two ConfigMaps only: both replicas write into both.
	a := &checkpoint.ConfigMaps{Client: k8s, Namespace: ns, Shards: 2, Owns: owns("configmaps")}
	b := &checkpoint.ConfigMaps{Client: k8s, Namespace: ns, Shards: 2, Owns: owns("secrets")}
	pointsOf := func(resource string, rv int) map[watch.PointKey]watch.Point {
		out := map[watch.PointKey]watch.Point{}
		for i := range 20 {
			stream := resource + "./v1@ns"
			out[key(fmt.Sprintf("ns/%s-%d/uid", resource, i), stream)] = watch.Point{Stream: stream,
				ResourceVersion: fmt.Sprint(rv + i), Time: at}
		}
		return out
	}
	var wg sync.WaitGroup
	for round := range 5 {
		wg.Go(func() { g.Expect(a.Save(ctx, pointsOf("configmaps", 100*round))).To(Succeed()) })
		wg.Go(func() { g.Expect(b.Save(ctx, pointsOf("secrets", 100*round+50))).To(Succeed()) })
		wg.Wait()
	}
	want := pointsOf("configmaps", 400)
	maps.Copy(want, pointsOf("secrets", 450))
	got, err := (&checkpoint.ConfigMaps{Client: k8s, Namespace: ns}).Load(ctx)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got).To(Equal(want), "each replica's last points, none undone by the other's writes")

	// A replica that no longer has a point it owns (the subscription is gone) removes it;
	// the other's stay.
	fewer := pointsOf("configmaps", 400)
	delete(fewer, key("ns/configmaps-3/uid", "configmaps./v1@ns"))
	g.Expect(a.Save(ctx, fewer)).To(Succeed())
	got, err = (&checkpoint.ConfigMaps{Client: k8s, Namespace: ns}).Load(ctx)
	g.Expect(err).NotTo(HaveOccurred())
	delete(want, key("ns/configmaps-3/uid", "configmaps./v1@ns"))
	g.Expect(got).To(Equal(want))
}
