package sink

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

const benchSource = "/apis/notify.example/v1/namespaces/team-a/watchsubscriptions/bench"

// benchMessage is one change of a ConfigMap of about 1 KiB, its data encoded already (as
// the first of its subscribers leaves it), so the figures are the cost per delivery.
func benchMessage(b *testing.B) Message {
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{
			"name": "settings", "namespace": "team-a", "uid": "6f0e8a43-1a2b-4c5d-9e8f-0123456789ab",
			"resourceVersion": "1042", "labels": map[string]any{"app": "web"},
		},
		"data": map[string]any{"payload": strings.Repeat("x", 1024)},
	}}
	ev := event.New(event.Updated, schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, obj)
	data, err := ev.Data()
	if err != nil {
		b.Fatal(err)
	}
	return Message{Event: ev, Source: benchSource, Data: data}
}

// BenchmarkBinaryRequest writes a delivery into an HTTP request in binary mode: everything
// Send does before the network.
func BenchmarkBinaryRequest(b *testing.B) {
	msg := benchMessage(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://127.0.0.1/events", nil)
		if err != nil {
			b.Fatal(err)
		}
		setBinaryHeaders(req.Header, msg)
		if _, err := messageData(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStructuredBody is the structured mode's extra cost: the whole CloudEvent as JSON.
func BenchmarkStructuredBody(b *testing.B) {
	msg := benchMessage(b)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := structuredBody(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBatchBody50 encodes 50 queued deliveries as one batched-mode body.
func BenchmarkBatchBody50(b *testing.B) {
	msgs := make([]Message, 50)
	for i := range msgs {
		msgs[i] = benchMessage(b)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := batchBody(msgs); err != nil {
			b.Fatal(err)
		}
	}
}

// drainingSink is a loopback sink that drains the body and answers 204, and a webhook on
// the operator's pooled client posting to it in batches of batch (0: binary mode).
func drainingSink(b *testing.B, batch int) *Webhook {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(srv.Close)
	client, err := NewClients(ClientOptions{}).For(TLSMaterial{})
	if err != nil {
		b.Fatal(err)
	}
	return &Webhook{URL: srv.URL, Client: client, Batch: batch}
}

// timeSends times send, called b.N times after the setup.
func timeSends(b *testing.B, send func(context.Context) error) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := send(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWebhookSend is one delivery over a kept-alive loopback connection to a sink that
// drains the body and answers 204; the server's own cost is in the figures too.
func BenchmarkWebhookSend(b *testing.B) {
	wh := drainingSink(b, 0)
	msg := benchMessage(b)
	timeSends(b, func(ctx context.Context) error { return wh.Send(ctx, msg) })
}

// BenchmarkWebhookSendBatch50 is 50 deliveries in one batched request, server included:
// compare ns/op with 50 × WebhookSend.
func BenchmarkWebhookSendBatch50(b *testing.B) {
	wh := drainingSink(b, 50)
	msgs := make([]Message, 50)
	for i := range msgs {
		msgs[i] = benchMessage(b)
	}
	timeSends(b, func(ctx context.Context) error { return wh.SendBatch(ctx, msgs) })
}
