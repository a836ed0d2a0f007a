package subscription

import (
	"context"
	"io"
	"slices"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

func TestReservedHeaders(t *testing.T) {
	for name, want := range map[string]bool{
		"Authorization": false, "X-Api-Key": false, "ce-id": true, "Ce-Type": true,
		"content-type": true, "Content-Length": true, "host": true,
		"webhook-id": true, "Webhook-Timestamp": true, "WEBHOOK-SIGNATURE": true, "Webhook-Other": false,
	} {
		if got := ReservedHeader(name); got != want {
			t.Errorf("ReservedHeader(%q) = %v, want %v", name, got, want)
		}
	}
}

// recordingReader serves every Secret Build may ask for, with what each reference needs,
// and records the names read.
type recordingReader struct {
	read []string
}

func (r *recordingReader) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	r.read = append(r.read, key.Namespace+"/"+key.Name)
	sec := obj.(*corev1.Secret)
	*sec = corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
		Data: map[string][]byte{"url": []byte("https://example.com/hook"), "key": []byte("signing-key"),
			"X-Token": []byte("t"), "username": []byte("u"), "password": []byte("p")}}
	return nil
}

func (r *recordingReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return nil
}

// TestReferencesAreWhatBuildReads: kubectl-notifier checks References for the
// subscription's ServiceAccount; they must be the Secrets the operator reads.
func TestReferencesAreWhatBuildReads(t *testing.T) {
	opts := notifyv1.HTTPOptions{
		ContentMode:      notifyv1.ContentModeStructured,
		HeadersFrom:      &notifyv1.HeadersFrom{SecretRef: notifyv1.LocalSecretReference{Name: "headers"}},
		SigningSecretRef: &notifyv1.SigningKeyReference{Name: "signing"},
	}
	sa := types.NamespacedName{Namespace: "shop", Name: "default"}
	src := SecretSource{Namespace: "shop", Account: &sa}
	for name, s := range map[string]notifyv1.Sink{
		"webhook with a URL from a Secret": {Webhook: &notifyv1.WebhookSink{
			URLFrom:     &notifyv1.URLSource{SecretKeyRef: notifyv1.SecretKeySelector{Name: "url", Key: "url"}},
			HTTPOptions: opts}},
		"service of another namespace": {Service: &notifyv1.ServiceSink{Name: "rcv", Namespace: "other", HTTPOptions: opts}},
		"log":                          {Log: &notifyv1.LogSink{}},
		"kafka with a SASL user": {Kafka: notifyv1.KafkaSink{Brokers: []notifyv1.BrokerAddress{"127.0.0.1:9092"},
			Topic: "changes", SASL: notifyv1.KafkaSASL{Mechanism: notifyv1.KafkaSASLPlain,
				SecretRef: notifyv1.LocalSecretReference{Name: "kafka-user"}}}},
		"nats with credentials": {NATS: notifyv1.NATSSink{Servers: []notifyv1.NATSServerURL{"nats://127.0.0.1:4222"},
			Credentials: notifyv1.NATSCredentials{SecretRef: notifyv1.LocalSecretReference{Name: "nats-user"}}}},
	} {
		t.Run(name, func(t *testing.T) {
			reader := &recordingReader{}
			b := &Sinks{Secrets: reader, Clients: sink.NewClients(sink.ClientOptions{}),
				Brokers: sink.NewBrokers(sink.ClientOptions{}), Log: logr.Discard()}
			built, err := b.Build(context.Background(), s, src, "spec.sink", io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, ref := range References(s, src, "spec.sink") {
				if ref.GVR.Resource == "secrets" {
					want = append(want, ref.Namespace+"/"+ref.Name)
				}
			}
			if !slices.Equal(reader.read, want) {
				t.Errorf("Build read %q, References name %q", reader.read, want)
			}
			if !built.Set() {
				t.Fatal("Build prepared no sink")
			}
			if wh, ok := built.ready.(*sink.Webhook); ok && wh.Mode() != WireMode(s) {
				t.Errorf("the built webhook sends %s, WireMode says %s", wh.Mode(), WireMode(s))
			}
		})
	}
}

func TestWireMode(t *testing.T) {
	for want, s := range map[sink.Mode]notifyv1.Sink{
		sink.ModeBinary: {Webhook: &notifyv1.WebhookSink{URL: "http://x"}},
		sink.ModeStructured: {Webhook: &notifyv1.WebhookSink{URL: "http://x", HTTPOptions: notifyv1.HTTPOptions{
			SigningSecretRef: &notifyv1.SigningKeyReference{Name: "k"}}}},
		sink.ModeBatched: {Service: &notifyv1.ServiceSink{Name: "x", HTTPOptions: notifyv1.HTTPOptions{
			ContentMode: notifyv1.ContentModeBatched, SigningSecretRef: &notifyv1.SigningKeyReference{Name: "k"}}}},
		"": {Log: &notifyv1.LogSink{}},
	} {
		if got := WireMode(s); got != want {
			t.Errorf("WireMode(%+v) = %q, want %q", s, got, want)
		}
	}
}
