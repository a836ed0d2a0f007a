package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

// TestTailFollowsDeliveries: tail, run by a user who may only read subscriptions and Events
// of the namespace (no Secret, no payload), follows Ready, the deliveries and the Events
// of a subscription live, and stops when asked.
func TestTailFollowsDeliveries(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	rcv := newReceiver(t, false)
	create(t, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tail"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{notifyv1.GroupVersion.Group}, Resources: []string{"watchsubscriptions"},
				Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"get", "list", "watch"}},
		}})
	create(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tail"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "tail"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: "tailer"}}})
	kubeconfig := userKubeconfig(t, "tailer")
	ws := watchSubscription(ns, "shop", rcv.URL+"/events")
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- plugin(ctx, kubeconfig, out, "tail", "shop", "-n", ns) }()
	g.Eventually(out.String).WithTimeout(10*time.Second).Should(ContainSubstring("ready   Ready True Watching"),
		"the state when tail starts")

	create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "settings"}})
	g.Eventually(out.String).WithTimeout(10*time.Second).Should(ContainSubstring("delivered +1 (1)"))

	// A failing sink: Ready turns, with the sink's answer, and a Warning Event says so.
	rcv.setStatus(http.StatusInternalServerError)
	create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "refused"}})
	g.Eventually(out.String).WithTimeout(20*time.Second).Should(And(
		ContainSubstring("ready   Ready False DeliveryFailing"), ContainSubstring("500")))
	g.Eventually(out.String).WithTimeout(10*time.Second).Should(MatchRegexp(`event +Warning`),
		"the operator's Event about Ready")

	cancel()
	g.Eventually(done).WithTimeout(10 * time.Second).Should(Receive(BeNil()))

	// The subscription deleted, tail says so and ends.
	out = &syncBuffer{}
	go func() { done <- plugin(context.Background(), kubeconfig, out, "tail", "shop", "-n", ns, "-o", "json") }()
	g.Eventually(out.String).WithTimeout(10 * time.Second).Should(ContainSubstring(`"kind":"ready"`))
	g.Expect(k8s.Delete(context.Background(), ws)).To(Succeed())
	g.Eventually(done).WithTimeout(10 * time.Second).Should(Receive(BeNil()))
	g.Expect(out.String()).To(ContainSubstring(`"kind":"deleted"`))
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var l tailLine
		g.Expect(json.Unmarshal([]byte(line), &l)).To(Succeed(), "one JSON object per line: %s", line)
	}
}

// TestStatusSumsUp: status says what each subscription watches, which subscriptions share
// its watch, its deliveries, the bound of its queue and its last error.
func TestStatusSumsUp(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	kubeconfig := adminKubeconfig(t)
	ns := newNamespace(t)
	rcv := newReceiver(t, false)
	failing := newReceiver(t, false)
	failing.setStatus(http.StatusBadRequest)
	a, b := watchSubscription(ns, "a", rcv.URL+"/a"), watchSubscription(ns, "b", rcv.URL+"/b")
	a.Spec.Delivery = &notifyv1.DeliverySpec{MaxQueueSize: new(int32(50))}
	c := watchSubscription(ns, "c", failing.URL+"/c")
	for _, ws := range []*notifyv1.WatchSubscription{a, b, c} {
		create(t, ws)
		waitReason(t, ws, notifyv1.ReasonWatching)
	}
	create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "settings"}})
	waitReason(t, c, notifyv1.ReasonDeliveryFailing)
	g.Eventually(func(g Gomega) {
		got := &notifyv1.WatchSubscription{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(a), got)).To(Succeed())
		g.Expect(got.Status.EventsDelivered).To(BeEquivalentTo(1))
	}).WithTimeout(10 * time.Second).Should(Succeed())

	out, err := run(t, kubeconfig, "status", "-n", ns, "-o", "json")
	g.Expect(err).NotTo(HaveOccurred(), out)
	var reports []statusReport
	g.Expect(json.Unmarshal([]byte(out), &reports)).To(Succeed())
	g.Expect(reports).To(HaveLen(3))
	byName := map[string]statusReport{}
	for _, r := range reports {
		byName[strings.TrimPrefix(r.Subscription, ns+"/")] = r
	}
	ra, rc := byName["a"], byName["c"]
	g.Expect(ra.Ready).To(Equal("True"))
	g.Expect(ra.Watches).To(Equal([]string{"in namespace " + ns}))
	g.Expect(ra.SharedWith).To(Equal([]sharedStream{{Stream: "in namespace " + ns,
		Subscriptions: []string{ns + "/b", ns + "/c"}}}))
	g.Expect(ra.Delivered).To(BeEquivalentTo(1))
	g.Expect(ra.LastDelivery).NotTo(BeNil())
	g.Expect(ra.QueueSize).To(Equal(50))
	g.Expect(ra.LastError).To(BeEmpty())
	g.Expect(rc.Ready).To(Equal("False"))
	g.Expect(rc.LastError).To(ContainSubstring("400"))
	g.Expect(rc.QueueSize).To(Equal(notifyv1.DefaultMaxQueueSize))

	out, err = run(t, kubeconfig, "status", "a", "-n", ns)
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(ContainSubstring("shared with   " + ns + "/b, " + ns + "/c (in namespace " + ns + ")"))
	g.Expect(out).To(ContainSubstring("deliveries    observed 1, delivered 1, failed 0, dropped 0"))
	g.Expect(out).To(ContainSubstring("resyncs       none"))
}
