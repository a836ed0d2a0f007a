package sink

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/go-logr/logr/funcr"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

const plantedValue = "aHVudGVyMg=="

func secretMessage() Message {
	obj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Secret",
		"metadata": map[string]any{"namespace": "team-a", "name": "db", "uid": "u1", "resourceVersion": "7"},
		"data":     map[string]any{"password": plantedValue}}}
	return Message{Event: event.New(event.Added, schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, obj),
		Source: testSource}
}

// outputs is what every sink makes of msg: the log line, and the bodies and headers of the
// binary, structured and batched requests.
func outputs(t *testing.T, msg Message) map[string]string {
	t.Helper()
	out := map[string]string{}
	l := &Log{Logger: funcr.NewJSON(func(obj string) { out["log"] = obj }, funcr.Options{})}
	if err := l.Send(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	srv, got := recordingServer(t, http.StatusNoContent, nil)
	for _, mode := range []string{"binary", "structured", "batched"} {
		w := &Webhook{URL: srv.URL, Client: srv.Client(), Structured: mode == "structured"}
		if mode == "batched" {
			w.Batch = 10
		}
		if err := w.Send(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
		r := <-got
		hdr, _ := json.Marshal(r.header)
		out[mode] = string(r.body) + "\n" + string(hdr)
	}
	return out
}

// TestSinksSendTheShapedPayload: the log sink and webhooks send the message's data (the
// subscription's shaped, redacted payload), never the object it was shaped from.
func TestSinksSendTheShapedPayload(t *testing.T) {
	g := NewWithT(t)
	msg := secretMessage()
	msg.Data = []byte(`{"apiVersion":"v1","kind":"Secret","data":{"password":"<redacted>"}}`)
	for name, out := range outputs(t, msg) {
		g.Expect(out).NotTo(ContainSubstring(plantedValue), name)
		g.Expect(out).To(ContainSubstring("redacted"), name)
	}
}

// TestUnshapedMessagesCarryOnlyAReference: a message without data (its payload could not be
// shaped, and it goes to the dead-letter sink) carries a reference to the object, never the
// object, in every sink.
func TestUnshapedMessagesCarryOnlyAReference(t *testing.T) {
	g := NewWithT(t)
	msg := secretMessage()
	for name, out := range outputs(t, msg) {
		g.Expect(out).NotTo(ContainSubstring(plantedValue), name)
		g.Expect(out).NotTo(ContainSubstring("password"), name)
	}
	data, err := messageData(msg)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(data).To(MatchJSON(`{"apiVersion":"v1","kind":"Secret","namespace":"team-a","name":"db","uid":"u1","resourceVersion":"7"}`))
	ce, err := CloudEvent(msg)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(ce.Data())).NotTo(ContainSubstring(plantedValue), "the SDK form the encoders are checked against")

	// A resync's data is no object: it goes as it is.
	rs := event.NewResync(schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, "s", "sub",
		event.ResyncInfo{Reason: "WatchExpired", Checkpoint: "1", ResourceVersion: "2"})
	data, err = messageData(Message{Event: rs})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(data).To(MatchJSON(`{"reason":"WatchExpired","checkpoint":"1","resourceVersion":"2","deletionsMayBeMissing":false}`))
}
