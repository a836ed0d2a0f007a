package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

func TestAddUpdateDeleteArriveInOrderAsCloudEvents(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	startOperator(t)
	ns := newNamespace(t)
	sk := newSink(t)
	ws := subscription(ns, "cms", sk.URL)
	create(t, ws)
	cond := waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	g.Expect(cond.Status).To(Equal(metav1.ConditionTrue))

	cm := configMap(ns, "settings", nil)
	create(t, cm)
	added := cm.DeepCopy()
	touch(t, cm)
	updated := cm.DeepCopy()
	g.Expect(k8s.Delete(ctx, cm)).To(Succeed())

	subject := "/api/v1/namespaces/" + ns + "/configmaps/settings"
	g.Eventually(sk.summary).WithTimeout(10 * time.Second).Should(Equal([]string{
		"added " + subject, "updated " + subject, "deleted " + subject}))

	events := sk.Events()
	source := "/apis/notify.dynamicnotifier.io/v1alpha1/namespaces/" + ns + "/watchsubscriptions/cms"
	for _, e := range events {
		g.Expect(e.Source).To(Equal(source))
		g.Expect(e.ContentType).To(Equal("application/json"))
		var obj map[string]any
		g.Expect(json.Unmarshal([]byte(e.Data), &obj)).To(Succeed(), "data is the object as JSON")
		md := obj["metadata"].(map[string]any)
		g.Expect(md["name"]).To(Equal("settings"))
		g.Expect(md).NotTo(HaveKey("managedFields"), "managedFields are stripped")
	}
	g.Expect(events[0].ID).To(Equal(fmt.Sprintf("%s:%s:Added", added.UID, added.ResourceVersion)))
	g.Expect(events[1].ID).To(Equal(fmt.Sprintf("%s:%s:Updated", updated.UID, updated.ResourceVersion)))
	g.Expect(events[2].ID).To(HavePrefix(string(added.UID) + ":"))
	g.Expect(events[2].ID).To(HaveSuffix(":Deleted"))

	g.Eventually(func(g Gomega) {
		got := &notifyv1.WatchSubscription{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(ws), got)).To(Succeed())
		st := got.Status
		g.Expect(st.EventsObserved).To(BeEquivalentTo(3))
		g.Expect(st.EventsDelivered).To(BeEquivalentTo(3))
		g.Expect(st.EventsFailed).To(BeZero())
		g.Expect(st.LastEventTime).NotTo(BeNil())
		g.Expect(st.LastDeliveryTime).NotTo(BeNil())
		g.Expect(st.Kind).To(Equal("ConfigMap"))
		g.Expect(st.Namespaced).To(HaveValue(BeTrue()))
		g.Expect(st.Resource).To(Equal("v1/configmaps"))
		g.Expect(st.Sink).To(Equal("webhook"))
		g.Expect(st.ObservedGeneration).To(Equal(got.Generation))
		g.Expect(st.Conditions[0].ObservedGeneration).To(Equal(got.Generation))
		g.Expect(got.Generation).To(BeEquivalentTo(1), "status writes never change the generation")
	}).WithTimeout(5 * time.Second).Should(Succeed())
}

func TestSelectorsFieldSelectorsAndEventTypes(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	startOperator(t)
	ns := newNamespace(t)

	byLabel, byField, updatesOnly, all := newSink(t), newSink(t), newSink(t), newSink(t)
	wsLabel := subscription(ns, "by-label", byLabel.URL)
	wsLabel.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "frontend"}}
	wsField := subscription(ns, "by-field", byField.URL)
	wsField.Spec.FieldSelector = "metadata.name=b"
	wsUpdates := subscription(ns, "updates-only", updatesOnly.URL)
	wsUpdates.Spec.EventTypes = []notifyv1.EventType{notifyv1.EventUpdated}
	wsAll := subscription(ns, "all", all.URL)
	for _, ws := range []*notifyv1.WatchSubscription{wsLabel, wsField, wsUpdates, wsAll} {
		create(t, ws)
		waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	}

	a := configMap(ns, "a", map[string]string{"tier": "frontend"})
	b := configMap(ns, "b", map[string]string{"tier": "backend"})
	create(t, a)
	create(t, b)
	touch(t, a)
	touch(t, b)
	g.Expect(k8s.Delete(ctx, b)).To(Succeed())

	path := func(name string) string { return "/api/v1/namespaces/" + ns + "/configmaps/" + name }
	// Different objects may be delivered in parallel; each object's events keep their order.
	// The unfiltered subscription sees everything; once it has, the others have had their
	// chance too (same informer, same fan-out).
	g.Eventually(func() map[string][]string { return byObject(all.summary()) }).WithTimeout(10 * time.Second).Should(Equal(
		map[string][]string{path("a"): {"added", "updated"}, path("b"): {"added", "updated", "deleted"}}))
	g.Eventually(byLabel.summary).Should(Equal([]string{"added " + path("a"), "updated " + path("a")}))
	g.Eventually(byField.summary).Should(Equal([]string{"added " + path("b"), "updated " + path("b"), "deleted " + path("b")}))
	g.Eventually(updatesOnly.summary).Should(ConsistOf("updated "+path("a"), "updated "+path("b")))
	// Nothing more trickles in.
	g.Consistently(byLabel.summary).WithTimeout(500 * time.Millisecond).Should(HaveLen(2))
	g.Consistently(updatesOnly.summary).WithTimeout(100 * time.Millisecond).Should(HaveLen(2))
}

func TestNamespaceScopes(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	startOperator(t)
	home, other, third := newNamespace(t), newNamespace(t), newNamespace(t)
	// The owners of the other namespaces let home's default ServiceAccount read there; the
	// cluster admin lets its watch-all account read everywhere.
	grant(t, home, other)
	grant(t, home, third)
	grantClusterWide(t, home, "watch-all")

	own, listed, everywhere := newSink(t), newSink(t), newSink(t)
	wsOwn := subscription(home, "own", own.URL)
	wsListed := subscription(home, "listed", listed.URL)
	wsListed.Spec.Namespaces = []notifyv1.NamespaceName{notifyv1.NamespaceName(other), notifyv1.NamespaceName(third)}
	wsAll := subscription(home, "everywhere", everywhere.URL)
	wsAll.Spec.Namespaces = []notifyv1.NamespaceName{notifyv1.AllNamespaces}
	wsAll.Spec.ServiceAccountName = "watch-all"
	wsAll.Spec.FieldSelector = "metadata.name=scoped" // other tests' ConfigMaps stay out
	for _, ws := range []*notifyv1.WatchSubscription{wsOwn, wsListed, wsAll} {
		create(t, ws)
		waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	}

	for _, ns := range []string{home, other, third} {
		create(t, configMap(ns, "scoped", nil))
	}
	path := func(ns string) string { return "added /api/v1/namespaces/" + ns + "/configmaps/scoped" }
	g.Eventually(everywhere.summary).WithTimeout(10 * time.Second).Should(ConsistOf(path(home), path(other), path(third)))
	g.Eventually(own.summary).Should(Equal([]string{path(home)}))
	g.Eventually(listed.summary).Should(ConsistOf(path(other), path(third)))
	g.Consistently(own.summary).WithTimeout(300 * time.Millisecond).Should(HaveLen(1))
	g.Expect(listed.summary()).To(HaveLen(2))

	got := &notifyv1.WatchSubscription{}
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(wsListed), got)).To(Succeed())
	cond := got.Status.Conditions[0]
	g.Expect(cond.Message).To(ContainSubstring(other))
	g.Expect(cond.Message).To(ContainSubstring(third))
}

func TestClusterScopedResource(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	home := newNamespace(t)
	grantClusterWide(t, home, "default")
	sk := newSink(t)
	ws := subscription(home, "namespaces", sk.URL)
	ws.Spec.Resource = notifyv1.ResourceRef{Version: "v1", Resource: "namespaces"}
	ws.Spec.EventTypes = []notifyv1.EventType{notifyv1.EventAdded}
	// Namespaces are cluster-scoped: a namespace list is ignored.
	ws.Spec.Namespaces = []notifyv1.NamespaceName{"ignored"}
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)

	created := newNamespace(t)
	g.Eventually(sk.summary).WithTimeout(10 * time.Second).Should(ContainElement("added /api/v1/namespaces/" + created))
	got := &notifyv1.WatchSubscription{}
	g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(ws), got)).To(Succeed())
	g.Expect(got.Status.Namespaced).To(HaveValue(BeFalse()))
	g.Expect(got.Status.Kind).To(Equal("Namespace"))
}

func TestSendInitialEvents(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	for _, name := range []string{"one", "two", "three"} {
		create(t, configMap(ns, name, nil))
	}
	path := func(name string) string { return "added /api/v1/namespaces/" + ns + "/configmaps/" + name }

	// First subscriber starts the informer without initial events.
	quiet := newSink(t)
	wsQuiet := subscription(ns, "quiet", quiet.URL)
	create(t, wsQuiet)
	waitReason(t, wsQuiet, notifyv1.ReasonWatching, 10*time.Second)

	// Second one joins the running informer and asks for them.
	initial := newSink(t)
	wsInitial := subscription(ns, "initial", initial.URL)
	wsInitial.Spec.SendInitialEvents = true
	create(t, wsInitial)
	g.Eventually(initial.summary).WithTimeout(10 * time.Second).Should(ConsistOf(path("one"), path("two"), path("three")))

	// Changes after joining follow, once each.
	create(t, configMap(ns, "four", nil))
	g.Eventually(initial.summary).WithTimeout(10 * time.Second).Should(ConsistOf(path("one"), path("two"), path("three"), path("four")))
	g.Eventually(quiet.summary).Should(Equal([]string{path("four")}), "no initial events without sendInitialEvents")

	// A subscription that starts an informer of its own gets them too.
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "existing"}})
	fresh := newSink(t)
	wsFresh := subscription(ns, "fresh", fresh.URL)
	wsFresh.Spec.Resource = notifyv1.ResourceRef{Version: "v1", Resource: "secrets"}
	wsFresh.Spec.SendInitialEvents = true
	create(t, wsFresh)
	g.Eventually(fresh.summary).WithTimeout(10 * time.Second).Should(Equal([]string{
		"added /api/v1/namespaces/" + ns + "/secrets/existing"}))
	g.Consistently(initial.summary).WithTimeout(300 * time.Millisecond).Should(HaveLen(4))
}

func TestSuspendAndResume(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	op := startOperator(t)
	ns := newNamespace(t)
	sk := newSink(t)
	ws := subscription(ns, "pausable", sk.URL)
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)

	patchSpec(t, ws, func(ws *notifyv1.WatchSubscription) { ws.Spec.Suspend = true })
	cond := waitReason(t, ws, notifyv1.ReasonSuspended, 5*time.Second)
	g.Expect(cond.Status).To(Equal(metav1.ConditionFalse))
	create(t, configMap(ns, "while-suspended", nil))

	patchSpec(t, ws, func(ws *notifyv1.WatchSubscription) { ws.Spec.Suspend = false })
	waitReason(t, ws, notifyv1.ReasonWatching, 5*time.Second)
	create(t, configMap(ns, "after-resume", nil))
	g.Eventually(sk.summary).WithTimeout(10 * time.Second).Should(Equal([]string{
		"added /api/v1/namespaces/" + ns + "/configmaps/after-resume"}))

	// Deleting stops deliveries at once.
	g.Expect(k8s.Delete(ctx, ws)).To(Succeed())
	g.Eventually(func() error {
		return k8s.Get(ctx, client.ObjectKeyFromObject(ws), &notifyv1.WatchSubscription{})
	}).Should(MatchError(ContainSubstring("not found")))
	// The deletion reaches the operator on its own watch, not in order with later writes
	// to the watched resource: wait until it stopped the subscription's watch.
	g.Eventually(op.op.Registry.Keys).WithTimeout(5*time.Second).Should(BeEmpty(), "the deleted subscription's watch stops")
	create(t, configMap(ns, "after-delete", nil))
	g.Consistently(sk.summary).WithTimeout(500 * time.Millisecond).Should(HaveLen(1))
}

// patchSpec changes a subscription's spec as a user would.
func patchSpec(t *testing.T, ws *notifyv1.WatchSubscription, change func(*notifyv1.WatchSubscription)) {
	t.Helper()
	ctx := context.Background()
	got := &notifyv1.WatchSubscription{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(ws), got); err != nil {
		t.Fatal(err)
	}
	before := got.DeepCopy()
	change(got)
	if err := k8s.Patch(ctx, got, client.MergeFrom(before)); err != nil {
		t.Fatalf("patch spec: %v", err)
	}
}

func TestStuckSinkDelaysNoOtherSubscription(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)

	release := make(chan struct{})
	stuck := newSink(t)
	stuck.block = release
	t.Cleanup(func() { close(release) })
	healthy := newSink(t)
	for name, sk := range map[string]*sink{"stuck": stuck, "healthy": healthy} {
		ws := subscription(ns, name, sk.URL)
		create(t, ws)
		waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	}

	for i := range 5 {
		create(t, configMap(ns, fmt.Sprintf("cm-%d", i), nil))
	}
	g.Eventually(func() int { return len(healthy.Events()) }).WithTimeout(10 * time.Second).Should(Equal(5))
	g.Expect(len(stuck.Events())).To(BeNumerically("<", 5),
		"the stuck sink is still on its first deliveries while the healthy one has all")
}

func TestDeliveryFailingIsReportedAndClears(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	sk := newSink(t)
	sk.status = func() int { return http.StatusServiceUnavailable }
	ws := subscription(ns, "flaky", sk.URL)
	ws.Spec.Delivery = &notifyv1.DeliverySpec{Retry: &notifyv1.RetryPolicy{
		Backoff: notifyv1.DurationOf(100 * time.Millisecond), MaxBackoff: notifyv1.DurationOf(200 * time.Millisecond)}}
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)

	create(t, configMap(ns, "first", nil))
	cond := waitReason(t, ws, notifyv1.ReasonDeliveryFailing, 10*time.Second)
	g.Expect(cond.Status).To(Equal(metav1.ConditionFalse))
	g.Expect(cond.Message).To(Equal("POST " + sk.URL + ": 503 Service Unavailable"))

	// The sink recovers: the retried event gets through and Ready clears.
	sk.mu.Lock()
	sk.status = func() int { return http.StatusOK }
	sk.mu.Unlock()
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	g.Eventually(func(g Gomega) {
		got := &notifyv1.WatchSubscription{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(ws), got)).To(Succeed())
		g.Expect(got.Status.EventsFailed).To(BeZero())
		g.Expect(got.Status.EventsDelivered).To(BeEquivalentTo(1))
	}).WithTimeout(5 * time.Second).Should(Succeed())
	ids := map[string]bool{}
	for _, e := range sk.Events() {
		ids[e.ID] = true
	}
	g.Expect(len(sk.Events())).To(BeNumerically(">=", 2), "at least one failed attempt and the successful retry")
	g.Expect(ids).To(HaveLen(1), "every attempt carries the same event id")
}

// byObject groups "type subject" lines by subject, keeping each object's order.
func byObject(summary []string) map[string][]string {
	out := map[string][]string{}
	for _, line := range summary {
		typ, subject, _ := strings.Cut(line, " ")
		out[subject] = append(out[subject], typ)
	}
	return out
}

func TestFixingTheSinkURLKeepsWhatWasQueued(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	startOperator(t)
	ns := newNamespace(t)
	broken, fixed := newSink(t), newSink(t)
	broken.status = func() int { return http.StatusServiceUnavailable }
	ws := subscription(ns, "moving", broken.URL)
	ws.Spec.Delivery = &notifyv1.DeliverySpec{Retry: &notifyv1.RetryPolicy{
		Backoff: notifyv1.DurationOf(time.Second), MaxBackoff: notifyv1.DurationOf(time.Minute)}}
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)

	cm := configMap(ns, "queued", nil)
	create(t, cm)
	touch(t, cm)
	waitReason(t, ws, notifyv1.ReasonDeliveryFailing, 10*time.Second)

	// The user points the subscription at a sink that works: the changes queued for the
	// broken one are not thrown away, and keep their order.
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(ws), ws)).To(Succeed())
	patch := client.MergeFrom(ws.DeepCopy())
	ws.Spec.Sink.Webhook.URL = fixed.URL
	g.Expect(k8s.Patch(ctx, ws, patch)).To(Succeed())
	create(t, configMap(ns, "after", nil))
	subject := "/api/v1/namespaces/" + ns + "/configmaps/"
	g.Eventually(fixed.summary).WithTimeout(15 * time.Second).Should(ConsistOf(
		"added "+subject+"queued", "updated "+subject+"queued", "added "+subject+"after"))
	g.Expect(byObject(fixed.summary())[subject+"queued"]).To(Equal([]string{"added", "updated"}),
		"an object's events keep their order across the change")
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
}

func TestBatchedModeSendsWhatQueuedInOneRequest(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	sk := newSink(t)
	sk.block = make(chan struct{}) // the first request hangs, so the rest queue up behind it
	ws := subscription(ns, "batched", sk.URL)
	ws.Spec.Sink.Webhook.ContentMode = notifyv1.ContentModeBatched
	ws.Spec.Sink.Webhook.MaxBatchSize = new(int32(10))
	ws.Spec.Delivery = &notifyv1.DeliverySpec{Parallelism: new(int32(1))}
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)

	const n = 21
	for i := range n {
		create(t, configMap(ns, fmt.Sprintf("cm-%02d", i), nil))
	}
	g.Eventually(func(g Gomega) {
		g.Expect(status(g, ws).EventsObserved).To(BeEquivalentTo(n))
	}).WithTimeout(10*time.Second).Should(Succeed(), "all creates reach the queue while the sink hangs")
	sk.mu.Lock()
	close(sk.block)
	sk.block = nil
	sk.mu.Unlock()

	g.Eventually(func() []received { return sk.Events() }).WithTimeout(10 * time.Second).Should(HaveLen(n))
	events := sk.Events()
	perRequest := map[int]int{}
	for i, e := range events {
		g.Expect(e.Subject).To(HaveSuffix(fmt.Sprintf("/cm-%02d", i)), "one lane: events arrive in the order of the writes")
		g.Expect(e.Header.Get("Content-Type")).To(Equal("application/cloudevents-batch+json"))
		perRequest[e.Request]++
	}
	g.Expect(perRequest).To(Equal(map[int]int{1: 1, 2: 10, 3: 10}),
		"the first event goes alone at once; the 20 that queued behind it go 10 to a request")
	g.Eventually(func(g Gomega) {
		g.Expect(status(g, ws).EventsDelivered).To(BeEquivalentTo(n), "delivered counts events, not requests")
	}).WithTimeout(5 * time.Second).Should(Succeed())
}
