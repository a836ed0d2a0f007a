package monitoring

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

// statusMetrics says, for each counter of a WatchSubscription's status, the metric that
// counts (or, for the queue, measures) the same, summed over its labels other than
// namespace and subscription. A counter added to the status without one here fails
// TestOperatorMetrics.
var statusMetrics = map[string]string{
	"eventsObserved":  "dynamicnotifier_events_observed_total",
	"eventsDelivered": "dynamicnotifier_events_delivered_total",
	"eventsFailed":    "dynamicnotifier_events_failed_total",
	"eventsDropped":   "dynamicnotifier_events_dropped_total",
	"eventsCoalesced": "dynamicnotifier_events_coalesced_total",
	// A gauge: the queue's depth when the status was written, compared once it is still.
	"eventsQueued": "dynamicnotifier_delivery_queue_depth",
}

// statusCounters are the counters of a status by JSON name: its int64 fields but the
// generation.
func statusCounters(st notifyv1.WatchSubscriptionStatus) map[string]int64 {
	out := map[string]int64{}
	v := reflect.ValueOf(st)
	for i := range v.NumField() {
		f := v.Type().Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Type.Kind() == reflect.Int64 && name != "observedGeneration" {
			out[name] = v.Field(i).Int()
		}
	}
	return out
}

// TestOperatorMetrics runs the operator on subscriptions that deliver, fail to a dead-letter
// sink, drop for want of room and coalesce, to loopback HTTP sinks, and scrapes its metrics
// endpoint.
func TestOperatorMetrics(t *testing.T) {
	g := NewWithT(t)
	url := startOperator(t)
	ns := newNamespace(t)

	// The sink refuses (400, not retried) the events of objects named reject-*; the
	// dead-letter sink takes them.
	sink := httpSink(t, func(body []byte) int {
		if bytes.Contains(body, []byte(`"reject-`)) {
			return http.StatusBadRequest
		}
		return http.StatusAccepted
	})
	deadLetter := httpSink(t, func([]byte) int { return http.StatusAccepted })
	// The stuck sink holds every request until the test ends.
	release := make(chan struct{})
	stuck := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		<-release
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(stuck.Close)
	t.Cleanup(func() { close(release) }) // before the operator stops: it drains on shutdown

	queue, parallelism := int32(2), int32(1)
	subs := map[string]*notifyv1.WatchSubscription{
		"deliver": subscription(ns, "deliver", sink, &notifyv1.DeliverySpec{
			DeadLetterSink: &notifyv1.Sink{Webhook: &notifyv1.WebhookSink{URL: deadLetter}}}),
		"overflow": subscription(ns, "overflow", stuck.URL, &notifyv1.DeliverySpec{
			MaxQueueSize: &queue, Parallelism: &parallelism}),
		"coalesce": subscription(ns, "coalesce", sink, &notifyv1.DeliverySpec{
			Coalesce: notifyv1.CoalesceSpec{Window: "5s"}}),
	}
	for _, ws := range subs {
		create(t, ws)
	}
	for _, ws := range subs {
		waitReady(t, ws)
	}

	// deliver: 3 delivered, 2 refused and dead-lettered.
	for _, name := range []string{"a", "b", "c", "reject-d", "reject-e"} {
		create(t, configMap(ns, name, "deliver"))
	}
	// overflow: one in flight at the stuck sink, one queued, four dropped.
	for i := range 6 {
		create(t, configMap(ns, fmt.Sprintf("o-%d", i), "overflow"))
	}
	// coalesce: a create and five updates of one object within the window.
	cm := configMap(ns, "flapping", "coalesce")
	create(t, cm)
	for i := range 5 {
		cm.Data = map[string]string{"n": fmt.Sprint(i)}
		g.Expect(k8s.Update(context.Background(), cm)).To(Succeed())
	}

	// Each status counter equals its metric, once both have settled on what was sent.
	want := map[string]map[string]int64{
		"deliver":  {"eventsObserved": 5, "eventsDelivered": 3, "eventsFailed": 2},
		"overflow": {"eventsObserved": 6, "eventsDropped": 4, "eventsFailed": 4},
		"coalesce": {"eventsObserved": 6},
	}
	t.Run("status counters match their metrics", func(t *testing.T) {
		for name, ws := range subs {
			NewWithT(t).Eventually(func(g Gomega) {
				got := &notifyv1.WatchSubscription{}
				g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(ws), got)).To(Succeed())
				counters := statusCounters(got.Status)
				for field, n := range want[name] {
					g.Expect(counters[field]).To(Equal(n), "%s: status.%s", name, field)
				}
				if name == "coalesce" {
					g.Expect(counters["eventsCoalesced"]).To(BeNumerically(">", 0), "coalesce: status.eventsCoalesced")
					g.Expect(counters["eventsCoalesced"]+counters["eventsDelivered"]).To(BeEquivalentTo(6),
						"coalesce: every change delivered or merged")
				}
				families := scrapeIn(g, url)
				for field, value := range counters {
					metric, ok := statusMetrics[field]
					if !ok {
						t.Fatalf("status.%s has no metric counting the same (statusMetrics)", field)
					}
					m, found := sum(families, metric, map[string]string{"namespace": ns, "subscription": name})
					g.Expect(found).To(BeTrue(), "%s: no %s series", name, metric)
					g.Expect(m).To(BeEquivalentTo(value), "%s: %s against status.%s", name, metric, field)
				}
			}).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
		}
		// The status has no dead-letter counter; the metric counts the refused events.
		_, families := scrape(t, url)
		v, _ := sum(families, "dynamicnotifier_events_dead_lettered_total",
			map[string]string{"namespace": ns, "subscription": "deliver"})
		NewWithT(t).Expect(v).To(Equal(2.0), "dead-lettered")
	})

	t.Run("promlint", func(t *testing.T) {
		body, _ := scrape(t, url)
		problems, err := promlint.New(bytes.NewReader(body)).Lint()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	})

	t.Run("rules and dashboard name exported metrics", func(t *testing.T) {
		_, families := scrape(t, url)
		if exported(families, "dynamicnotifier_no_such_metric") ||
			exported(families, "dynamicnotifier_events_observed_total_count") {
			t.Fatal("exported() accepts names the endpoint does not have")
		}
		for _, q := range queries(t) {
			expr, err := promql.ParseExpr(q.expr)
			if err != nil {
				continue // TestRulesAndDashboardParse reports it
			}
			for _, name := range metricNames(expr) {
				if !exported(families, name) {
					t.Errorf("%s uses %s, which the operator does not export", q.where, name)
				}
			}
		}
	})

	t.Run("a deleted subscription's series are removed", func(t *testing.T) {
		g := NewWithT(t)
		for name, ws := range subs {
			labels := map[string]string{"namespace": ns, "subscription": name}
			_, families := scrape(t, url)
			g.Expect(seriesOf(families, labels)).NotTo(BeEmpty(), "%s has no series before its deletion", name)
			g.Expect(k8s.Delete(context.Background(), ws)).To(Succeed())
			g.Eventually(func(g Gomega) {
				families := scrapeIn(g, url)
				g.Expect(seriesOf(families, labels)).To(BeEmpty(), "series of the deleted %s", name)
			}).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
		}
	})
}

// exported tells whether the endpoint has the series name: a family, or a histogram's
// _bucket, _sum or _count. up is Prometheus' own.
func exported(families map[string]*dto.MetricFamily, name string) bool {
	if name == "up" {
		return true
	}
	if _, ok := families[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if f, ok := families[base]; ok && f.GetType() == dto.MetricType_HISTOGRAM {
				return true
			}
		}
	}
	return false
}

// httpSink serves a loopback sink answering each request with status(body).
func httpSink(t *testing.T, status func(body []byte) int) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(status(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// newNamespace creates a namespace whose default ServiceAccount may list and watch in it.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "m-" + rand.String(8)}}
	create(t, ns)
	create(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "read"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: readerRole},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns.Name, Name: "default"}}})
	return ns.Name
}

// subscription watches the ConfigMaps of ns labelled sub=name.
func subscription(ns, name, url string, delivery *notifyv1.DeliverySpec) *notifyv1.WatchSubscription {
	return &notifyv1.WatchSubscription{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: notifyv1.WatchSubscriptionSpec{
			Resource: notifyv1.ResourceRef{Version: "v1", Resource: "configmaps"},
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"sub": name}},
			Sink:     &notifyv1.Sink{Webhook: &notifyv1.WebhookSink{URL: url}},
			Delivery: delivery,
		},
	}
}

func configMap(ns, name, sub string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
		Labels: map[string]string{"sub": sub}}}
}

// create creates obj and deletes it when the test ends, before the operator stops.
func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), obj) })
}

func waitReady(t *testing.T, ws *notifyv1.WatchSubscription) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		got := &notifyv1.WatchSubscription{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(ws), got)).To(Succeed())
		i := slices.IndexFunc(got.Status.Conditions,
			func(c metav1.Condition) bool { return c.Type == notifyv1.ConditionReady })
		g.Expect(i).NotTo(Equal(-1), "%s has no Ready condition", ws.Name)
		c := got.Status.Conditions[i]
		g.Expect(c.Reason).To(Equal(notifyv1.ReasonWatching),
			"%s: Ready is %s/%s: %s", ws.Name, c.Status, c.Reason, c.Message)
	}).WithTimeout(30 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
}
