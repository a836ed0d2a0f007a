package filter

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

func pod(name string, labels map[string]any, phase string, replicas int64) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": name, "namespace": "team-a", "labels": labels},
		"spec":     map[string]any{"replicas": replicas},
		"status":   map[string]any{"phase": phase},
	}}
}

func TestMatches(t *testing.T) {
	web := pod("web", map[string]any{"tier": "frontend"}, "Running", 3)
	db := pod("db", map[string]any{"tier": "backend"}, "Pending", 1)
	cases := []struct {
		name   string
		types  []event.Type
		sel    *metav1.LabelSelector
		fields string
		t      event.Type
		obj    *unstructured.Unstructured
		want   bool
	}{
		{"empty filter matches all", nil, nil, "", event.Deleted, db, true},
		{"type allowed", []event.Type{event.Updated}, nil, "", event.Updated, web, true},
		{"type filtered", []event.Type{event.Updated}, nil, "", event.Added, web, false},
		{"matchLabels hit", nil, &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "frontend"}}, "", event.Added, web, true},
		{"matchLabels miss", nil, &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "frontend"}}, "", event.Added, db, false},
		{"expression NotIn", nil, &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "tier", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"frontend"}}}}, "", event.Added, db, true},
		{"empty selector matches all", nil, &metav1.LabelSelector{}, "", event.Added, db, true},
		{"field name", nil, nil, "metadata.name=web", event.Added, web, true},
		{"field name miss", nil, nil, "metadata.name=web", event.Added, db, false},
		{"field not equal", nil, nil, "status.phase!=Running", event.Added, db, true},
		{"field on number", nil, nil, "spec.replicas==3", event.Added, web, true},
		{"fields and labels", nil, &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "backend"}}, "status.phase=Pending,metadata.namespace=team-a", event.Added, db, true},
		{"missing field never equals", nil, nil, "status.nothing=x", event.Added, db, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Compile(tc.types, tc.sel, tc.fields)
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Matches(tc.t, tc.obj); got != tc.want {
				t.Errorf("Matches = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCompileErrorsNameTheField(t *testing.T) {
	if _, err := Compile(nil, nil, "metadata.name=a=b=="); err == nil || !contains(err.Error(), "spec.fieldSelector") {
		t.Errorf("bad field selector: %v", err)
	}
	bad := &metav1.LabelSelector{MatchLabels: map[string]string{"bad key!": "x"}}
	if _, err := Compile(nil, bad, ""); err == nil || !contains(err.Error(), "spec.selector") {
		t.Errorf("bad label selector: %v", err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestSignatureIsSharedOnlyByEquivalentFilters(t *testing.T) {
	mustNew := func(o Options) *Filter {
		t.Helper()
		f, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	web := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	base := mustNew(Options{Selector: web, Types: []event.Type{event.Updated, event.Added}})
	cases := []struct {
		name string
		f    *Filter
		same bool
	}{
		{"same selector, types in another order", mustNew(Options{Selector: web, Types: []event.Type{event.Added, event.Updated}}), true},
		{"other selector", mustNew(Options{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Types: []event.Type{event.Added, event.Updated}}), false},
		{"other types", mustNew(Options{Selector: web, Types: []event.Type{event.Added}}), false},
		{"field selector", mustNew(Options{Selector: web, Types: []event.Type{event.Added, event.Updated}, FieldSelector: "metadata.name=x"}), false},
		{"ignore statusOnly", mustNew(Options{Selector: web, Types: []event.Type{event.Added, event.Updated}, IgnoreStatusOnly: true}), false},
		{"metadata payload", mustNew(Options{Selector: web, Types: []event.Type{event.Added, event.Updated}, MetadataPayload: true}), false},
	}
	for _, c := range cases {
		if got := c.f.Signature() == base.Signature(); got != c.same {
			t.Errorf("%s: signatures equal = %v, want %v (%q vs %q)", c.name, got, c.same, c.f.Signature(), base.Signature())
		}
	}
	// The CEL expression is not part of the signature: it runs in each subscription's
	// delivery workers, not in the fan-out the signature groups for.
	cel := mustNew(Options{Selector: web, Types: []event.Type{event.Added, event.Updated}, CEL: "true"})
	if cel.Signature() != base.Signature() {
		t.Errorf("a CEL filter prefilters like its other parts: signature %q, want %q", cel.Signature(), base.Signature())
	}
	var none *Filter
	if none.Signature() == "" || none.Signature() == base.Signature() {
		t.Errorf("no filter has a signature of its own, got %q", none.Signature())
	}
}
