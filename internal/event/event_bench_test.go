package event

import (
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// benchConfigMap is a ConfigMap of about 1 KiB as the informer hands it over: labels, an
// annotation, 1 KiB of data, no managedFields.
func benchConfigMap(i int) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{
			"name": "settings-" + strconv.Itoa(i), "namespace": "team-a", "uid": "6f0e8a43-1a2b-4c5d-9e8f-0123456789ab",
			"resourceVersion": strconv.Itoa(1000 + i), "creationTimestamp": "2026-11-01T10:00:00Z",
			"labels":      map[string]any{"app": "web", "tier": "frontend"},
			"annotations": map[string]any{"team": "a"},
		},
		"data": map[string]any{"payload": strings.Repeat("x", 1024)},
	}}
}

var benchGVR = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

// BenchmarkDataEncode is the one JSON encoding every event pays, whatever its fan-out.
func BenchmarkDataEncode(b *testing.B) {
	objs := make([]*unstructured.Unstructured, 64)
	for i := range objs {
		objs[i] = benchConfigMap(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		ev := New(Added, benchGVR, objs[i%len(objs)])
		data, err := ev.Data()
		if err != nil || len(data) < 1024 {
			b.Fatalf("%d bytes, %v", len(data), err)
		}
	}
}

// BenchmarkPerSubscriber50 is what 50 subscribers of one event read from it on their way to
// a sink (data, id, subject): the encoding is shared, so any allocation beyond the first
// subscriber's is a cost per delivery.
func BenchmarkPerSubscriber50(b *testing.B) {
	const subscribers = 50
	obj := benchConfigMap(0)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		ev := New(Updated, benchGVR, obj)
		for range subscribers {
			if _, err := ev.Data(); err != nil {
				b.Fatal(err)
			}
			if ev.ID() == "" || ev.ObjectPath() == "" {
				b.Fatal("no id or path")
			}
		}
	}
	b.ReportMetric(subscribers, "deliveries/op")
}
