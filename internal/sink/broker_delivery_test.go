package sink_test

// The broker sinks under a delivery pipeline, as the controller runs them: lanes, batches
// formed from a backlog, retries, and a batch the broker finds too large split in two.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/dynamic-notifier/dynamic-notifier/internal/delivery"
	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

// outcomes hears what a pipeline does.
type outcomes struct {
	mu       sync.Mutex
	batches  []int // events per delivered request
	failed   []string
	finished int
}

func (o *outcomes) Observed() {}
func (o *outcomes) Attempted(n int, _ time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err == nil {
		o.batches = append(o.batches, n)
	}
}
func (o *outcomes) Failed(reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failed = append(o.failed, reason)
}
func (o *outcomes) DeadLettered()  {}
func (o *outcomes) Dropped(bool)   {}
func (o *outcomes) Coalesced()     {}
func (o *outcomes) QueueDepth(int) {}
func (o *outcomes) Done(*event.Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.finished++
}

func TestKafkaSinkUnderADeliveryPipeline(t *testing.T) {
	g := NewWithT(t)
	// kfake: an in-process Kafka-protocol server (see kafka_test.go).
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(4, "other"))
	g.Expect(err).NotTo(HaveOccurred())
	defer c.Close()
	g.Expect(c.CreateTopic("events", 4, map[string]string{"max.message.bytes": "65536"})).To(Succeed())
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: c.ListenAddrs(), Topic: "events", BatchSize: 20})
	g.Expect(err).NotTo(HaveOccurred())
	defer func() { _ = k.Close() }()

	gvr := schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	object := func(name string, rv int, data string) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": name, "namespace": "ns", "uid": "uid-" + name, "resourceVersion": fmt.Sprint(rv)},
			"data":     map[string]any{"v": data},
		}}
	}
	obs := &outcomes{}
	p := delivery.Start(delivery.Options{Sink: k, Source: "/src", Parallelism: 4, QueueSize: 5000, Held: true,
		Observer: obs, Retry: delivery.Retry{MaxAttempts: 3, Backoff: 10 * time.Millisecond}})
	defer p.Stop()

	// A backlog, so that batches form; one event over the topic's max.message.bytes.
	const objects, revisions = 25, 20
	for rv := 1; rv <= revisions; rv++ {
		for o := range objects {
			g.Expect(p.Offer(event.New(event.Updated, gvr, object(fmt.Sprintf("cm-%d", o), rv, "x")))).To(BeTrue())
		}
		if rv == revisions/2 {
			pad := make([]byte, 48<<10)
			_, _ = rand.Read(pad)
			g.Expect(p.Offer(event.New(event.Updated, gvr, object("big", 1, hex.EncodeToString(pad))))).To(BeTrue())
		}
	}
	p.TakeOver(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g.Expect(p.Drain(ctx)).To(BeTrue())

	obs.mu.Lock()
	g.Expect(obs.failed).To(Equal([]string{sink.ReasonInvalid}), "only the big event fails, alone")
	g.Expect(obs.finished).To(Equal(objects*revisions + 1))
	g.Expect(slices.Max(obs.batches)).To(BeNumerically(">", 1), "batches formed")
	obs.mu.Unlock()

	// Read everything back. A batch retried after a split resends what it had written:
	// a consumer dropping ids it has seen gets every event once, in order per object.
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("events"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	g.Expect(err).NotTo(HaveOccurred())
	defer cl.Close()
	seen := map[string]bool{}
	next := map[string]int{}
	for len(seen) < objects*revisions && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			var id string
			for _, h := range r.Headers {
				if h.Key == "ce_id" {
					id = string(h.Value)
				}
			}
			if seen[id] {
				return
			}
			seen[id] = true
			parts := strings.Split(id, ":") // uid:resourceVersion:type
			g.Expect(parts).To(HaveLen(3), id)
			rv, err := strconv.Atoi(parts[1])
			g.Expect(err).NotTo(HaveOccurred(), id)
			g.Expect(rv).To(Equal(next[string(r.Key)]+1), "%s: %s", r.Key, id)
			next[string(r.Key)] = rv
		})
	}
	g.Expect(seen).To(HaveLen(objects * revisions))
	g.Expect(next).NotTo(HaveKey("ns/big"))
}
