package filter

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// FuzzFilter feeds arbitrary selectors and CEL expressions: compiling never panics, and a
// filter that compiles never panics on an object either. For a filter that redacts, on a
// Secret, neither the outcome nor an evaluation error depends on the Secret's values, and
// no error quotes one.
func FuzzFilter(f *testing.F) {
	f.Add("metadata.name=x", "tier", "frontend", `object.spec.replicas > 1`)
	f.Add("status.phase!=Running,metadata.namespace==a", "a/b", "", `oldObject == null`)
	f.Add("=,!=", "", "", `object.metadata.labels["x"].startsWith("y")`)
	f.Add("type=Opaque", "app", "db", `object.data.password.startsWith("c2Vj")`)
	f.Add("", "app", "db", `{"a": 1}[object.stringData.token] == 1`)
	f.Add("", "app", "db", `size(oldObject.data.password) > 8`)
	f.Add("", "app", "db", `object.metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"]`)
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

		for _, v := range fuzzValues {
			if strings.Contains(fieldSel+labelKey+labelValue+expr, v) {
				return
			}
		}
		var errs []string
		redacting, err := New(Options{FieldSelector: fieldSel, Selector: sel, CEL: expr, RedactSecrets: true,
			OnEvalError: func(err error) { errs = append(errs, err.Error()) }})
		if err != nil {
			t.Fatalf("compiles without redaction, not with it: %v", err)
		}
		var outcomes []bool
		for _, v := range fuzzValues {
			s := fuzzSecret(labelKey, labelValue, v)
			outcomes = append(outcomes, redacting.Match(&event.Event{Type: event.Updated, Object: s, OldObject: s}, Labels(s)))
		}
		if outcomes[0] != outcomes[1] {
			t.Fatalf("the outcome depends on a redacted value: %v", outcomes)
		}
		if len(errs) == 2 && errs[0] != errs[1] {
			t.Fatalf("the error depends on a redacted value: %q", errs)
		}
		for _, e := range errs {
			for _, v := range fuzzValues {
				if strings.Contains(e, v) {
					t.Fatalf("the error quotes a value: %s", e)
				}
			}
		}
	})
}

// fuzzValues are two values of different lengths and contents that FuzzFilter plants in
// the same Secret.
var fuzzValues = []string{"c2VjcmV0UVdF", "b3RoZXI9"}

func fuzzSecret(labelKey, labelValue, value string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Secret",
		"metadata": map[string]any{"name": "x", "labels": map[string]any{labelKey: labelValue},
			"annotations": map[string]any{lastApplied: `{"data":{"password":"` + value + `"}}`}},
		"type":       "Opaque",
		"data":       map[string]any{"password": value, "other": value},
		"stringData": map[string]any{"token": value},
	}}
}
