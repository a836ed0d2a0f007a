package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

// updatedAt lists the resourceVersions of the Updated events a sink got for one ConfigMap,
// in arrival order, with the index of each in all the sink's events.
func updatedAt(sk *sink, ns, name string) (rvs []string, at []int) {
	subject := "/api/v1/namespaces/" + ns + "/configmaps/" + name
	for i, e := range sk.Events() {
		if e.Subject != subject || e.Type != "io.dynamicnotifier.resource.updated" {
			continue
		}
		var obj corev1.ConfigMap
		if err := json.Unmarshal([]byte(e.Data), &obj); err != nil {
			continue
		}
		rvs, at = append(rvs, obj.ResourceVersion), append(at, i)
	}
	return rvs, at
}

// TestCoalescingABurstPerObject: an object updated 100 times in about 2 s, with a 1 s
// window, reaches the sink as at most one event per window, the last with its final state;
// an object changed once meanwhile is not held back until the burst ends.
func TestCoalescingABurstPerObject(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	sk := newSink(t)
	flapping, quiet := configMap(ns, "flapping", nil), configMap(ns, "quiet", nil)
	create(t, flapping)
	create(t, quiet)
	const window = time.Second
	ws := subscription(ns, "coalesced", sk.URL)
	ws.Spec.EventTypes = []notifyv1.EventType{notifyv1.EventUpdated}
	ws.Spec.Delivery = &notifyv1.DeliverySpec{Coalesce: notifyv1.CoalesceSpec{Window: "1s"}}
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 20*time.Second)

	start := time.Now()
	for i := range 100 {
		flapping.Data["n"] = strconv.Itoa(i)
		g.Expect(k8s.Update(context.Background(), flapping)).To(Succeed())
		if i == 0 {
			touch(t, quiet)
		}
		time.Sleep(time.Until(start.Add(time.Duration(i+1) * 20 * time.Millisecond)))
	}
	burst := time.Since(start)
	t.Logf("burst took %s", burst)
	final := flapping.ResourceVersion

	g.Eventually(func() []string { rvs, _ := updatedAt(sk, ns, "flapping"); return rvs }).WithTimeout(10*time.Second).
		Should(ContainElement(final), "the final state arrives")
	rvs, at := updatedAt(sk, ns, "flapping")
	g.Expect(rvs[len(rvs)-1]).To(Equal(final), "the final state comes last")
	windows := int(burst/window) + 1
	t.Logf("%d events for the burst: %q", len(rvs), rvs)
	g.Expect(len(rvs)).To(BeNumerically("<=", windows),
		"100 updates over %s with a %s window make at most %d events; got %q", burst, window, windows, rvs)

	quietRVs, quietAt := updatedAt(sk, ns, "quiet")
	g.Expect(quietRVs).To(Equal([]string{quiet.ResourceVersion}))
	g.Expect(quietAt[0]).To(BeNumerically("<", at[len(at)-1]),
		"the other object's change arrived before the burst's final event: the burst does not hold it back")
	for _, e := range sk.Events() {
		if e.Subject == "/api/v1/namespaces/"+ns+"/configmaps/flapping" {
			g.Expect(e.Extensions).To(HaveKey("coalesced"), "each event of the burst says how many changes it stands for")
		}
	}

	// Every change was delivered or merged, and status says how many were merged.
	g.Eventually(func(g Gomega) {
		got := &notifyv1.WatchSubscription{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(ws), got)).To(Succeed())
		g.Expect(got.Status.EventsCoalesced).To(Equal(int64(100-len(rvs))), "status.eventsCoalesced")
	}).WithTimeout(10 * time.Second).Should(Succeed())
}

// TestRateLimitDeliversEachObjectsFinalState: 200 changes to 10 objects under a limit of 5
// events a second: nothing is dropped, each object's final state arrives, and every change
// was either delivered or merged.
func TestRateLimitDeliversEachObjectsFinalState(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	sk := newSink(t)
	cms := make([]*corev1.ConfigMap, 10)
	for i := range cms {
		cms[i] = configMap(ns, fmt.Sprintf("cm-%d", i), nil)
		create(t, cms[i])
	}
	ws := subscription(ns, "limited", sk.URL)
	ws.Spec.EventTypes = []notifyv1.EventType{notifyv1.EventUpdated}
	ws.Spec.Delivery = &notifyv1.DeliverySpec{RateLimit: notifyv1.RateLimitSpec{EventsPerSecond: 5}}
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 20*time.Second)

	for i := range 200 {
		cm := cms[i%10]
		cm.Data["n"] = strconv.Itoa(i)
		g.Expect(k8s.Update(context.Background(), cm)).To(Succeed())
	}
	lastOf := func(g Gomega) {
		for _, cm := range cms {
			rvs, _ := updatedAt(sk, ns, cm.Name)
			g.Expect(rvs).NotTo(BeEmpty(), "%s: nothing yet", cm.Name)
			g.Expect(rvs[len(rvs)-1]).To(Equal(cm.ResourceVersion), "%s: the final state arrives last", cm.Name)
		}
	}
	g.Eventually(lastOf).WithTimeout(60 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())

	delivered := 0
	for _, cm := range cms {
		rvs, _ := updatedAt(sk, ns, cm.Name)
		delivered += len(rvs)
	}
	g.Eventually(func(g Gomega) {
		got := &notifyv1.WatchSubscription{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(ws), got)).To(Succeed())
		g.Expect(got.Status.EventsDropped).To(BeZero(), "a rate limit drops nothing")
		g.Expect(got.Status.EventsCoalesced+int64(delivered)).To(Equal(int64(200)),
			"every change was delivered (%d) or merged (%d)", delivered, got.Status.EventsCoalesced)
	}).WithTimeout(10 * time.Second).Should(Succeed())
	t.Logf("%d of 200 changes delivered", delivered)
	g.Expect(delivered).To(BeNumerically("<", 200), "the limit merged changes")
}

// TestFilterOnWhatChanged: `"data.color" in changes` lets through only updates of that
// key. The update of another key comes first; the later one that must arrive is the barrier.
func TestFilterOnWhatChanged(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	sk := newSink(t)
	cm := configMap(ns, "palette", nil)
	create(t, cm)
	ws := subscription(ns, "colors", sk.URL)
	ws.Spec.Filter = `"data.color" in changes`
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 20*time.Second)

	cm.Data["size"] = "large"
	g.Expect(k8s.Update(context.Background(), cm)).To(Succeed())
	sized := cm.ResourceVersion
	cm.Data["color"] = "blue"
	g.Expect(k8s.Update(context.Background(), cm)).To(Succeed())

	g.Eventually(func() []string { rvs, _ := updatedAt(sk, ns, "palette"); return rvs }).WithTimeout(10*time.Second).
		Should(ContainElement(cm.ResourceVersion), "the color change arrives")
	rvs, _ := updatedAt(sk, ns, "palette")
	g.Expect(slices.Contains(rvs, sized)).To(BeFalse(), "the size change did not match")
	g.Expect(sk.summary()).To(Equal([]string{"updated /api/v1/namespaces/" + ns + "/configmaps/palette"}),
		"one event: the color change")
}
