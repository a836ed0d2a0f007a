package resolve_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/dynamic-notifier/dynamic-notifier/internal/resolve"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

var (
	cfg *rest.Config
	k8s client.Client
)

func TestMain(m *testing.M) {
	testenv.Main(m, func(_ *envtest.Environment, c *rest.Config) (err error) {
		cfg = c
		scheme := runtime.NewScheme()
		if err = apiextensionsv1.AddToScheme(scheme); err != nil {
			return err
		}
		k8s, err = client.New(cfg, client.Options{Scheme: scheme})
		return err
	})
}

func newResolver(minRefresh time.Duration) *resolve.Resolver {
	return resolve.New(discovery.NewDiscoveryClientForConfigOrDie(cfg), minRefresh)
}

func TestBuiltinsResolve(t *testing.T) {
	r := newResolver(time.Hour)
	cases := []struct {
		gvr        schema.GroupVersionResource
		kind       string
		namespaced bool
	}{
		{schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, "ConfigMap", true},
		{schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, "Namespace", false},
		{schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, "Deployment", true},
	}
	for _, tc := range cases {
		t.Run(resolve.Describe(tc.gvr), func(t *testing.T) {
			g := NewWithT(t)
			res, err := r.Resolve(tc.gvr)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(res).To(Equal(resolve.Resource{GVR: tc.gvr, Kind: tc.kind, Namespaced: tc.namespaced}))
		})
	}
}

func TestUnknownResourcesAreNoMatch(t *testing.T) {
	r := newResolver(time.Hour)
	cases := []struct {
		name string
		gvr  schema.GroupVersionResource
	}{
		{"resource", schema.GroupVersionResource{Version: "v1", Resource: "foos"}},
		{"group", schema.GroupVersionResource{Group: "nothing.example.com", Version: "v1", Resource: "things"}},
		{"version", schema.GroupVersionResource{Group: "apps", Version: "v7", Resource: "deployments"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			_, err := r.Resolve(tc.gvr)
			g.Expect(err).To(HaveOccurred())
			g.Expect(meta.IsNoMatchError(err)).To(BeTrue(), "%T: %v", err, err)
			g.Expect(resolve.IsNotWatchable(err)).To(BeFalse())
		})
	}
}

func TestNotWatchable(t *testing.T) {
	r := newResolver(time.Hour)
	cases := []struct {
		name string
		gvr  schema.GroupVersionResource
	}{
		{"subresource", schema.GroupVersionResource{Version: "v1", Resource: "pods/log"}},
		{"create-only", schema.GroupVersionResource{Group: "authentication.k8s.io", Version: "v1", Resource: "tokenreviews"}},
		{"create-only review", schema.GroupVersionResource{Group: "authorization.k8s.io", Version: "v1",
			Resource: "selfsubjectaccessreviews"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			_, err := r.Resolve(tc.gvr)
			g.Expect(err).To(HaveOccurred())
			g.Expect(resolve.IsNotWatchable(err)).To(BeTrue(), "%T: %v", err, err)
			g.Expect(meta.IsNoMatchError(err)).To(BeFalse())
			g.Expect(err.Error()).To(ContainSubstring(resolve.Describe(tc.gvr)))
		})
	}
}

// crd is a namespaced CRD example.com/v1 <plural> accepting any content.
func crd(plural, kind string) *apiextensionsv1.CustomResourceDefinition {
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: plural + ".example.com"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "example.com",
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: plural, Kind: kind, ListKind: kind + "List"},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object", XPreserveUnknownFields: new(true)}},
			}},
		},
	}
}

// createCRD creates the CRD, removes it when the test ends, and waits until it is
// Established.
func createCRD(t *testing.T, c *apiextensionsv1.CustomResourceDefinition) {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	g.Expect(k8s.Create(ctx, c)).To(Succeed())
	// Waited for, so a later test (or -count) does not find the resource still served.
	t.Cleanup(func() { deleteCRD(t, c) })
	g.Eventually(func(g Gomega) {
		got := &apiextensionsv1.CustomResourceDefinition{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(c), got)).To(Succeed())
		g.Expect(got.Status.Conditions).To(ContainElement(And(
			HaveField("Type", apiextensionsv1.Established), HaveField("Status", apiextensionsv1.ConditionTrue))))
	}).WithTimeout(10 * time.Second).WithPolling(20 * time.Millisecond).Should(Succeed())
}

// deleteCRD deletes the CRD and waits until discovery no longer serves its resource.
func deleteCRD(t *testing.T, c *apiextensionsv1.CustomResourceDefinition) {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	g.Expect(client.IgnoreNotFound(k8s.Delete(ctx, c))).To(Succeed())
	g.Eventually(func() error {
		return k8s.Get(ctx, client.ObjectKeyFromObject(c), &apiextensionsv1.CustomResourceDefinition{})
	}).WithTimeout(20 * time.Second).Should(MatchError(ContainSubstring("not found")))
	gvr := schema.GroupVersionResource{Group: c.Spec.Group, Version: c.Spec.Versions[0].Name, Resource: c.Spec.Names.Plural}
	g.Eventually(func() bool { return served(gvr) }).WithTimeout(10 * time.Second).Should(BeFalse())
}

// served tells whether a discovery client of its own sees gvr right now.
func served(gvr schema.GroupVersionResource) bool {
	list, err := discovery.NewDiscoveryClientForConfigOrDie(cfg).ServerResourcesForGroupVersion(gvr.GroupVersion().String())
	if err != nil {
		return false
	}
	for _, res := range list.APIResources {
		if res.Name == gvr.Resource {
			return true
		}
	}
	return false
}

func isNoMatch(err error) bool { return meta.IsNoMatchError(err) }

func TestCRDCreatedAfterAMissAndDeleted(t *testing.T) {
	g := NewWithT(t)
	gvr := schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "gadgets"}
	// A short minRefresh, so a miss while discovery lags behind Established is retried.
	r := newResolver(100 * time.Millisecond)

	_, err := r.Resolve(gvr)
	g.Expect(meta.IsNoMatchError(err)).To(BeTrue(), "before the CRD: %v", err)

	gadgets := crd("gadgets", "Gadget")
	createCRD(t, gadgets)
	r.Invalidate("example.com")
	g.Eventually(func() (resolve.Resource, error) { return r.Resolve(gvr) }).WithTimeout(10 * time.Second).
		Should(Equal(resolve.Resource{GVR: gvr, Kind: "Gadget", Namespaced: true}))

	deleteCRD(t, gadgets)
	// A hit is served from the cache whatever minRefresh is: only Invalidate tells the
	// resolver that a CRD went away.
	_, err = r.Resolve(gvr)
	g.Expect(err).NotTo(HaveOccurred(), "still cached before Invalidate")

	r.Invalidate("example.com")
	_, err = r.Resolve(gvr)
	g.Expect(err).To(Satisfy(isNoMatch), "after Invalidate: %v", err)
}

func TestMinRefreshBoundsDiscoveryAfterAMiss(t *testing.T) {
	cases := []struct {
		plural, kind string
		minRefresh   time.Duration
		// refreshes: whether a miss is looked up again without Invalidate.
		refreshes bool
	}{
		{"gizmos", "Gizmo", time.Hour, false},
		{"doohickeys", "Doohickey", 100 * time.Millisecond, true},
	}
	for _, tc := range cases {
		t.Run(tc.minRefresh.String(), func(t *testing.T) {
			g := NewWithT(t)
			gvr := schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: tc.plural}
			r := newResolver(tc.minRefresh)
			_, err := r.Resolve(gvr)
			g.Expect(err).To(Satisfy(isNoMatch), "before the CRD: %v", err)

			createCRD(t, crd(tc.plural, tc.kind))
			// From here on the API server serves the resource: a miss comes from the cache.
			g.Eventually(func() bool { return served(gvr) }).WithTimeout(10 * time.Second).Should(BeTrue())
			resolveErr := func() error { _, err := r.Resolve(gvr); return err }
			if tc.refreshes {
				g.Eventually(resolveErr).WithTimeout(2 * time.Second).Should(Succeed())
				return
			}
			g.Consistently(resolveErr).WithTimeout(time.Second).WithPolling(50*time.Millisecond).
				Should(Satisfy(isNoMatch), "the miss is remembered for minRefresh")

			r.Invalidate("example.com")
			res, err := r.Resolve(gvr)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(res).To(Equal(resolve.Resource{GVR: gvr, Kind: tc.kind, Namespaced: true}))
		})
	}
}

// TestConcurrentResolveAndInvalidate is for the race detector: the resolver is shared by
// the controller's workers and its CRD event handler.
func TestConcurrentResolveAndInvalidate(t *testing.T) {
	g := NewWithT(t)
	r := newResolver(0)
	gvrs := []schema.GroupVersionResource{
		{Version: "v1", Resource: "configmaps"},
		{Group: "apps", Version: "v1", Resource: "deployments"},
		{Group: "nothing.example.com", Version: "v1", Resource: "things"},
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8*10)
	for i := range 8 {
		wg.Go(func() {
			for j := range 10 {
				gvr := gvrs[(i+j)%len(gvrs)]
				_, err := r.Resolve(gvr)
				if unknown := gvr.Group == "nothing.example.com"; unknown != meta.IsNoMatchError(err) {
					errs <- fmt.Errorf("%s: %v", resolve.Describe(gvr), err)
				}
				r.Invalidate(gvrs[j%len(gvrs)].Group)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		g.Expect(err).NotTo(HaveOccurred())
	}
}
