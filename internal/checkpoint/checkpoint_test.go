package checkpoint_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/dynamic-notifier/dynamic-notifier/internal/checkpoint"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

var k8s client.Client

func TestMain(m *testing.M) {
	testenv.Main(m, func(_ *envtest.Environment, cfg *rest.Config) error {
		var err error
		k8s, err = client.New(cfg, client.Options{})
		return err
	})
}

func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "checkpoint-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

func TestSaveAndLoadRoundTrip(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	store := &checkpoint.ConfigMap{Reader: k8s, Writer: k8s, Namespace: newNamespace(t)}

	points, err := store.Load(ctx)
	g.Expect(err).NotTo(HaveOccurred(), "no ConfigMap yet is not an error")
	g.Expect(points).To(BeEmpty())

	at := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	first := map[string]watch.Point{"ns/a/uid-a": {Stream: "configmaps./v1@ns", ResourceVersion: "10", Time: at}}
	g.Expect(store.Save(ctx, first)).To(Succeed(), "the first save creates the ConfigMap")
	second := map[string]watch.Point{
		"ns/a/uid-a": {Stream: "configmaps./v1@ns", ResourceVersion: "12", Time: at},
		"ns/b/uid-b": {Stream: "secrets./v1@*", ResourceVersion: "11", Time: at},
	}
	g.Expect(store.Save(ctx, second)).To(Succeed(), "later saves replace it")

	got, err := store.Load(ctx)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got).To(Equal(second))

	var cm corev1.ConfigMap
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: store.Namespace, Name: checkpoint.DefaultName}, &cm)).To(Succeed())
	g.Expect(cm.Labels).To(HaveKeyWithValue("app.kubernetes.io/managed-by", "dynamic-notifier"))
}

func TestUnreadableCheckpointsMeanStartingFresh(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	for _, data := range []string{`not json`, `{"version": 99, "subscriptions": {"x": {"stream": "s", "resourceVersion": "1"}}}`} {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: checkpoint.DefaultName},
			Data: map[string]string{"checkpoints.json": data}}
		_ = k8s.Delete(ctx, cm)
		g.Eventually(func() error { return k8s.Create(ctx, cm.DeepCopy()) }).Should(Succeed())
		points, err := (&checkpoint.ConfigMap{Reader: k8s, Writer: k8s, Namespace: ns}).Load(ctx)
		g.Expect(err).NotTo(HaveOccurred(), data)
		g.Expect(points).To(BeEmpty(), data)
	}
}
