package controller_test

import (
	"context"
	"fmt"
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
