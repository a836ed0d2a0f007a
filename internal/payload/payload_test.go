package payload

import (
	"encoding/json"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

func cm(data map[string]any, labels map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "c", "namespace": "n", "uid": "u", "resourceVersion": "7", "labels": labels},
		"data":     data,
	}}
}

func TestChangedPaths(t *testing.T) {
	old := cm(map[string]any{"a": "1", "b": "2"}, map[string]any{"x": "1"})
	updated := cm(map[string]any{"a": "1", "b": "3", "c": "4"}, map[string]any{})
	updated.SetResourceVersion("8")
	got := ChangedPaths(old.Object, updated.Object)
	want := []string{"data.b", "data.c", "metadata.labels.x"}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

func TestShapes(t *testing.T) {
	gvr := schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	ev := event.New(event.Updated, gvr, cm(map[string]any{"a": "2"}, nil))
	ev.OldObject = cm(map[string]any{"a": "1"}, nil)
	cases := []struct {
		name  string
		shape Shape
		want  string
	}{
		{"reference", Shape{Mode: Reference},
			`{"apiVersion":"v1","kind":"ConfigMap","name":"c","namespace":"n","resourceVersion":"7","uid":"u"}`},
		{"metadata", Shape{Mode: Metadata},
			`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"labels":null,"name":"c","namespace":"n","resourceVersion":"7","uid":"u"}}`},
		{"changed paths only", Shape{Mode: Reference, IncludeChangedPaths: true},
			`{"object":{"apiVersion":"v1","kind":"ConfigMap","name":"c","namespace":"n","resourceVersion":"7","uid":"u"},"changedPaths":["data.a"]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data, err := tc.shape.Data(ev)
			if err != nil {
				t.Fatal(err)
			}
			var got, want any
			_ = json.Unmarshal(data, &got)
			_ = json.Unmarshal([]byte(tc.want), &want)
			if gj, _ := json.Marshal(got); string(gj) != mustJSON(want) {
				t.Errorf("got %s, want %s", data, tc.want)
			}
		})
	}
	plain, _ := Shape{}.Data(ev)
	shared, _ := ev.Data()
	if &plain[0] != &shared[0] {
		t.Error("a plain shape must reuse the shared encoding")
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
