package payload

import (
	"encoding/json"
	"strings"
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

// TestOldObjectAndChangedPathsAreRedacted: the old object is redacted as the object is, and
// changed paths name keys, never values, in every mode.
func TestOldObjectAndChangedPathsAreRedacted(t *testing.T) {
	secret := func(rv, password string) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Secret",
			"metadata": map[string]any{"name": "db", "namespace": "n", "uid": "u", "resourceVersion": rv,
				"annotations": map[string]any{lastApplied: `{"data":{"password":"` + password + `"}}`}},
			"data": map[string]any{"password": password}}}
	}
	ev := event.New(event.Updated, schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, secret("2", "bmV3"))
	ev.OldObject = secret("1", "b2xk")
	for _, mode := range []Mode{Full, Metadata, Reference} {
		data, err := Shape{Mode: mode, IncludeOldObject: true, IncludeChangedPaths: true, RedactSecrets: true}.Data(ev)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), "bmV3") || strings.Contains(string(data), "b2xk") {
			t.Fatalf("%s: a value leaked: %s", mode, data)
		}
		var env struct {
			OldObject    map[string]any `json:"oldObject"`
			ChangedPaths []string       `json:"changedPaths"`
		}
		_ = json.Unmarshal(data, &env)
		if env.OldObject == nil {
			t.Fatalf("%s: no oldObject in %s", mode, data)
		}
		if want := "data.password,metadata.annotations." + lastApplied; strings.Join(env.ChangedPaths, ",") != want {
			t.Fatalf("%s: changedPaths %q, want %q", mode, env.ChangedPaths, want)
		}
	}
}
