package watch

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/filter"
)

// countingReceiver stands in for a delivery pipeline: it only counts what it is offered.
type countingReceiver struct{ n *atomic.Int64 }

func (r countingReceiver) Offer(*event.Event) bool { r.n.Add(1); return true }

func (r countingReceiver) Put(context.Context, *event.Event) error { r.n.Add(1); return nil }

// benchFanOut drives the informer's store methods directly, without a reflector or an API
// server: the informer is never started (the registry's client is nil), and subscribers
// join without initial events, so nothing lists.
func benchFanOut(b *testing.B, subscribers int) {
	reg := New(nil, logr.Discard(), nil)
	defer reg.Stop()
	inf := newInformer(reg, Key{GVR: schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, Namespace: "team-a"})

	var offered atomic.Int64
	matching := 0
	for i := range subscribers {
		// Half the subscribers select the object's labels and half do not, so the fan-out
		// pays for both outcomes of a filter.
		app := "web"
		if i%2 == 1 {
			app = "db"
		} else {
			matching++
		}
		f, err := filter.Compile(nil, &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}, "")
		if err != nil {
			b.Fatal(err)
		}
		inf.add(Subscriber{ID: "sub-" + strconv.Itoa(i), Filter: f, Receiver: countingReceiver{&offered}}, nil)
	}

	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{
			"name": "settings", "namespace": "team-a", "uid": "u1", "resourceVersion": "1",
			"labels": map[string]any{"app": "web", "tier": "frontend"},
		},
		"data": map[string]any{"color": "blue"},
	}}
	meta := obj.Object["metadata"].(map[string]any)
	data := obj.Object["data"].(map[string]any)
	// Every iteration needs a new resourceVersion and content, or the store drops it as a
	// repeat or as a change nobody can see; boxing them up front keeps their cost out of
	// the figures.
	rvs := make([]any, b.N)
	for i := range rvs {
		rvs[i] = strconv.Itoa(i + 2)
	}
	if err := inf.Add(obj); err != nil {
		b.Fatal(err)
	}
	offered.Store(0)

	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		meta["resourceVersion"] = rvs[i]
		data["color"] = rvs[i]
		if err := inf.Update(obj); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()

	// Not a speed check: a fan-out that skipped or repeated events would make the figures meaningless.
	if got, want := offered.Load(), int64(b.N*matching); got != want {
		b.Fatalf("offered %d events, want %d", got, want)
	}
	b.ReportMetric(float64(matching), "offers/op")
}

func BenchmarkFanOut100Subscribers(b *testing.B) { benchFanOut(b, 100) }

func BenchmarkFanOut1Subscriber(b *testing.B) { benchFanOut(b, 1) }
