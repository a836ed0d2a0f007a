package delivery

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

// versions builds the successive states of one ConfigMap, so each change can carry the
// state before it.
type versions struct {
	name, uid string
	last      *unstructured.Unstructured
}

func (v *versions) state(rv int, data map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"namespace": "team-a", "name": v.name, "uid": v.uid, "resourceVersion": strconv.Itoa(rv)},
		"data":     data,
	}}
}

// change is the next change of the object, at resourceVersion rv, as the informer makes
// it: its place in the stream and the state before it.
func (v *versions) change(t event.Type, rv int, data map[string]any) *event.Event {
	obj := v.state(rv, data)
	ev := event.New(t, configMaps, obj)
	ev.Stream, ev.StreamRV = "s", uint64(rv)
	if t == event.Updated {
		ev.OldObject = v.last
	}
	v.last = obj
	return ev
}

// doneAt records the stream positions of the events a pipeline finished with.
type doneAt struct {
	watching
	mu  sync.Mutex
	rvs []uint64
}

func (d *doneAt) Done(ev *event.Event) {
	d.mu.Lock()
	d.rvs = append(d.rvs, ev.StreamRV)
	d.mu.Unlock()
}

func (d *doneAt) get() []uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.rvs)
}

func rvs(msgs []sink.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.Event.ObjectKey() + "@" + m.Event.ResourceVersion() + ":" + string(m.Event.Type)
	}
	return out
}

func TestCoalesceMergesABurstIntoTheLatestState(t *testing.T) {
	g := newG(t)
	s := &fakeSink{}
	stats := NewStats(Snapshot{})
	seen := &doneAt{watching: watching{stats: stats}}
	p := Start(Options{Sink: s, CoalesceWindow: 200 * time.Millisecond, Observer: seen})
	defer p.Stop()

	a := &versions{name: "a", uid: "ua"}
	g.Expect(p.Offer(a.change(event.Added, 10, map[string]any{"n": "0"}))).To(BeTrue())
	for i := 1; i <= 9; i++ {
		data := map[string]any{"n": strconv.Itoa(i)}
		if i == 5 {
			data["color"] = "blue"
		}
		g.Expect(p.Offer(a.change(event.Updated, 10+i, data))).To(BeTrue())
	}
	g.Expect(seen.get()).To(ConsistOf(uint64(11), uint64(12), uint64(13), uint64(14), uint64(15), uint64(16),
		uint64(17), uint64(18), uint64(19)), "each merged change is finished with at once")

	g.Eventually(s.accepted).Should(HaveLen(1))
	msg := s.accepted()[0]
	g.Expect(msg.Event.Type).To(Equal(event.Added), "an addition followed by updates is one addition")
	g.Expect(msg.Event.ResourceVersion()).To(Equal("19"), "with the latest state")
	g.Expect(msg.Extensions).To(HaveKeyWithValue(CoalescedExtension, "10"))
	g.Eventually(seen.get).Should(ContainElement(uint64(10)),
		"the merged event holds the first change's place: until it is finished a checkpoint covers none of them")
	g.Expect(stats.Snapshot().Coalesced).To(Equal(int64(9)))

	// Updates only: the state before the first, the union of what changed.
	g.Expect(p.Offer(a.change(event.Updated, 30, map[string]any{"n": "9", "color": "red"}))).To(BeTrue())
	g.Expect(p.Offer(a.change(event.Updated, 31, map[string]any{"n": "10", "color": "red"}))).To(BeTrue())
	g.Eventually(s.accepted).Should(HaveLen(2))
	second := s.accepted()[1].Event
	g.Expect(second.Type).To(Equal(event.Updated))
	g.Expect(second.OldObject.GetResourceVersion()).To(Equal("19"), "the object as it was before the first merged change")
	g.Expect(second.ChangedPaths()).To(Equal([]string{"data.color", "data.n"}), "the union of the changed paths")
}

func TestCoalesceDelaysNoOtherObjectAndKeepsOrder(t *testing.T) {
	g := newG(t)
	s := &fakeSink{}
	window := 300 * time.Millisecond
	p := Start(Options{Sink: s, CoalesceWindow: window, Parallelism: 1})
	defer p.Stop()

	a, b := &versions{name: "a", uid: "ua1"}, &versions{name: "b", uid: "ub"}
	start := time.Now()
	g.Expect(p.Offer(a.change(event.Updated, 1, map[string]any{"n": "1"}))).To(BeTrue())
	g.Expect(p.Offer(a.change(event.Updated, 2, map[string]any{"n": "2"}))).To(BeTrue())
	g.Expect(p.Offer(a.change(event.Deleted, 3, map[string]any{"n": "2"}))).To(BeTrue())
	recreated := &versions{name: "a", uid: "ua2"}
	g.Expect(p.Offer(recreated.change(event.Added, 4, map[string]any{"n": "new"}))).To(BeTrue())
	g.Expect(p.Offer(recreated.change(event.Updated, 5, map[string]any{"n": "newer"}))).To(BeTrue())
	g.Expect(p.Offer(b.change(event.Updated, 6, map[string]any{"n": "1"}))).To(BeTrue())

	g.Eventually(s.accepted).Should(HaveLen(4))
	elapsed := time.Since(start)
	g.Expect(rvs(s.accepted())).To(Equal([]string{
		"team-a/a@2:Updated", // the burst of the first object
		"team-a/a@3:Deleted", // a deletion is never merged: right after the held event
		"team-a/a@5:Added",   // the new object of the same name: its own addition, merged
		"team-a/b@6:Updated",
	}))
	g.Expect(elapsed).To(BeNumerically(">=", window), "held for the window")
	g.Consistently(s.accepted, 2*window).Should(HaveLen(4), "nothing more: every change was merged or sent")
}

func TestRateLimitMergesInsteadOfDropping(t *testing.T) {
	g := newG(t)
	s := &fakeSink{}
	stats := NewStats(Snapshot{})
	p := Start(Options{Sink: s, QueueSize: 20, RateLimit: &RateLimit{PerSecond: 20, Burst: 1},
		Observer: &watching{stats: stats}})
	defer p.Stop()

	objects := make([]*versions, 10)
	for i := range objects {
		objects[i] = &versions{name: "o" + strconv.Itoa(i), uid: "u" + strconv.Itoa(i)}
	}
	final := map[string]string{}
	for i := range 200 {
		o := objects[i%10]
		ev := o.change(event.Updated, 100+i, map[string]any{"n": strconv.Itoa(i)})
		g.Expect(p.Offer(ev)).To(BeTrue(), "change %d: over the limit, changes wait and merge; none is dropped", i)
		final[ev.ObjectKey()] = ev.ResourceVersion()
	}
	lastOf := func() map[string]string {
		out := map[string]string{}
		for _, m := range s.accepted() {
			out[m.Event.ObjectKey()] = m.Event.ResourceVersion()
		}
		return out
	}
	g.Eventually(lastOf, 5*time.Second).Should(Equal(final), "each object's final state arrives")
	got := len(s.accepted())
	g.Expect(got).To(BeNumerically("<", 200), "the limit merged changes")
	snap := stats.Snapshot()
	g.Expect(snap.Dropped).To(BeZero())
	g.Expect(snap.Coalesced+int64(got)).To(Equal(int64(200)), "every change was sent or merged")
}

func TestDrainFlushesHeldEvents(t *testing.T) {
	g := newG(t)
	s := &fakeSink{}
	p := Start(Options{Sink: s, CoalesceWindow: time.Hour, RateLimit: &RateLimit{PerSecond: 1, Burst: 1}})
	defer p.Stop()
	a, b := &versions{name: "a", uid: "ua"}, &versions{name: "b", uid: "ub"}
	g.Expect(p.Offer(a.change(event.Updated, 1, nil))).To(BeTrue())
	g.Expect(p.Offer(b.change(event.Updated, 2, nil))).To(BeTrue())

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g.Expect(p.Drain(ctx)).To(BeTrue(), "stopping delivers what waits, window and rate limit aside")
	g.Expect(rvs(s.accepted())).To(ConsistOf("team-a/a@1:Updated", "team-a/b@2:Updated"))
}

func TestHandOverIncludesHeldEvents(t *testing.T) {
	g := newG(t)
	s := &fakeSink{}
	var done doneLog
	old := Start(Options{Sink: s, CoalesceWindow: time.Hour, Observer: &watching{done: &done}})
	a := &versions{name: "a", uid: "ua"}
	g.Expect(old.Offer(a.change(event.Updated, 1, nil))).To(BeTrue())
	g.Expect(old.Offer(a.change(event.Updated, 2, nil))).To(BeTrue())

	replacement := Start(Options{Sink: s, Held: true, Observer: &watching{done: &done}})
	defer replacement.Stop()
	g.Expect(replacement.Offer(a.change(event.Updated, 3, nil))).To(BeTrue())
	replacement.TakeOver(old)
	g.Eventually(func() []string { return rvs(s.accepted()) }).Should(Equal([]string{
		"team-a/a@2:Updated", "team-a/a@3:Updated"}), "what the old pipeline held comes first, merged as it was")
	g.Expect(s.accepted()[0].Extensions).To(HaveKeyWithValue(CoalescedExtension, "2"))
}

func TestDeadLettersKeepTheCoalescedCount(t *testing.T) {
	g := newG(t)
	main := &fakeSink{send: func(context.Context, sink.Message, int) error { return httpError(http.StatusBadRequest) }}
	dead := &fakeSink{}
	p := Start(Options{Sink: main, DeadLetter: dead, CoalesceWindow: 50 * time.Millisecond})
	defer p.Stop()
	a := &versions{name: "a", uid: "ua"}
	g.Expect(p.Offer(a.change(event.Updated, 1, nil))).To(BeTrue())
	g.Expect(p.Offer(a.change(event.Updated, 2, nil))).To(BeTrue())
	g.Eventually(dead.accepted).Should(HaveLen(1))
	g.Expect(dead.accepted()[0].Extensions).To(And(HaveKeyWithValue(CoalescedExtension, "2"),
		HaveKey("deliveryerror"), HaveKeyWithValue("deliveryattempts", "1")))
}
