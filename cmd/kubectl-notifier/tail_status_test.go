package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
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
	g.Eventually(out.String).WithTimeout(10 * time.Second).Should(ContainSubstring("delivered +1 (1)"))

	// A failing sink: Ready turns, with the sink's answer, and a Warning Event says so.
	rcv.setStatus(http.StatusInternalServerError)
	create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "refused"}})
	g.Eventually(out.String).WithTimeout(20 * time.Second).Should(And(
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
	for line := range strings.SplitSeq(strings.TrimSpace(out.String()), "\n") {
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
	g.Expect(out).To(ContainSubstring("queue         0 events waiting or in flight, up to 50"))
	g.Expect(out).To(ContainSubstring("resyncs       none"))

	// A sink that does not answer: the event waits in the queue, retried, and status says so.
	hung := make(chan struct{})
	hanging := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, req *http.Request) {
		select {
		case <-hung:
		case <-req.Context().Done():
		}
	}))
	t.Cleanup(hanging.Close)
	t.Cleanup(func() { close(hung) })
	slow := watchSubscription(ns, "slow", hanging.URL)
	slow.Spec.Resource.Resource = "secrets"
	create(t, slow)
	waitReason(t, slow, notifyv1.ReasonWatching)
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"}})
	g.Eventually(func() string {
		out, _ := run(t, kubeconfig, "status", "slow", "-n", ns)
		return out
	}).WithTimeout(10*time.Second).Should(ContainSubstring("queue         1 events waiting or in flight"),
		"the operator writes the queue depth into status")
}

// TestStatusChanges: tail's lines are what changed between two versions of a subscription.
func TestStatusChanges(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := metav1.NewTime(now.Add(-time.Minute))
	ready := func(status metav1.ConditionStatus, reason string) []metav1.Condition {
		return []metav1.Condition{{Type: notifyv1.ConditionReady, Status: status, Reason: reason, Message: "m"}}
	}
	sub := func(change func(*notifyv1.WatchSubscription)) *notifyv1.WatchSubscription {
		ws := &notifyv1.WatchSubscription{ObjectMeta: metav1.ObjectMeta{Generation: 1},
			Status: notifyv1.WatchSubscriptionStatus{Conditions: ready(metav1.ConditionTrue, "Watching"),
				EventsObserved: 3, EventsDelivered: 3}}
		if change != nil {
			change(ws)
		}
		return ws
	}
	for _, tc := range []struct {
		name      string
		prev, cur *notifyv1.WatchSubscription
		want      []string
	}{
		{name: "the first look", cur: sub(nil), want: []string{
			"ready Ready True Watching: m", "counts so far: observed 3, delivered 3, failed 0, dropped 0; queued 0"}},
		{name: "the first look, before the operator", cur: &notifyv1.WatchSubscription{}, want: []string{
			"ready no Ready condition yet: the operator has not reported on this subscription (is it running?)",
			"counts so far: observed 0, delivered 0, failed 0, dropped 0; queued 0"}},
		{name: "nothing changed", prev: sub(nil), cur: sub(nil), want: []string{}},
		{name: "deliveries", prev: sub(nil), cur: sub(func(ws *notifyv1.WatchSubscription) {
			ws.Status.EventsObserved, ws.Status.EventsDelivered, ws.Status.EventsQueued = 5, 4, 1
			ws.Status.LastDeliveryTime = &at
		}), want: []string{"counts observed +2 (5), delivered +1 (4), queued 1; last delivery " + at.Format(time.RFC3339)}},
		{name: "Ready turns", prev: sub(nil), cur: sub(func(ws *notifyv1.WatchSubscription) {
			ws.Status.Conditions = ready(metav1.ConditionFalse, "DeliveryFailing")
		}), want: []string{"ready Ready False DeliveryFailing: m"}},
		{name: "a resync and a spec change", prev: sub(nil), cur: sub(func(ws *notifyv1.WatchSubscription) {
			ws.Generation, ws.Status.LastResyncTime = 2, &at
		}), want: []string{"spec the spec changed (generation 2)",
			"resync the operator could not resume from its checkpoint at " + at.Format(time.RFC3339) +
				": changes in the gap were re-listed and deletions may be missing"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines := statusChanges(tc.prev, tc.cur, now)
			got := make([]string, 0, len(lines))
			for _, l := range lines {
				got = append(got, l.Kind+" "+l.Message)
			}
			NewWithT(t).Expect(got).To(Equal(tc.want))
		})
	}
}
