// Package install tests what users install: the kustomize bundle (make build-installer's
// dist/install.yaml), the Helm chart and the image build. Every object is checked by a real
// API server (server-side dry-run apply), not only by schema linting.
package install

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

var (
	k8s client.Client
	// testEnv adds users without system:masters, for tests of what they may do.
	testEnv *envtest.Environment
)

func TestMain(m *testing.M) {
	testenv.Main(m, func(env *envtest.Environment, cfg *rest.Config) (err error) {
		testEnv = env
		scheme := runtime.NewScheme()
		_ = clientgoscheme.AddToScheme(scheme)
		_ = apiextensionsv1.AddToScheme(scheme)
		_ = notifyv1.AddToScheme(scheme)
		k8s, err = client.New(cfg, client.Options{Scheme: scheme})
		return err
	})
}

func repo(parts ...string) string {
	return filepath.Join(append([]string{testenv.RepoRoot()}, parts...)...)
}

// optionalKinds are kinds of optional components (Prometheus Operator, cert-manager) whose
// CRDs the test API server does not have. They are skipped, and only when their CRD is absent.
var optionalKinds = []schema.GroupKind{
	{Group: "monitoring.coreos.com", Kind: "ServiceMonitor"},
	{Group: "monitoring.coreos.com", Kind: "PrometheusRule"},
	{Group: "cert-manager.io", Kind: "Certificate"},
	{Group: "cert-manager.io", Kind: "Issuer"},
}

// decodeManifests splits a multi-document YAML stream into objects, dropping empty documents.
func decodeManifests(data []byte) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		obj := map[string]any{}
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			return nil, fmt.Errorf("%w in:\n%s", err, doc)
		}
		if len(obj) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: obj})
	}
}

func describe(obj *unstructured.Unstructured) string {
	if ns := obj.GetNamespace(); ns != "" {
		return fmt.Sprintf("%s %s/%s", obj.GetKind(), ns, obj.GetName())
	}
	return obj.GetKind() + " " + obj.GetName()
}

// applyAll checks objs against the API server the way kubectl apply --server-side would see
// them: namespaces are created for real (namespaced objects cannot be dry-run into a missing
// namespace), so are CRDs that are not installed yet; everything else is applied with
// server-side apply and dry-run, so the API server validates and defaults every object
// (schema, CEL rules, admission) without storing it.
func applyAll(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	ordered := slices.Clone(objs)
	rank := func(o *unstructured.Unstructured) int {
		switch o.GetKind() {
		case "Namespace":
			return 0
		case "CustomResourceDefinition":
			return 1
		}
		return 2
	}
	slices.SortStableFunc(ordered, func(a, b *unstructured.Unstructured) int { return rank(a) - rank(b) })

	for _, obj := range ordered {
		gvk := obj.GroupVersionKind()
		switch {
		case gvk.Kind == "Namespace":
			ensureNamespace(t, obj.DeepCopy())
			continue
		case gvk.Kind == "CustomResourceDefinition":
			ensureCRD(t, obj)
		case slices.Contains(optionalKinds, gvk.GroupKind()):
			if _, err := k8s.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version); !meta.IsNoMatchError(err) {
				t.Errorf("%s: optional kind is served (err=%v); apply it instead of skipping", describe(obj), err)
			}
			t.Logf("skipped %s: no CRD for %s on the test API server", describe(obj), gvk.GroupKind())
			continue
		}
		if ns := obj.GetNamespace(); ns != "" {
			ns := &unstructured.Unstructured{}
			ns.SetAPIVersion("v1")
			ns.SetKind("Namespace")
			ns.SetName(obj.GetNamespace())
			ensureNamespace(t, ns)
		}
		err := k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj.DeepCopy()),
			client.DryRunAll, client.FieldOwner("test"), client.ForceOwnership)
		if err != nil {
			t.Errorf("%s: %v", describe(obj), err)
		}
	}
}

func ensureNamespace(t *testing.T, ns *unstructured.Unstructured) {
	t.Helper()
	err := k8s.Create(context.Background(), ns)
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("namespace %s: %v", ns.GetName(), err)
	}
}

// ensureCRD creates a CRD that is not installed yet and waits until it is served.
func ensureCRD(t *testing.T, obj *unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	existing := &apiextensionsv1.CustomResourceDefinition{}
	err := k8s.Get(ctx, client.ObjectKey{Name: obj.GetName()}, existing)
	if err == nil {
		return
	}
	if !apierrors.IsNotFound(err) {
		t.Fatalf("%s: %v", describe(obj), err)
	}
	if err := k8s.Create(ctx, obj.DeepCopy()); err != nil {
		t.Fatalf("%s: %v", describe(obj), err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if err := k8s.Get(ctx, client.ObjectKey{Name: obj.GetName()}, existing); err == nil {
			for _, c := range existing.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					return
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not Established after 30s", describe(obj))
}

// only returns the objects of one kind.
func only(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// convert turns an unstructured object into a typed one.
func convert[T any](t *testing.T, obj *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(obj.Object, out, true); err != nil {
		t.Fatalf("%s: %v", describe(obj), err)
	}
	return out
}

func hasPrefix(list []string, prefix string) bool {
	return slices.ContainsFunc(list, func(s string) bool { return strings.HasPrefix(s, prefix) })
}
