package sink

import (
	"encoding/json"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// FuzzCloudEvent builds CloudEvents from arbitrary objects: any object the API server
// could send becomes a valid CloudEvent or a clean error, never a panic.
func FuzzCloudEvent(f *testing.F) {
	f.Add(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"b","uid":"u","resourceVersion":"1"}}`)
	f.Add(`{"metadata":{"name":"","namespace":null,"labels":{"a":1}},"data":[1,2,{"x":null}]}`)
	f.Add(`{"metadata":"not a map"}`)
	f.Fuzz(func(t *testing.T, raw string) {
		obj := map[string]any{}
		if json.Unmarshal([]byte(raw), &obj) != nil {
			return
		}
		ev := event.New(event.Updated, schema.GroupVersionResource{Version: "v1", Resource: "things"},
			&unstructured.Unstructured{Object: obj})
		ce, err := CloudEvent(Message{Event: ev, Source: "/apis/x"})
		if err != nil {
			return
		}
		if err := ce.Validate(); err != nil && ev.ID() != "::Updated" {
			t.Fatalf("invalid CloudEvent for %s: %v", raw, err)
		}
	})
}
