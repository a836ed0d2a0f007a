package samples

import (
	"context"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// event is a CloudEvent by type and subject (the object's API path).
type event struct {
	Type, Subject string
}

// sampleCase shows that a sample does what its comment says, beyond becoming Ready.
type sampleCase struct {
	// before runs before the subscription is created.
	before func(t *testing.T)
	// trigger runs once every sample is Ready.
	trigger func(t *testing.T)
	// want must then reach the sample's sink, and no event of another type for the same
	// object.
	want event
	// only: want is the one event for its object; the changes the sample must not deliver
	// come before it.
	only bool
	// bodyContains is a text the request carrying want must hold.
	bodyContains string
}

const (
	added   = "io.dynamicnotifier.resource.added"
	updated = "io.dynamicnotifier.resource.updated"
)

// sampleCases, by the samples' metadata.name. Every sample needs one.
func sampleCases() map[string]sampleCase {
	// envtest has no namespace controller: a deleted namespace never goes away, so each run
	// creates another.
	newNamespace := "sample-" + rand.String(6)
	return map[string]sampleCase{
		"configmaps-to-webhook": {
			trigger: func(t *testing.T) {
				create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: sampleNamespace, Name: "settings"},
					Data: map[string]string{"log-level": "debug"}})
			},
			want: event{added, "/api/v1/namespaces/samples/configmaps/settings"},
		},

		// Created, then scaled: only the update is delivered.
		"frontend-deployment-updates": {
			trigger: func(t *testing.T) {
				dep := deployment("team-a", "web", map[string]string{"tier": "frontend"})
				create(t, dep)
				patch := client.MergeFrom(dep.DeepCopy())
				dep.Spec.Replicas = new(int32(3))
				if err := k8s.Patch(context.Background(), dep, patch); err != nil {
					t.Fatal(err)
				}
			},
			want: event{updated, "/apis/apps/v1/namespaces/team-a/deployments/web"},
		},

		"namespaces-to-log": {
			trigger: func(t *testing.T) {
				create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: newNamespace}})
			},
			want: event{added, "/api/v1/namespaces/" + newNamespace},
		},

		// A Pod no kubelet runs stays Pending: status.phase!=Running matches.
		"pods-not-running": {
			trigger: func(t *testing.T) {
				create(t, &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Namespace: sampleNamespace, Name: "batch-1"},
					Spec: corev1.PodSpec{
						AutomountServiceAccountToken: new(false),
						Containers:                   []corev1.Container{{Name: "main", Image: "registry.example/batch:1"}},
					},
				})
			},
			want: event{added, "/api/v1/namespaces/samples/pods/batch-1"},
		},

		// The Certificate exists before the subscription: sendInitialEvents delivers it.
		"certificates-initial-events": {
			before: func(t *testing.T) {
				cert := &unstructured.Unstructured{Object: map[string]any{
					"apiVersion": "cert-manager.io/v1",
					"kind":       "Certificate",
					"metadata":   map[string]any{"namespace": sampleNamespace, "name": "www"},
					"spec": map[string]any{
						"secretName": "www-tls",
						"dnsNames":   []any{"www.example.com"},
						"issuerRef":  map[string]any{"name": "letsencrypt", "kind": "ClusterIssuer"},
					},
				}}
				create(t, cert)
			},
			want: event{added, "/apis/cert-manager.io/v1/namespaces/samples/certificates/www"},
		},

		// Created, scaled, then given a new image: only the new image is a rollout.
		"deployment-rollouts-to-slack": {
			trigger: func(t *testing.T) {
				dep := deployment(sampleNamespace, "shop", nil)
				create(t, dep)
				update(t, dep, func() { dep.Spec.Replicas = new(int32(2)) })
				update(t, dep, func() { dep.Spec.Template.Spec.Containers[0].Image = "registry.example/web:2" })
			},
			want: event{updated, "/apis/apps/v1/namespaces/samples/deployments/shop"},
			// The rollout arrives after the scale, so once it is in, the scale had its chance.
			only:         true,
			bodyContains: "registry.example/web:2",
		},

		// Scaled three times in a row, then relabelled: one event, with the final count.
		"deployments-scaled": {
			trigger: func(t *testing.T) {
				dep := deployment(sampleNamespace, "api", nil)
				create(t, dep)
				for _, n := range []int32{2, 3, 4} {
					update(t, dep, func() { dep.Spec.Replicas = new(n) })
				}
				update(t, dep, func() { dep.Labels = map[string]string{"team": "payments"} })
			},
			want:         event{updated, "/apis/apps/v1/namespaces/samples/deployments/api"},
			only:         true,
			bodyContains: `"replicas":4`,
		},

		// The Deployment controller's verdict, written as it writes it: the status.
		"stalled-rollouts-to-teams": {
			trigger: func(t *testing.T) {
				dep := deployment(sampleNamespace, "checkout", nil)
				create(t, dep)
				patch := client.MergeFrom(dep.DeepCopy())
				dep.Status.ObservedGeneration = dep.Generation
				dep.Status.Conditions = []appsv1.DeploymentCondition{{
					Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded",
					Message:        `ReplicaSet "checkout-7d9c" has timed out progressing.`,
					LastUpdateTime: metav1.Now(), LastTransitionTime: metav1.Now(),
				}}
				if err := k8s.Status().Patch(context.Background(), dep, patch); err != nil {
					t.Fatal(err)
				}
			},
			want: event{updated, "/apis/apps/v1/namespaces/samples/deployments/checkout"},
		},

		"load-balancers-to-discord": {
			trigger: func(t *testing.T) {
				create(t, &corev1.Service{
					ObjectMeta: metav1.ObjectMeta{Namespace: sampleNamespace, Name: "storefront"},
					Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "storefront"},
						Ports: []corev1.ServicePort{{Port: 443, Protocol: corev1.ProtocolTCP}}},
				})
			},
			want: event{added, "/api/v1/namespaces/samples/services/storefront"},
		},

		"docs-site-config-to-github": {
			trigger: func(t *testing.T) {
				create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: sampleNamespace, Name: "docs-theme",
					Labels: map[string]string{"app.kubernetes.io/part-of": "docs-site"}}, Data: map[string]string{"theme": "dark"}})
			},
			want: event{added, "/api/v1/namespaces/samples/configmaps/docs-theme"},
		},

		// A Normal and a Warning Event: only the Warning is delivered, in a batch.
		"warning-events-batched": {
			trigger: func(t *testing.T) {
				create(t, coreEvent("pulled", corev1.EventTypeNormal, "Pulled"))
				create(t, coreEvent("backoff", corev1.EventTypeWarning, "BackOff"))
			},
			want: event{added, "/api/v1/namespaces/samples/events/backoff"},
		},
	}
}

// update changes obj with mutate and writes it, retrying on conflicts.
func update(t *testing.T, obj client.Object, mutate func()) {
	t.Helper()
	patch := client.MergeFrom(obj.DeepCopyObject().(client.Object))
	mutate()
	if err := k8s.Patch(context.Background(), obj, patch); err != nil {
		t.Fatal(err)
	}
}

func coreEvent(name, eventType, reason string) *corev1.Event {
	return &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Namespace: sampleNamespace, Name: name},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: sampleNamespace, Name: "web-0", APIVersion: "v1"},
		Type:           eventType, Reason: reason, Message: reason + " for the sample",
		Source: corev1.EventSource{Component: "kubelet"},
	}
}

func deployment(namespace, name string, labels map[string]string) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "registry.example/web:1"}}},
			},
		},
	}
}
