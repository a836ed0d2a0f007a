package delivery

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"math"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/payload"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

// TestDeadLettersCarryTheShapedPayload: a dead letter carries what the main sink was sent,
// Secret values redacted, and an event whose payload cannot be shaped is dead-lettered
// without the object it could not shape (not the raw object with the values the shape
// leaves out).
func TestDeadLettersCarryTheShapedPayload(t *testing.T) {
	value := base64.StdEncoding.EncodeToString([]byte("hunter2"))
	secret := func(rv string, data map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Secret",
			"metadata": map[string]any{"namespace": "team-a", "name": "db", "uid": "u1", "resourceVersion": rv},
			"data":     data}}
	}
	shape := payload.Shape{IncludeOldObject: true, RedactSecrets: true}
	for _, tc := range []struct {
		name        string
		unencodable bool
	}{
		{"the sink refuses it", false},
		// JSON has no NaN: the old object cannot be encoded, the new one could.
		{"its payload cannot be shaped", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newG(t)
			var mu sync.Mutex
			var lines []string
			letters := &sink.Log{Logger: funcr.NewJSON(func(obj string) {
				mu.Lock()
				lines = append(lines, obj)
				mu.Unlock()
			}, funcr.Options{})}
			refuses := &fakeSink{send: func(context.Context, sink.Message, int) error {
				return &sink.HTTPError{Method: "POST", URL: "http://sink", StatusCode: 400, Status: "400 Bad Request"}
			}}
			stats := NewStats(Snapshot{})
			p := Start(Options{Sink: refuses, DeadLetter: letters, Shape: shape.Body, Retry: fastRetry, Observer: &watching{stats: stats}})
			defer p.Stop()
			ev := event.New(event.Updated, schema.GroupVersionResource{Version: "v1", Resource: "secrets"},
				secret("2", map[string]any{"password": value}))
			ev.OldObject = secret("1", map[string]any{"password": "b2xk"})
			if tc.unencodable {
				ev.OldObject.Object["ratio"] = math.NaN()
			}

			g.Expect(p.Offer(ev)).To(BeTrue())
			g.Eventually(func() int64 { return stats.Snapshot().DeadLettered }).Should(BeEquivalentTo(1))
			mu.Lock()
			defer mu.Unlock()
			g.Expect(lines).To(HaveLen(1))
			g.Expect(lines[0]).NotTo(ContainSubstring(value))
			g.Expect(lines[0]).NotTo(ContainSubstring("b2xk"))
			var line struct {
				Data       string
				Extensions map[string]string
			}
			g.Expect(json.Unmarshal([]byte(lines[0]), &line)).To(Succeed())
			g.Expect(line.Extensions).To(HaveKey("deliveryerror"))
			if !tc.unencodable {
				want, err := shape.Data(ev)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(line.Data).To(MatchJSON(want), "what the main sink was sent")
				return
			}
			g.Expect(line.Extensions["deliveryerror"]).To(ContainSubstring("NaN"))
			g.Expect(line.Data).To(MatchJSON(`{"apiVersion":"v1","kind":"Secret","namespace":"team-a","name":"db",
				"uid":"u1","resourceVersion":"2"}`), "a reference to the object, nothing of it")
		})
	}
}
