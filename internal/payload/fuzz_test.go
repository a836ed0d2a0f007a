package payload

import (
	"encoding/json"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// FuzzShapes runs every payload shape on arbitrary old/new object pairs: no panic, valid
// JSON, and a redacted Secret never carries its values.
func FuzzShapes(f *testing.F) {
	f.Add(`{"kind":"Secret","data":{"p":"c2VjcmV0"}}`, `{"kind":"Secret","data":{"p":"b3RoZXI="}}`)
	f.Add(`{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"c2VjcmV0"}}}`, `{}`)
	f.Add(`{"a":{"b":[1,2]}}`, `{"a":{"b":[2,1]},"c":null}`)
	f.Fuzz(func(t *testing.T, oldRaw, newRaw string) {
		oldObj, newObj := map[string]any{}, map[string]any{}
		if json.Unmarshal([]byte(oldRaw), &oldObj) != nil || json.Unmarshal([]byte(newRaw), &newObj) != nil {
			return
		}
		ev := event.New(event.Updated, schema.GroupVersionResource{Version: "v1", Resource: "secrets"},
			&unstructured.Unstructured{Object: newObj})
		ev.OldObject = &unstructured.Unstructured{Object: oldObj}
		for _, mode := range []Mode{Full, Metadata, Reference} {
			shape := Shape{Mode: mode, IncludeOldObject: true, IncludeChangedPaths: true, RedactSecrets: true}
			data, err := shape.Data(ev)
			if err != nil {
				continue
			}
			if !json.Valid(data) {
				t.Fatalf("invalid JSON: %s", data)
			}
			if mode == Full {
				assertRedacted(t, data)
			}
		}
	})
}

// assertRedacted checks the envelope's objects: every data and stringData value, and the
// last-applied annotation, are redacted.
func assertRedacted(t *testing.T, data []byte) {
	var env map[string]any
	if err := json.Unmarshal(data, &env); err != nil {
		t.Fatal(err)
	}
	for _, side := range []string{"object", "oldObject"} {
		obj, _ := env[side].(map[string]any)
		for _, field := range []string{"data", "stringData"} {
			if m, ok := obj[field].(map[string]any); ok {
				for k, v := range m {
					if v != Redacted {
						t.Fatalf("%s.%s.%s leaked: %s", side, field, k, data)
					}
				}
			}
		}
		md, _ := obj["metadata"].(map[string]any)
		ann, _ := md["annotations"].(map[string]any)
		if v, ok := ann[lastApplied]; ok && v != Redacted {
			t.Fatalf("%s last-applied annotation leaked: %s", side, data)
		}
	}
}
