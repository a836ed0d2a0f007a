package payload

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// benchObjects are the two states of a ConfigMap of about 1 KiB that changed one data key.
func benchObjects() (old, updated *unstructured.Unstructured) {
	obj := func(rv, value string) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{
				"name": "settings", "namespace": "team-a", "uid": "6f0e8a43-1a2b-4c5d-9e8f-0123456789ab",
				"resourceVersion": rv, "labels": map[string]any{"app": "web"},
			},
			"data": map[string]any{"payload": strings.Repeat("x", 1024), "color": value},
		}}
	}
	return obj("7", "green"), obj("8", "blue")
}

// benchShape encodes a new event (the objects are shared, never mutated) in shape s per
// iteration: the cost of one event for a subscription with that shape, whose first
// subscriber pays for an encoding the others may share.
func benchShape(b *testing.B, s Shape) {
	old, updated := benchObjects()
	gvr := schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	b.ReportAllocs()
	for range b.N {
		ev := event.New(event.Updated, gvr, updated)
		ev.OldObject = old
		if _, err := s.Data(ev); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkShapeFull(b *testing.B)      { benchShape(b, Shape{Mode: Full}) }
func BenchmarkShapeMetadata(b *testing.B)  { benchShape(b, Shape{Mode: Metadata}) }
func BenchmarkShapeReference(b *testing.B) { benchShape(b, Shape{Mode: Reference}) }
func BenchmarkShapeRedacted(b *testing.B)  { benchShape(b, Shape{Mode: Full, RedactSecrets: true}) }
func BenchmarkShapeOldAndChanged(b *testing.B) {
	benchShape(b, Shape{Mode: Full, IncludeOldObject: true, IncludeChangedPaths: true})
}
