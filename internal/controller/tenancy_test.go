package controller_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

// One tenant creating thousands of subscriptions at once must not starve the others: they
// still become Ready and get their events, and the flood itself converges.
func TestTenantFloodLeavesOtherTenantsServed(t *testing.T) {
	const flood = 2000
	g := NewWithT(t)
	ctx := context.Background()
	startOperator(t)
	noisy, quiet := newNamespace(t), newNamespace(t)
	sk, quietSink := newSink(t), newSink(t)

	var wg sync.WaitGroup
	errs := make(chan error, flood)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < flood; i += 8 {
				errs <- k8s.Create(ctx, subscription(noisy, fmt.Sprintf("flood-%04d", i), sk.URL))
			}
		})
	}
	// The other tenant arrives while the flood is being created.
	other := subscription(quiet, "mine", quietSink.URL)
	create(t, other)
	wg.Wait()
	close(errs)
	for err := range errs {
		g.Expect(err).NotTo(HaveOccurred())
	}
	t.Cleanup(func() {
		_ = k8s.DeleteAllOf(context.Background(), &notifyv1.WatchSubscription{}, client.InNamespace(noisy))
	})

	waitReason(t, other, notifyv1.ReasonWatching, 60*time.Second)
	create(t, configMap(quiet, "still-served", nil))
	g.Eventually(quietSink.summary).WithTimeout(30 * time.Second).Should(Equal([]string{
		"added /api/v1/namespaces/" + quiet + "/configmaps/still-served"}))

	g.Eventually(func(g Gomega) {
		list := &notifyv1.WatchSubscriptionList{}
		g.Expect(k8s.List(ctx, list, client.InNamespace(noisy))).To(Succeed())
		g.Expect(list.Items).To(HaveLen(flood))
		watching := 0
		for _, ws := range list.Items {
			if c := meta.FindStatusCondition(ws.Status.Conditions, notifyv1.ConditionReady); c != nil &&
				c.Reason == notifyv1.ReasonWatching {
				watching++
			}
		}
		g.Expect(watching).To(Equal(flood), "every subscription of the flood becomes Ready too")
	}).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(Succeed())
}

// TestMemoryBudgetCostsOnlyTheTenantOverItsShare: one subscription's sink hangs while its
// resource is busy. With a delivery memory budget, the operator never holds more than the
// budget for delivery: that subscription loses its oldest events (EventsDropped, saying
// why), and another subscription keeps delivering everything.
func TestMemoryBudgetCostsOnlyTheTenantOverItsShare(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	opts := testOptions()
	opts.DeliveryMemoryBudget = 2 << 20
	op := startOperatorWith(t, cfg, opts)
	ns := newNamespace(t)

	hanging := newSink(t)
	hanging.block = make(chan struct{})
	t.Cleanup(func() { close(hanging.block) })
	flood := subscription(ns, "flood", hanging.URL)
	flood.Spec.Delivery = &notifyv1.DeliverySpec{MaxQueueSize: new(int32(100000)), Parallelism: new(int32(1)),
		Timeout: notifyv1.DurationOf(time.Hour)}
	calmSink := newSink(t)
	calm := subscription(ns, "calm", calmSink.URL)
	for _, ws := range []*notifyv1.WatchSubscription{flood, calm} {
		create(t, ws)
		waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	}

	const objects = 400 // about 10 KiB each: twice the budget
	var maxUsed int64
	for i := range objects {
		cm := configMap(ns, fmt.Sprintf("big-%03d", i), nil)
		cm.Data["payload"] = strings.Repeat("x", 10<<10)
		g.Expect(k8s.Create(ctx, cm)).To(Succeed())
		maxUsed = max(maxUsed, op.op.Budget.Used())
	}
	g.Eventually(func() int { return len(calmSink.Events()) }).WithTimeout(30*time.Second).Should(Equal(objects),
		"the subscription within its share delivers every change")
	maxUsed = max(maxUsed, op.op.Budget.Used())
	g.Expect(maxUsed).To(BeNumerically("<=", op.op.Budget.Limit()+12<<10), "never much more than the budget is held")
	cond := waitReason(t, flood, notifyv1.ReasonEventsDropped, 10*time.Second)
	g.Expect(cond.Message).To(ContainSubstring("share of the operator's delivery memory budget"))
	got := &notifyv1.WatchSubscription{}
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(flood), got)).To(Succeed())
	g.Expect(got.Status.EventsDropped).To(BeNumerically(">", objects/3))
	t.Logf("budget %d bytes, at most %d held; the flooding subscription dropped %d of %d", op.op.Budget.Limit(),
		maxUsed, got.Status.EventsDropped, objects)
}
