package controller_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

// configMapWatches reads from the API server's own metrics how many WATCH requests on
// ConfigMaps are open with a namespace scope.
func configMapWatches(g Gomega) int {
	const resource, scope = "configmaps", "namespace"
	cs, err := metricsClient()
	g.Expect(err).NotTo(HaveOccurred())
	raw, err := cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	g.Expect(err).NotTo(HaveOccurred())
	total := 0
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_longrunning_requests{") || !strings.Contains(line, `verb="WATCH"`) ||
			!strings.Contains(line, `resource="`+resource+`"`) || !strings.Contains(line, `scope="`+scope+`"`) {
			continue
		}
		n, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
		g.Expect(err).NotTo(HaveOccurred())
		total += int(n)
	}
	return total
}

// metricsClient is one client for the whole test binary, so reading metrics does not open
// connections (and goroutines) of its own each time.
var metricsClient = sync.OnceValues(func() (*kubernetes.Clientset, error) { return kubernetes.NewForConfig(cfg) })

func TestFiftySubscriptionsShareOneWatchAndTearDown(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	op := startOperator(t)
	ns := newNamespace(t)
	sk := newSink(t)
	key := watch.Key{GVR: schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, Namespace: ns}

	// Warm up what starts lazily and stays (controller workers, the Event broadcaster), so
	// the baseline is the idle operator.
	warmUp := subscription(ns, "warm-up", sk.URL)
	warmUp.Spec.Resource.Resource = "secrets"
	create(t, warmUp)
	waitReason(t, warmUp, notifyv1.ReasonWatching, 10*time.Second)
	g.Expect(k8s.Delete(ctx, warmUp)).To(Succeed())
	g.Eventually(op.op.Registry.Keys).WithTimeout(5 * time.Second).Should(BeEmpty())
	sk.closeConnections()

	watchesBefore := configMapWatches(g)
	goroutinesBefore := runtime.NumGoroutine()

	subs := make([]*notifyv1.WatchSubscription, 50)
	for i := range subs {
		subs[i] = subscription(ns, fmt.Sprintf("shared-%02d", i), sk.URL)
		g.Expect(k8s.Create(ctx, subs[i])).To(Succeed())
	}
	g.Eventually(func(g Gomega) {
		list := &notifyv1.WatchSubscriptionList{}
		g.Expect(k8s.List(ctx, list, client.InNamespace(ns))).To(Succeed())
		for _, ws := range list.Items {
			g.Expect(ws.Status.Conditions).To(ContainElement(HaveField("Reason", notifyv1.ReasonWatching)), ws.Name)
		}
	}).WithTimeout(20 * time.Second).Should(Succeed())

	g.Expect(op.op.Registry.Keys()).To(Equal([]watch.Key{key}), "one informer for one (GVR, scope)")
	g.Expect(op.op.Registry.Subscribers(key)).To(Equal(50))
	g.Expect(configMapWatches(g)).To(Equal(watchesBefore+1),
		"the API server sees one watch, not one per subscription")

	create(t, configMap(ns, "fan-out", nil))
	g.Eventually(func() int { return len(sk.Events()) }).WithTimeout(10 * time.Second).Should(Equal(50))

	for _, ws := range subs {
		g.Expect(k8s.Delete(ctx, ws)).To(Succeed())
	}
	g.Eventually(op.op.Registry.Keys).WithTimeout(10 * time.Second).Should(BeEmpty())
	g.Eventually(func(g Gomega) int { return configMapWatches(g) }).
		WithTimeout(10*time.Second).Should(Equal(watchesBefore), "the watch is closed")
	// Idle keep-alive connections to the sink hold goroutines of their own; close them so
	// only what the engine started is measured.
	sk.closeConnections()
	g.Eventually(runtime.NumGoroutine).WithTimeout(10*time.Second).Should(BeNumerically("<=", goroutinesBefore+5),
		func() string {
			return "goroutines back near the baseline of " + strconv.Itoa(goroutinesBefore) + "\n" + goroutineDump()
		})
}

// widgetCRD is a namespaced CRD example.com/v1 widgets.
func widgetCRD() *apiextensionsv1.CustomResourceDefinition {
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "widgets.example.com"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "example.com",
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "widgets", Singular: "widget", Kind: "Widget", ListKind: "WidgetList"},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object", XPreserveUnknownFields: new(true)}},
			}},
		},
	}
}

func widget(ns, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("example.com/v1")
	u.SetKind("Widget")
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

// establishedAt waits for a CRD to be Established and returns when that was observed.
func waitEstablished(t *testing.T, name string) time.Time {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKey{Name: name}, crd)).To(Succeed())
		g.Expect(crd.Status.Conditions).To(ContainElement(And(
			HaveField("Type", apiextensionsv1.Established), HaveField("Status", apiextensionsv1.ConditionTrue))))
	}).WithTimeout(10 * time.Second).WithPolling(20 * time.Millisecond).Should(Succeed())
	return time.Now()
}

func deleteCRD(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	crd := &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: name}}
	NewWithT(t).Expect(client.IgnoreNotFound(k8s.Delete(ctx, crd))).To(Succeed())
	NewWithT(t).Eventually(func() error {
		return k8s.Get(ctx, client.ObjectKey{Name: name}, &apiextensionsv1.CustomResourceDefinition{})
	}).WithTimeout(20 * time.Second).Should(MatchError(ContainSubstring("not found")))
}

func TestCRDInstalledLateDeletedAndRecreated(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	op := startOperator(t)
	ns := newNamespace(t)
	sk := newSink(t)
	ws := subscription(ns, "widgets", sk.URL)
	ws.Spec.Resource = notifyv1.ResourceRef{Group: "example.com", Version: "v1", Resource: "widgets"}
	create(t, ws)
	cond := waitReason(t, ws, notifyv1.ReasonResourceNotFound, 10*time.Second)
	g.Expect(cond.Message).To(ContainSubstring("example.com/v1/widgets"))
	t.Cleanup(func() { deleteCRD(t, "widgets.example.com") })

	for round := 1; round <= 2; round++ {
		g.Expect(k8s.Create(ctx, widgetCRD())).To(Succeed(), "round %d", round)
		established := waitEstablished(t, "widgets.example.com")
		waitReason(t, ws, notifyv1.ReasonWatching, 5*time.Second)
		t.Logf("round %d: Watching %v after the CRD was Established", round, time.Since(established).Round(time.Millisecond))

		name := fmt.Sprintf("w%d", round)
		g.Expect(k8s.Create(ctx, widget(ns, name))).To(Succeed())
		g.Eventually(sk.summary).WithTimeout(10 * time.Second).Should(ContainElement(
			"added /apis/example.com/v1/namespaces/" + ns + "/widgets/" + name))

		deleteCRD(t, "widgets.example.com")
		waitReason(t, ws, notifyv1.ReasonResourceNotFound, 10*time.Second)
		g.Eventually(op.op.Registry.Keys).WithTimeout(5*time.Second).Should(BeEmpty(), "the informer of a deleted CRD stops")
	}
}

func TestUnknownNotWatchableAndInvalidResources(t *testing.T) {
	startOperator(t)
	ns := newNamespace(t)
	cases := []struct {
		name     string
		resource notifyv1.ResourceRef
		selector *metav1.LabelSelector
		reason   string
		message  string
	}{
		{"unknown", notifyv1.ResourceRef{Version: "v1", Resource: "foos"}, nil,
			notifyv1.ReasonResourceNotFound, "v1/foos"},
		{"unknown group", notifyv1.ResourceRef{Group: "nothing.example.com", Version: "v1", Resource: "things"}, nil,
			notifyv1.ReasonResourceNotFound, "nothing.example.com/v1/things"},
		{"subresource", notifyv1.ResourceRef{Version: "v1", Resource: "pods/log"}, nil,
			notifyv1.ReasonNotWatchable, "v1/pods/log"},
		{"create-only", notifyv1.ResourceRef{Group: "authentication.k8s.io", Version: "v1", Resource: "tokenreviews"}, nil,
			notifyv1.ReasonNotWatchable, "tokenreviews"},
		{"bad label key", notifyv1.ResourceRef{Version: "v1", Resource: "configmaps"},
			&metav1.LabelSelector{MatchLabels: map[string]string{"not a key!": "x"}},
			notifyv1.ReasonInvalidSpec, "spec.selector"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			ws := subscription(ns, strings.ReplaceAll(tc.name, " ", "-"), "http://127.0.0.1:9/unused")
			ws.Spec.Resource = tc.resource
			ws.Spec.Selector = tc.selector
			create(t, ws)
			cond := waitReason(t, ws, tc.reason, 10*time.Second)
			g.Expect(cond.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(cond.Message).To(ContainSubstring(tc.message))
			g.Eventually(func(g Gomega) {
				events := &eventsv1.EventList{}
				g.Expect(k8s.List(context.Background(), events, client.InNamespace(ns))).To(Succeed())
				g.Expect(events.Items).To(ContainElement(And(
					HaveField("Regarding.Name", ws.Name), HaveField("Reason", tc.reason), HaveField("Type", "Warning"))))
			}).WithTimeout(5*time.Second).Should(Succeed(), "a Warning Event with the reason")
		})
	}
}

func TestResourceChangeMovesTheSubscription(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	op := startOperator(t)
	ns := newNamespace(t)
	sk := newSink(t)
	ws := subscription(ns, "mover", sk.URL)
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)

	patchSpec(t, ws, func(ws *notifyv1.WatchSubscription) {
		ws.Spec.Resource = notifyv1.ResourceRef{Version: "v1", Resource: "secrets"}
	})
	secrets := watch.Key{GVR: schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, Namespace: ns}
	g.Eventually(op.op.Registry.Keys).WithTimeout(10 * time.Second).Should(Equal([]watch.Key{secrets}))
	g.Eventually(func(g Gomega) {
		got := &notifyv1.WatchSubscription{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(ws), got)).To(Succeed())
		g.Expect(got.Status.Kind).To(Equal("Secret"))
		g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
	}).WithTimeout(5 * time.Second).Should(Succeed())

	create(t, configMap(ns, "ignored", nil))
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "seen"}})
	g.Eventually(sk.summary).WithTimeout(10 * time.Second).Should(Equal([]string{
		"added /api/v1/namespaces/" + ns + "/secrets/seen"}))
}

func TestRestartSendsNoAddedStorm(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	first := startOperator(t)
	ns := newNamespace(t)
	for i := range 5 {
		create(t, configMap(ns, fmt.Sprintf("existing-%d", i), nil))
	}
	sk := newSink(t)
	ws := subscription(ns, "survivor", sk.URL)
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	create(t, configMap(ns, "before-restart", nil))
	path := func(name string) string { return "added /api/v1/namespaces/" + ns + "/configmaps/" + name }
	g.Eventually(sk.summary).WithTimeout(10 * time.Second).Should(Equal([]string{path("before-restart")}))
	g.Eventually(func(g Gomega) {
		got := &notifyv1.WatchSubscription{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(ws), got)).To(Succeed())
		g.Expect(got.Status.EventsDelivered).To(BeEquivalentTo(1))
	}).WithTimeout(5 * time.Second).Should(Succeed())
	first.stop()

	second := startOperator(t)
	key := watch.Key{GVR: schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, Namespace: ns}
	g.Eventually(func() bool { st, ok := second.op.Registry.State(key); return ok && st.Synced }).
		WithTimeout(10*time.Second).Should(BeTrue(), "the new operator watches again")
	create(t, configMap(ns, "after-restart", nil))
	g.Eventually(sk.summary).WithTimeout(10*time.Second).Should(Equal([]string{path("before-restart"), path("after-restart")}),
		"existing objects are not sent again as Added")
	g.Eventually(func(g Gomega) {
		got := &notifyv1.WatchSubscription{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(ws), got)).To(Succeed())
		g.Expect(got.Status.EventsDelivered).To(BeEquivalentTo(2), "counters continue from the status")
	}).WithTimeout(5 * time.Second).Should(Succeed())
}

func goroutineDump() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}
