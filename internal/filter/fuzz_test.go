package filter

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// FuzzFilter feeds arbitrary selectors and CEL expressions: compiling never panics, and a
// filter that compiles never panics on an object either.
func FuzzFilter(f *testing.F) {
	f.Add("metadata.name=x", "tier", "frontend", `object.spec.replicas > 1`)
	f.Add("status.phase!=Running,metadata.namespace==a", "a/b", "", `oldObject == null`)
	f.Add("=,!=", "", "", `object.metadata.labels["x"].startsWith("y")`)
	f.Fuzz(func(t *testing.T, fieldSel, labelKey, labelValue, expr string) {
		sel := &metav1.LabelSelector{MatchLabels: map[string]string{labelKey: labelValue}}
		flt, err := New(Options{FieldSelector: fieldSel, Selector: sel, CEL: expr, OnEvalError: func(error) {}})
		if err != nil {
			return
		}
		obj := &unstructured.Unstructured{Object: map[string]any{
			"metadata": map[string]any{"name": "x", "labels": map[string]any{labelKey: labelValue}},
			"spec":     map[string]any{"replicas": int64(2), "list": []any{"a", 1.5, nil}},
		}}
		flt.Match(&event.Event{Type: event.Updated, Object: obj, OldObject: obj}, Labels(obj))
	})
}
