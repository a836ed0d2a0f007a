package subscription

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/delivery"
	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

// capture is a sink that hands over the messages it is sent.
type capture chan sink.Message

func (c capture) Send(_ context.Context, msg sink.Message) error {
	c <- msg
	return nil
}

// TestMessageIsWhatDeliverySends: kubectl-notifier shows Plan.Message encoded by
// sink.Encode; a delivery pipeline set up as the controller sets it up from the same plan
// must hand its sink a message that encodes to the same bytes, in every mode.
func TestMessageIsWhatDeliverySends(t *testing.T) {
	secret := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Secret",
		"metadata": map[string]any{"name": "db", "namespace": "home", "uid": "u-1", "resourceVersion": "7",
			"labels": map[string]any{"app": "shop"}},
		"data": map[string]any{"password": "c2VjcmV0"},
	}}
	payloads := map[string]*notifyv1.PayloadSpec{
		"plain":     nil,
		"metadata":  {Mode: notifyv1.PayloadMetadata},
		"template":  {Template: `{"text": object.metadata.name + " " + eventType, "data": object.data}`},
		"text":      {Template: `object.metadata.name`, ContentType: "text/plain"},
		"reference": {Mode: notifyv1.PayloadReference},
	}
	for name, payload := range payloads {
		for _, resource := range []string{"secrets", "configmaps"} {
			t.Run(name+"/"+resource, func(t *testing.T) {
				p, err := Compile(planned(func(s *notifyv1.WatchSubscriptionSpec) {
					s.Resource.Resource = resource
					s.Payload = payload
				}), Options{})
				if err != nil {
					t.Fatal(err)
				}
				got := make(capture, 1)
				opts := p.PipelineOptions()
				opts.Sink = got
				pipeline := delivery.Start(opts)
				defer pipeline.Stop()
				ev := event.New(event.Added, p.GVR, secret)
				if err := pipeline.Put(context.Background(), ev); err != nil {
					t.Fatal(err)
				}
				var sent sink.Message
				select {
				case sent = <-got:
				case <-time.After(10 * time.Second):
					t.Fatal("the pipeline sent nothing within 10s")
				}
				shown, err := p.Message(ev)
				if err != nil {
					t.Fatal(err)
				}
				for _, mode := range []sink.Mode{sink.ModeBinary, sink.ModeStructured, sink.ModeBatched} {
					wantHeader, want, err := sink.Encode(mode, sent)
					if err != nil {
						t.Fatal(err)
					}
					header, body, err := sink.Encode(mode, shown)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(body, want) || !equalHeaders(header, wantHeader) {
						t.Errorf("%s mode: shown\n%v\n%s\ndelivery sends\n%v\n%s", mode, header, body, wantHeader, want)
					}
				}
				if resource == "secrets" && bytes.Contains(shown.Data, []byte("c2VjcmV0")) {
					t.Errorf("a Secret's value is shown: %s", shown.Data)
				}
			})
		}
	}
}

func equalHeaders(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || len(w) != len(v) || (len(v) > 0 && v[0] != w[0]) {
			return false
		}
	}
	return true
}
