package filter

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

func deployment(replicas int64, labels, annotations map[string]any, phase string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": "web", "namespace": "team-a", "labels": labels,
			"annotations": annotations, "resourceVersion": "1"},
		"spec":   map[string]any{"replicas": replicas},
		"status": map[string]any{"phase": phase},
	}}
}

func TestCompileCELErrors(t *testing.T) {
	cases := []struct{ name, expr, want string }{
		{"syntax error with position", "object.spec.replicas >", "1:23"},
		{"not a bool", `eventType + "x"`, "must return a bool"},
		{"unknown variable", "obj.spec.replicas > 1", "undeclared reference to 'obj'"},
		{"type error", "eventType > 1", "no matching overload"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CompileCEL(tc.expr)
			if err == nil || !errors.Is(err, ErrInvalidFilter) {
				t.Fatalf("want an ErrInvalidFilter, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "spec.filter") {
				t.Errorf("error %q should name spec.filter and contain %q", err, tc.want)
			}
		})
	}
}

func TestCELFilters(t *testing.T) {
	base := deployment(2, map[string]any{"app": "web"}, map[string]any{}, "Ready")
	scaled := deployment(3, map[string]any{"app": "web"}, map[string]any{}, "Ready")
	labelled := deployment(2, map[string]any{"app": "web", "tier": "frontend"}, map[string]any{}, "Ready")
	annotated := deployment(2, map[string]any{"app": "web"}, map[string]any{"example.com/deploy": "now"}, "Ready")
	cases := []struct {
		name     string
		expr     string
		t        event.Type
		obj, old *unstructured.Unstructured
		want     bool
		evalErr  bool
	}{
		{"replicas changed", `eventType == "Updated" && object.spec.replicas != oldObject.spec.replicas`, event.Updated, scaled, base, true, false},
		{"replicas same", `eventType == "Updated" && object.spec.replicas != oldObject.spec.replicas`, event.Updated, labelled, base, false, false},
		{"label added", `has(object.metadata.labels.tier) && !has(oldObject.metadata.labels.tier)`, event.Updated, labelled, base, true, false},
		{"annotation set", `object.metadata.annotations[?"example.com/deploy"].orValue("") == "now"`, event.Updated, annotated, base, true, false},
		{"annotation absent", `object.metadata.annotations[?"example.com/deploy"].orValue("") == "now"`, event.Updated, base, base, false, false},
		{"oldObject is null for Added", `oldObject == null`, event.Added, base, nil, true, false},
		{"guarded access to oldObject", `oldObject != null && oldObject.spec.replicas < object.spec.replicas`, event.Added, base, nil, false, false},
		{"kubernetes library", `object.metadata.name.matches("^w.b$") && quantity("1Gi").isGreaterThan(quantity("1Mi"))`, event.Added, base, nil, true, false},
		{"missing field is an error, not a match", `object.spec.template.spec.hostNetwork`, event.Added, base, nil, false, true},
		{"a dyn that is not a bool is an error", `object.spec.replicas`, event.Added, base, nil, false, true},
		{"replicas in changes", `"spec.replicas" in changes`, event.Updated, scaled, base, true, false},
		{"replicas not in changes", `"spec.replicas" in changes`, event.Updated, labelled, base, false, false},
		{"any spec change", `changes.exists(p, p.startsWith("spec."))`, event.Updated, scaled, base, true, false},
		{"only metadata changed", `changes.all(p, p.startsWith("metadata."))`, event.Updated, annotated, base, true, false},
		{"changes is empty for Added", `changes.size() == 0`, event.Added, base, nil, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var evalErr error
			f, err := New(Options{CEL: tc.expr, OnEvalError: func(err error) { evalErr = err }})
			if err != nil {
				t.Fatal(err)
			}
			got := f.Match(&event.Event{Type: tc.t, Object: tc.obj, OldObject: tc.old}, Labels(tc.obj))
			if got != tc.want {
				t.Errorf("Match = %v, want %v (eval error: %v)", got, tc.want, evalErr)
			}
			if (evalErr != nil) != tc.evalErr {
				t.Errorf("eval error = %v, want error: %v", evalErr, tc.evalErr)
			}
		})
	}
}

func TestNeedsOldObject(t *testing.T) {
	cases := []struct {
		opts Options
		want bool
	}{
		{Options{}, false},
		{Options{CEL: `object.spec.replicas > 1`}, false},
		{Options{CEL: `object.spec.replicas != oldObject.spec.replicas`}, true},
		{Options{CEL: `"spec.replicas" in changes`}, true},
		{Options{IgnoreStatusOnly: true}, true},
		{Options{IgnoreMetadataOnly: true}, true},
	}
	for _, tc := range cases {
		f, err := New(tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.NeedsOldObject(); got != tc.want {
			t.Errorf("%+v: NeedsOldObject = %v, want %v", tc.opts, got, tc.want)
		}
	}
}

func TestIgnoreSwitches(t *testing.T) {
	base := deployment(2, map[string]any{"app": "web"}, nil, "Ready")
	statusOnly := deployment(2, map[string]any{"app": "web"}, nil, "Progressing")
	metadataOnly := deployment(2, map[string]any{"app": "web", "new": "label"}, nil, "Ready")
	specChange := deployment(5, map[string]any{"app": "web"}, nil, "Ready")
	cases := []struct {
		name             string
		statusIg, metaIg bool
		updated          *unstructured.Unstructured
		want             bool
	}{
		{"statusOnly drops a status change", true, false, statusOnly, false},
		{"statusOnly keeps a label change", true, false, metadataOnly, true},
		{"statusOnly keeps a spec change", true, false, specChange, true},
		{"metadataOnly drops a label change", false, true, metadataOnly, false},
		{"metadataOnly keeps a status change", false, true, statusOnly, true},
		{"both keep a spec change", true, true, specChange, true},
		{"off keeps everything", false, false, statusOnly, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := New(Options{IgnoreStatusOnly: tc.statusIg, IgnoreMetadataOnly: tc.metaIg})
			if err != nil {
				t.Fatal(err)
			}
			updated := tc.updated.DeepCopy()
			updated.SetResourceVersion("2") // every write bumps it: never a difference that counts
			ev := &event.Event{Type: event.Updated, Object: updated, OldObject: base}
			if got := f.Match(ev, Labels(updated)); got != tc.want {
				t.Errorf("Match = %v, want %v", got, tc.want)
			}
		})
	}
	// Without the old object nothing can be compared: the update is delivered.
	f, _ := New(Options{IgnoreStatusOnly: true})
	if !f.Match(&event.Event{Type: event.Updated, Object: statusOnly}, nil) {
		t.Error("an update without its old object must not be dropped")
	}
}

func BenchmarkCELFilter(b *testing.B) {
	f, err := New(Options{CEL: `eventType == "Updated" && object.spec.replicas != oldObject.spec.replicas`})
	if err != nil {
		b.Fatal(err)
	}
	ev := &event.Event{Type: event.Updated,
		Object:    deployment(3, map[string]any{"app": "web"}, nil, "Ready"),
		OldObject: deployment(2, map[string]any{"app": "web"}, nil, "Ready")}
	labels := Labels(ev.Object)
	b.ReportAllocs()
	for b.Loop() {
		if !f.Match(ev, labels) {
			b.Fatal("expected a match")
		}
	}
}

// costly is a filter whose cost grows with the square of the ConfigMap's keys.
const costly = `object.data.all(k, object.data.all(j, k.size() + j.size() >= 0))`

func objectWithKeys(n int) *unstructured.Unstructured {
	data := map[string]any{}
	for i := range n {
		data[fmt.Sprintf("key-%04d", i)] = "v"
	}
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "big"}, "data": data}}
}

func TestAFilterOverItsBudgetStopsEarly(t *testing.T) {
	expr, err := CompileCEL(costly)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := expr.Eval(event.Added, objectWithKeys(10), nil, nil); err != nil || !ok {
		t.Fatalf("a small object: %v, %v", ok, err)
	}
	_, err = expr.Eval(event.Added, objectWithKeys(1000), nil, nil)
	if !IsOverBudget(err) {
		t.Fatalf("a million-step evaluation: err = %v, want over budget", err)
	}
}

// BenchmarkFilterAtTheBudget measures what an evaluation stopped at EvalCostBudget costs in
// time: the most one change's filter can delay its subscription.
func BenchmarkFilterAtTheBudget(b *testing.B) {
	expr, err := CompileCEL(costly)
	if err != nil {
		b.Fatal(err)
	}
	obj := objectWithKeys(1000)
	for b.Loop() {
		if _, err := expr.Eval(event.Added, obj, nil, nil); !IsOverBudget(err) {
			b.Fatalf("err = %v, want over budget", err)
		}
	}
}
