package controller_test

import (
	"context"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

// fastRetry retries quickly so tests exercise the policy without waiting minutes.
func fastRetry(maxAttempts int32) *notifyv1.DeliverySpec {
	return &notifyv1.DeliverySpec{Retry: &notifyv1.RetryPolicy{
		MaxAttempts: &maxAttempts,
		Backoff:     notifyv1.DurationOf(20 * time.Millisecond),
		MaxBackoff:  notifyv1.DurationOf(200 * time.Millisecond),
	}}
}

func status(g Gomega, ws *notifyv1.WatchSubscription) notifyv1.WatchSubscriptionStatus {
	got := &notifyv1.WatchSubscription{}
	g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(ws), got)).To(Succeed())
	return got.Status
}

func TestRetryAfterIsHonoured(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	sk := newSink(t)
	sk.reply = func(n int, w http.ResponseWriter) int {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			return http.StatusTooManyRequests
		}
		return http.StatusOK
	}
	ws := subscription(ns, "throttled", sk.URL)
	ws.Spec.Delivery = fastRetry(5)
	ws.Spec.Delivery.Retry.MaxBackoff = notifyv1.DurationOf(5 * time.Second)
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)

	create(t, configMap(ns, "c", nil))
	g.Eventually(func() int { return len(sk.Events()) }).WithTimeout(10 * time.Second).Should(Equal(2))
	ev := sk.Events()
	g.Expect(ev[1].ID).To(Equal(ev[0].ID))
	// The backoff alone would retry after ~20ms; the sink asked for a second.
	g.Expect(ev[1].At.Sub(ev[0].At)).To(BeNumerically(">=", 900*time.Millisecond))
	g.Eventually(func(g Gomega) { g.Expect(status(g, ws).EventsDelivered).To(BeEquivalentTo(1)) }).Should(Succeed())
}

func TestSinkDownForTwentySecondsLosesNothingAndKeepsOrder(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	startOperator(t)
	ns := newNamespace(t)

	// Reserve a loopback port, then leave it closed: connections are refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	addr := l.Addr().String()
	g.Expect(l.Close()).To(Succeed())

	ws := subscription(ns, "outage", "http://"+addr+"/events")
	ws.Spec.Delivery = fastRetry(100)
	ws.Spec.Delivery.Retry.MaxBackoff = notifyv1.DurationOf(time.Second)
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)

	outageStart := time.Now()
	const objects, updates = 20, 4 // 20 creates + 80 updates = 100 changes
	cms := make([]*corev1.ConfigMap, objects)
	for i := range cms {
		cms[i] = configMap(ns, fmt.Sprintf("o-%02d", i), nil)
		create(t, cms[i])
	}
	for range updates {
		for _, cm := range cms {
			touch(t, cm)
		}
	}
	cond := waitReason(t, ws, notifyv1.ReasonDeliveryFailing, 10*time.Second)
	g.Expect(cond.Message).To(ContainSubstring("connection refused"))
	time.Sleep(time.Until(outageStart.Add(20 * time.Second))) // the outage itself, not a wait for a result

	// The sink comes back on the same address.
	sk := &sink{status: func() int { return http.StatusOK }}
	srv := httptest.NewUnstartedServer(nil)
	ln, err := net.Listen("tcp", addr)
	g.Expect(err).NotTo(HaveOccurred())
	srv.Listener = ln
	started := startSinkOn(t, srv, sk)
	g.Eventually(func() int { return len(started.Events()) }).WithTimeout(30 * time.Second).Should(BeNumerically(">=", 100))
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)

	// Per object: Added first, then the updates in resourceVersion order, each once.
	last := map[string]int{}
	seen := map[string]bool{}
	for _, e := range started.Events() {
		g.Expect(seen[e.ID]).To(BeFalse(), "delivered twice: %s", e.ID)
		seen[e.ID] = true
		parts := strings.Split(e.ID, ":")
		rv, err := strconv.Atoi(parts[1])
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(rv).To(BeNumerically(">", last[e.Subject]), "out of order for %s", e.Subject)
		if last[e.Subject] == 0 {
			g.Expect(e.Type).To(HaveSuffix(".added"), "first event of %s", e.Subject)
		}
		last[e.Subject] = rv
	}
	g.Expect(seen).To(HaveLen(objects * (1 + updates)))
	g.Eventually(func(g Gomega) {
		st := status(g, ws)
		g.Expect(st.EventsDelivered).To(BeEquivalentTo(100))
		g.Expect(st.EventsFailed).To(BeZero())
	}).WithTimeout(5 * time.Second).Should(Succeed())
	_ = ctx
}

func TestSinkSlowerThanTheTimeoutIsRetried(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	sk := newSink(t)
	sk.reply = func(n int, _ http.ResponseWriter) int {
		if n == 1 {
			time.Sleep(1500 * time.Millisecond)
		}
		return http.StatusOK
	}
	ws := subscription(ns, "slow", sk.URL)
	ws.Spec.Delivery = fastRetry(3)
	ws.Spec.Delivery.Timeout = notifyv1.DurationOf(300 * time.Millisecond)
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)

	create(t, configMap(ns, "c", nil))
	g.Eventually(func(g Gomega) {
		st := status(g, ws)
		g.Expect(st.EventsDelivered).To(BeEquivalentTo(1))
		g.Expect(st.EventsFailed).To(BeZero())
	}).WithTimeout(10 * time.Second).Should(Succeed())
	g.Expect(len(sk.Events())).To(BeNumerically(">=", 2), "the timed-out attempt was retried")
}

func TestClientErrorGoesToTheDeadLetterSink(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	sk, dead := newSink(t), newSink(t)
	sk.status = func() int { return http.StatusBadRequest }
	ws := subscription(ns, "rejected", sk.URL)
	ws.Spec.Delivery = fastRetry(5)
	ws.Spec.Delivery.DeadLetterSink = &notifyv1.Sink{Webhook: &notifyv1.WebhookSink{URL: dead.URL}}
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)

	create(t, configMap(ns, "c", nil))
	g.Eventually(func() int { return len(dead.Events()) }).WithTimeout(10 * time.Second).Should(Equal(1))
	g.Expect(sk.Events()).To(HaveLen(1), "a 400 is not retried")
	d := dead.Events()[0]
	g.Expect(d.ID).To(Equal(sk.Events()[0].ID))
	g.Expect(d.Extensions).To(HaveKeyWithValue("deliveryattempts", "1"))
	g.Expect(d.Extensions).To(HaveKeyWithValue("deliveryerror", "POST "+sk.URL+": 400 Bad Request"))
	g.Eventually(func(g Gomega) { g.Expect(status(g, ws).EventsFailed).To(BeEquivalentTo(1)) }).Should(Succeed())
	g.Expect(counter(g, "dynamicnotifier_events_dead_lettered_total", ns, "rejected")).To(Equal(1.0))
	g.Expect(counter(g, "dynamicnotifier_events_failed_total", ns, "rejected")).To(Equal(1.0))
}

func TestQueueOverflowIsCountedAndReported(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	release := make(chan struct{})
	sk := newSink(t)
	sk.block = release
	t.Cleanup(func() { close(release) })
	ws := subscription(ns, "overflow", sk.URL)
	queue, parallelism := int32(2), int32(1)
	ws.Spec.Delivery = &notifyv1.DeliverySpec{MaxQueueSize: &queue, Parallelism: &parallelism}
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)

	for i := range 10 {
		create(t, configMap(ns, fmt.Sprintf("c-%d", i), nil))
	}
	// One event is in flight at the stuck sink, one waits: the other eight are dropped.
	cond := waitReason(t, ws, notifyv1.ReasonEventsDropped, 10*time.Second)
	g.Expect(cond.Message).To(ContainSubstring("maxQueueSize"))
	g.Eventually(func(g Gomega) {
		st := status(g, ws)
		g.Expect(st.EventsObserved).To(BeEquivalentTo(10))
		g.Expect(st.EventsDropped).To(BeEquivalentTo(8))
	}).WithTimeout(5 * time.Second).Should(Succeed())
	g.Expect(counter(g, "dynamicnotifier_events_dropped_total", ns, "overflow")).To(Equal(8.0))
	// As status.eventsFailed, events_failed_total counts the drops (reason "dropped").
	g.Expect(counter(g, "dynamicnotifier_events_failed_total", ns, "overflow")).To(Equal(8.0))
	v, _ := metricValue(g, "dynamicnotifier_events_failed_total", "namespace", ns, "subscription", "overflow", "reason", "dropped")
	g.Expect(v).To(Equal(8.0))
	g.Expect(gauge(g, "dynamicnotifier_delivery_queue_capacity", ns, "overflow")).To(Equal(2.0))
	g.Expect(counter(g, "dynamicnotifier_events_observed_total", ns, "overflow")).To(Equal(10.0))
	g.Expect(gauge(g, "dynamicnotifier_delivery_queue_depth", ns, "overflow")).To(Equal(2.0))
	g.Expect(gauge(g, "dynamicnotifier_informer_subscribers", "", "", "resource", "configmaps", "scope", ns)).To(Equal(1.0))
}

func TestHeadersFromSecretStructuredModeAndMissingSecret(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	startOperator(t)
	ns := newNamespace(t)
	grantSecrets(t, ns, "hook-headers")
	sk := newSink(t)
	ws := subscription(ns, "with-headers", sk.URL)
	ws.Spec.Sink.Webhook.ContentMode = notifyv1.ContentModeStructured
	ws.Spec.Sink.Webhook.HeadersFrom = &notifyv1.HeadersFrom{SecretRef: notifyv1.LocalSecretReference{Name: "hook-headers"}}
	create(t, ws)
	cond := waitReason(t, ws, notifyv1.ReasonInvalidSink, 10*time.Second)
	g.Expect(cond.Message).To(ContainSubstring("Secret hook-headers not found"))

	// Creating the Secret is enough: the operator follows Secrets its sinks use.
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hook-headers"},
		StringData: map[string]string{"Authorization": "Bearer s3cret"}})
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	create(t, configMap(ns, "c", nil))
	g.Eventually(func() int { return len(sk.Events()) }).WithTimeout(10 * time.Second).Should(Equal(1))
	got := sk.Events()[0]
	g.Expect(got.Header.Get("Authorization")).To(Equal("Bearer s3cret"))
	g.Expect(got.Header.Get("Content-Type")).To(HavePrefix("application/cloudevents+json"))
	g.Expect(got.Subject).To(Equal("/api/v1/namespaces/" + ns + "/configmaps/c"))

	// Nothing about the Secret's value reaches status or Events.
	list := &corev1.EventList{}
	g.Expect(k8s.List(ctx, list, client.InNamespace(ns))).To(Succeed())
	for _, e := range list.Items {
		g.Expect(e.Message).NotTo(ContainSubstring("s3cret"))
	}
	g.Expect(fmt.Sprint(status(g, ws))).NotTo(ContainSubstring("s3cret"))
}

func TestTLSSinkWithCAFromSecret(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	sk := startSink(t, httptest.NewUnstartedServer(nil), true)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: sk.srv.Certificate().Raw})

	untrusted := subscription(ns, "untrusted", sk.URL)
	create(t, untrusted)
	waitReason(t, untrusted, notifyv1.ReasonWatching, 10*time.Second)

	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sink-ca"},
		Data: map[string][]byte{"ca.crt": caPEM}})
	grantSecrets(t, ns, "sink-ca")
	trusted := subscription(ns, "trusted", sk.URL)
	trusted.Spec.Sink.Webhook.TLS = &notifyv1.TLSConfig{CASecretRef: &notifyv1.SecretKeyReference{Name: "sink-ca"}}
	create(t, trusted)
	waitReason(t, trusted, notifyv1.ReasonWatching, 10*time.Second)

	create(t, configMap(ns, "c", nil))
	g.Eventually(func() int { return len(sk.Events()) }).WithTimeout(10*time.Second).Should(Equal(1),
		"only the subscription trusting the CA gets through")
	cond := waitReason(t, untrusted, notifyv1.ReasonDeliveryFailing, 10*time.Second)
	g.Expect(cond.Message).To(ContainSubstring("certificate"))
}

// metricValue adds up the samples of a metric family with these label values in the
// controller-runtime registry the operator registers on (the same one its /metrics endpoint
// serves): over the labels not given, such as events_failed_total's reason.
func metricValue(g Gomega, name string, labels ...string) (float64, bool) {
	families, err := ctrlmetrics.Registry.Gather()
	g.Expect(err).NotTo(HaveOccurred())
	sum, found := 0.0, false
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue next
				}
			}
			sum += sampleValue(m)
			found = true
		}
	}
	return sum, found
}

func sampleValue(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	}
	return 0
}

func counter(g Gomega, name, namespace, subscription string) float64 {
	v, ok := metricValue(g, name, "namespace", namespace, "subscription", subscription)
	g.Expect(ok).To(BeTrue(), "no %s for %s/%s", name, namespace, subscription)
	return v
}

// gauge reads a gauge by namespace/subscription, or by the extra label pairs when those
// are empty.
func gauge(g Gomega, name, namespace, subscription string, extra ...string) float64 {
	labels := extra
	if namespace != "" {
		labels = append([]string{"namespace", namespace, "subscription", subscription}, extra...)
	}
	v, ok := metricValue(g, name, labels...)
	g.Expect(ok).To(BeTrue(), "no %s %v", name, labels)
	return v
}
