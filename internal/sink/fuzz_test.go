package sink

import (
	"encoding/json"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// FuzzCloudEvent builds CloudEvents from arbitrary objects: any object the API server
// could send becomes a valid CloudEvent (and valid batch JSON) or a clean error, never a panic.
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
		data, err := ev.Data()
		if err != nil {
			return
		}
		msg := Message{Event: ev, Source: "/apis/x", Data: data}
		ce, err := CloudEvent(msg)
		if err != nil {
			t.Fatalf("CloudEvent(%s): %v", raw, err)
		}
		if err := ce.Validate(); err != nil && ev.ID() != "::Updated" {
			t.Fatalf("invalid CloudEvent for %s: %v", raw, err)
		}
		body, err := batchBody([]Message{msg})
		if err != nil {
			t.Fatalf("the SDK encodes %s but the batch encoder fails: %v", raw, err)
		}
		if !json.Valid(body) {
			t.Fatalf("batch body for %s is not JSON: %s", raw, body)
		}
	})
}

// FuzzJSONString: the hand-written string encoder reads back as encoding/json reads its own.
func FuzzJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\" back\\slash", "\x00\x1f\n\t\r", "\u2028\u2029", "\xff\xfe ok", "é中😀"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ours := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(ours, &got); err != nil {
			t.Fatalf("%q encodes as invalid JSON %s: %v", s, ours, err)
		}
		theirs, _ := json.Marshal(s)
		var want string
		_ = json.Unmarshal(theirs, &want)
		if got != want {
			t.Fatalf("%q reads back as %q, encoding/json's as %q", s, got, want)
		}
	})
}
