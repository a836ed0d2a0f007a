package sink

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/payload"
)

// FuzzCloudEvent builds CloudEvents from arbitrary objects: any object the API server
// could send becomes a valid CloudEvent (and valid batch JSON) or a clean error, never a
// panic. Then, as a Secret with a value planted in data, stringData and the last-applied
// annotation, it goes through every payload shape (mode x includeOldObject x
// includeChangedPaths x includeSecretData) as a dead letter into every sink output (binary,
// structured and batched requests, the log line, the SDK's form): the planted value is in
// none of them when the shape redacts, nor is the password of the sink URL its
// deliveryerror names; a message whose payload cannot be shaped carries no value either.
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
		if !strings.Contains(raw, planted) {
			checkSecretOutputs(t, obj)
		}
	})
}

// planted is the value FuzzCloudEvent puts in Secrets, and the password of the URL in
// their deliveryerror.
const planted = "PLANTEDv4lue9"

func checkSecretOutputs(t *testing.T, obj map[string]any) {
	secret := func(rv string) *unstructured.Unstructured {
		o := maps.Clone(obj)
		o["apiVersion"], o["kind"] = "v1", "Secret"
		o["data"] = map[string]any{"password": planted}
		o["stringData"] = map[string]any{"token": planted}
		md, _ := o["metadata"].(map[string]any)
		md = maps.Clone(md)
		if md == nil {
			md = map[string]any{}
		}
		md["resourceVersion"] = rv
		md["annotations"] = map[string]any{"kubectl.kubernetes.io/last-applied-configuration": planted}
		o["metadata"] = md
		return &unstructured.Unstructured{Object: o}
	}
	ev := event.New(event.Updated, schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, secret("2"))
	ev.OldObject = secret("1")
	ext := map[string]string{"deliveryerror": "POST https://user:" + planted + "@sink.example/x?token=" + planted + ": EOF"}
	for _, mode := range []payload.Mode{"", payload.Full, payload.Metadata, payload.Reference} {
		for bits := range 8 {
			shape := payload.Shape{Mode: mode, IncludeOldObject: bits&1 != 0, IncludeChangedPaths: bits&2 != 0,
				RedactSecrets: bits&4 == 0} // includeSecretData on a Secret subscription
			msg := Message{Event: ev, Source: "/apis/x", Extensions: ext}
			msg.Data, _ = shape.Data(ev) // nil when it cannot be shaped: sinks send a reference
			out, err := allOutputs(msg)
			if err != nil {
				t.Fatalf("%+v: %v", shape, err)
			}
			if shape.RedactSecrets && strings.Contains(out, planted) {
				t.Fatalf("%+v: the planted value is in the output:\n%s", shape, out)
			}
			if !shape.RedactSecrets && msg.Data != nil && (mode == "" || mode == payload.Full) && !strings.Contains(out, planted) {
				t.Fatalf("%+v: the values opted in to are missing:\n%s", shape, out)
			}
			if strings.Contains(out, "user:"+planted) || strings.Contains(out, "token="+planted) {
				t.Fatalf("%+v: the sink URL's credentials are in the output:\n%s", shape, out)
			}
		}
	}
}

// allOutputs is everything the sinks make of msg, in one text: the binary request's body
// and headers, the structured and batched bodies, the log line and the SDK's CloudEvent.
func allOutputs(msg Message) (string, error) {
	var b strings.Builder
	data, err := messageData(msg)
	if err != nil {
		return "", err
	}
	h := http.Header{}
	setBinaryHeaders(h, msg)
	hj, _ := json.Marshal(h)
	b.Write(data)
	b.Write(hj)
	body, err := structuredBody(msg)
	if err != nil {
		return "", err
	}
	b.Write(body)
	if body, err = batchBody([]Message{msg}); err != nil {
		return "", err
	}
	b.Write(body)
	l := &Log{Logger: funcr.NewJSON(func(line string) { b.WriteString(line) }, funcr.Options{})}
	if err := l.Send(context.Background(), msg); err != nil {
		return "", err
	}
	ce, err := CloudEvent(msg)
	if err != nil {
		return "", err
	}
	cj, err := json.Marshal(ce)
	if err != nil {
		return "", err
	}
	b.Write(cj)
	return b.String(), nil
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
