package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

func deploymentSub(ns, name, url string) *notifyv1.WatchSubscription {
	ws := subscription(ns, name, url)
	ws.Spec.Resource = notifyv1.ResourceRef{Group: "apps", Version: "v1", Resource: "deployments"}
	return ws
}

func newDeployment(ns, name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "example.com/web:1"}}},
			},
		},
	}
}

// mutate re-reads obj, changes it and writes it (status through the status subresource).
func mutate(t *testing.T, d *appsv1.Deployment, status bool, change func(*appsv1.Deployment)) {
	t.Helper()
	ctx := context.Background()
	NewWithT(t).Eventually(func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(d), d); err != nil {
			return err
		}
		change(d)
		if status {
			return k8s.Status().Update(ctx, d)
		}
		return k8s.Update(ctx, d)
	}).Should(Succeed())
}

func TestCELFilterOnReplicasChange(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	sk := newSink(t)
	ws := deploymentSub(ns, "scaled", sk.URL)
	ws.Spec.Filter = `eventType == "Updated" && object.spec.replicas != oldObject.spec.replicas`
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)

	d := newDeployment(ns, "web", 1)
	create(t, d)
	mutate(t, d, false, func(d *appsv1.Deployment) { d.Labels = map[string]string{"touched": "yes"} })
	mutate(t, d, false, func(d *appsv1.Deployment) { d.Spec.Replicas = new(int32(3)) })
	g.Eventually(sk.summary).WithTimeout(10 * time.Second).Should(Equal([]string{
		"updated /apis/apps/v1/namespaces/" + ns + "/deployments/web"}))
	var obj map[string]any
	g.Expect(json.Unmarshal([]byte(sk.Events()[0].Data), &obj)).To(Succeed())
	g.Expect(obj["spec"].(map[string]any)["replicas"]).To(BeEquivalentTo(3))
	g.Consistently(sk.summary).WithTimeout(300 * time.Millisecond).Should(HaveLen(1))
}

func TestIgnoreStatusOnlyDropsStatusChurn(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	quiet, noisy := newSink(t), newSink(t)
	wsQuiet := deploymentSub(ns, "quiet", quiet.URL)
	wsQuiet.Spec.Ignore = &notifyv1.IgnoreSpec{StatusOnly: true}
	wsQuiet.Spec.EventTypes = []notifyv1.EventType{notifyv1.EventUpdated}
	wsNoisy := deploymentSub(ns, "noisy", noisy.URL)
	wsNoisy.Spec.EventTypes = []notifyv1.EventType{notifyv1.EventUpdated}
	for _, ws := range []*notifyv1.WatchSubscription{wsQuiet, wsNoisy} {
		create(t, ws)
		waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	}

	d := newDeployment(ns, "churn", 1)
	create(t, d)
	// A controller that rewrites status all the time.
	for i := range 10 {
		mutate(t, d, true, func(d *appsv1.Deployment) { d.Status.ObservedGeneration = int64(i + 1) })
	}
	mutate(t, d, false, func(d *appsv1.Deployment) { d.Spec.Replicas = new(int32(2)) })

	path := "updated /apis/apps/v1/namespaces/" + ns + "/deployments/churn"
	g.Eventually(func() int { return len(noisy.Events()) }).WithTimeout(10 * time.Second).Should(Equal(11))
	g.Eventually(quiet.summary).Should(Equal([]string{path}), "only the spec change gets through")
	g.Consistently(quiet.summary).WithTimeout(300 * time.Millisecond).Should(HaveLen(1))
}

func TestInvalidFilterIsReported(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	ws := subscription(ns, "bad-cel", "http://127.0.0.1:9/unused")
	ws.Spec.Filter = `object.spec.replicas >`
	create(t, ws)
	cond := waitReason(t, ws, notifyv1.ReasonInvalidFilter, 10*time.Second)
	g.Expect(cond.Status).To(Equal(metav1.ConditionFalse))
	g.Expect(cond.Message).To(ContainSubstring("spec.filter"))
	g.Expect(cond.Message).To(ContainSubstring("1:23"), "the CEL message keeps its position")

	patchSpec(t, ws, func(ws *notifyv1.WatchSubscription) { ws.Spec.Filter = `object.spec.replicas > 1` })
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
}

func TestPayloadModes(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	sinks := map[string]*sink{}
	for name, p := range map[string]*notifyv1.PayloadSpec{
		"metadata":  {Mode: notifyv1.PayloadMetadata},
		"reference": {Mode: notifyv1.PayloadReference},
		"envelope":  {IncludeOldObject: true, IncludeChangedPaths: true},
	} {
		sinks[name] = newSink(t)
		ws := subscription(ns, name, sinks[name].URL)
		ws.Spec.Payload = p
		ws.Spec.EventTypes = []notifyv1.EventType{notifyv1.EventUpdated}
		create(t, ws)
		waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	}

	cm := configMap(ns, "shaped", map[string]string{"app": "x"})
	create(t, cm)
	cm.Data["k"] = "changed"
	g.Expect(k8s.Update(context.Background(), cm)).To(Succeed())
	cm.Labels["app"] = "y"
	g.Expect(k8s.Update(context.Background(), cm)).To(Succeed())

	decode := func(name string, i int) map[string]any {
		var out map[string]any
		g.Expect(json.Unmarshal([]byte(sinks[name].Events()[i].Data), &out)).To(Succeed())
		return out
	}
	for name := range sinks {
		g.Eventually(func() int { return len(sinks[name].Events()) }).WithTimeout(10*time.Second).
			Should(BeNumerically(">=", 1), name)
	}

	// Metadata mode sees only the label change (the data change left metadata alone).
	g.Consistently(func() int { return len(sinks["metadata"].Events()) }).WithTimeout(300 * time.Millisecond).Should(Equal(1))
	md := decode("metadata", 0)
	g.Expect(md).To(HaveKey("metadata"))
	g.Expect(md).NotTo(HaveKey("data"))
	g.Expect(md["metadata"].(map[string]any)["labels"]).To(HaveKeyWithValue("app", "y"))

	g.Eventually(func() int { return len(sinks["reference"].Events()) }).Should(Equal(2))
	ref := decode("reference", 1)
	g.Expect(ref).To(Equal(map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "namespace": ns, "name": "shaped",
		"uid": string(cm.UID), "resourceVersion": cm.ResourceVersion}))

	g.Eventually(func() int { return len(sinks["envelope"].Events()) }).Should(Equal(2))
	first := decode("envelope", 0)
	g.Expect(first["changedPaths"]).To(Equal([]any{"data.k"}))
	g.Expect(first["oldObject"].(map[string]any)["data"]).To(HaveKeyWithValue("k", "v"))
	g.Expect(first["object"].(map[string]any)["data"]).To(HaveKeyWithValue("k", "changed"))
	g.Expect(decode("envelope", 1)["changedPaths"]).To(Equal([]any{"metadata.labels.app"}))
}

func TestUpdatesThatChangeNothingVisibleAreNeverDelivered(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	startOperator(t)
	ns := newNamespace(t)
	sk := newSink(t)
	ws := subscription(ns, "no-noise", sk.URL)
	ws.Spec.EventTypes = []notifyv1.EventType{notifyv1.EventUpdated}
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)

	cm := configMap(ns, "applied", nil)
	create(t, cm)
	// The same content applied by another field manager: only managedFields change, yet the
	// resourceVersion moves.
	before := cm.ResourceVersion
	same := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "applied"}, Data: map[string]string{"k": "v"}}
	//nolint:staticcheck // a typed object applied as a second field manager is the point here
	g.Expect(k8s.Patch(ctx, same, client.Apply, client.FieldOwner("another-manager"))).To(Succeed())
	g.Expect(same.ResourceVersion).NotTo(Equal(before), "the write did happen")

	// A real change afterwards is delivered, and it is the only event.
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(cm), cm)).To(Succeed())
	touch(t, cm)
	g.Eventually(sk.summary).WithTimeout(10 * time.Second).Should(Equal([]string{
		fmt.Sprintf("updated /api/v1/namespaces/%s/configmaps/applied", ns)}))
	g.Consistently(sk.summary).WithTimeout(300 * time.Millisecond).Should(HaveLen(1))
}

// TestCostlyFilterIsReportedAndHoldsUpNobody: a filter over its cost budget for a change
// stops there, the subscription says so (FilterOverBudget, with a count), and another
// subscription of the same watch gets the change as usual.
func TestCostlyFilterIsReportedAndHoldsUpNobody(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	plainSink, costlySink := newSink(t), newSink(t)
	plain := subscription(ns, "plain", plainSink.URL)
	costly := subscription(ns, "costly", costlySink.URL)
	costly.Spec.Filter = `object.data.all(k, object.data.all(j, k.size() + j.size() >= 0))`
	for _, ws := range []*notifyv1.WatchSubscription{plain, costly} {
		create(t, ws)
		waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	}

	big := configMap(ns, "big", nil)
	for i := range 1000 {
		big.Data[fmt.Sprintf("key-%04d", i)] = "v"
	}
	create(t, big)
	g.Eventually(plainSink.summary).WithTimeout(10 * time.Second).Should(ContainElement("added /api/v1/namespaces/" + ns + "/configmaps/big"))
	cond := waitReason(t, costly, notifyv1.ReasonFilterOverBudget, 10*time.Second)
	g.Expect(cond.Message).To(ContainSubstring("spec.filter cost more than its budget for 1 changes"))

	create(t, configMap(ns, "small", nil))
	g.Eventually(costlySink.summary).WithTimeout(10*time.Second).Should(Equal([]string{
		"added /api/v1/namespaces/" + ns + "/configmaps/small"}), "the filter still works for what it can afford")
}
