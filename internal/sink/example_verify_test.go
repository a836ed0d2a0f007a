package sink_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

// A receiver of signed deliveries checks each request with a Standard Webhooks library
// before it acts on it. The secret is the value of the key signingSecretRef names.
func Example_verifySignature() {
	const secret = "whsec_c2lnbmluZy1rZXktb2YtdGVhbS1hLTIwMjYtMDE="
	verifier, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		panic(err)
	}
	// (A Secret holding a raw key, without whsec_, needs standardwebhooks.NewWebhookRaw.)

	receiver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 8<<20))
		if err != nil {
			http.Error(w, "unreadable body", http.StatusBadRequest)
			return
		}
		// Checks webhook-signature over webhook-id, webhook-timestamp and the body, and
		// refuses a timestamp more than 5 minutes away (a replay).
		if err := verifier.Verify(body, r.Header); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		// Signed requests are structured CloudEvents (a JSON array when batched): read type,
		// subject and data from the verified body, never from headers.
		var ev struct {
			ID      string `json:"id"`
			Type    string `json:"type"`
			Subject string `json:"subject"`
		}
		if err := json.Unmarshal(body, &ev); err != nil {
			http.Error(w, "not a structured CloudEvent", http.StatusBadRequest)
			return
		}
		// Delivery is at least once: drop an id already handled.
		fmt.Println("verified", ev.Type, ev.Subject)
		w.WriteHeader(http.StatusNoContent)
	})
	srv := httptest.NewServer(receiver)
	defer srv.Close()

	// What the operator does for a subscription with signingSecretRef.
	key, err := sink.ParseSigningKey([]byte(secret))
	if err != nil {
		panic(err)
	}
	webhook := &sink.Webhook{URL: srv.URL, Client: srv.Client(), SigningKey: key}
	obj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "settings", "namespace": "team-a", "uid": "u1", "resourceVersion": "7"}}}
	change := event.New(event.Updated, schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, obj)
	data, err := change.Data()
	if err != nil {
		panic(err)
	}
	err = webhook.Send(context.Background(), sink.Message{Event: change, Data: data,
		Source: "/apis/notify.dynamicnotifier.io/v1alpha1/namespaces/team-a/watchsubscriptions/cms"})
	fmt.Println("delivered:", err == nil)
	// Output:
	// verified io.dynamicnotifier.resource.updated /api/v1/namespaces/team-a/configmaps/settings
	// delivered: true
}
