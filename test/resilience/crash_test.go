package resilience

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/types"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

// TestSubscriptionOverTwoNamespacesKilled: every stream has its own checkpoint. A
// subscription watches two namespaces; once the changes in both are delivered and both
// streams checkpointed past them, the manager is SIGKILLed and both namespaces change while
// no manager runs. The next manager delivers the changes of both namespaces and re-sends
// none of those the saved checkpoints had acknowledged.
func TestSubscriptionOverTwoNamespacesKilled(t *testing.T) {
	s := newScenario(t, "twons")
	nsB := s.addNamespace("b")
	s.subscribeWith("sub", func(spec *notifyv1.WatchSubscriptionSpec) {
		spec.Namespaces = []notifyv1.NamespaceName{notifyv1.NamespaceName(s.ns), notifyv1.NamespaceName(nsB)}
	})
	namespaces := []string{s.ns, nsB}
	m1 := startManager(t, "manager-1", s.managerOptions())
	s.waitReady(m1)
	s.probe(30*time.Second, m1)

	const objects = 4
	for _, ns := range namespaces {
		for i := range objects {
			requireNoError(t, s.led.create(s.ctx, s.objName(ns, fmt.Sprintf("cm-%d", i)), "delivered before the kill"))
			requireNoError(t, s.led.update(s.ctx, s.objName(ns, fmt.Sprintf("cm-%d", i)), "delivered before the kill"))
		}
		requireNoError(t, s.led.remove(s.ctx, s.objName(ns, fmt.Sprintf("cm-%d", objects-1)), "delivered before the kill"))
		// The namespace's last write comes after its deletion, so a checkpoint at or past it
		// covers the deletion too.
		requireNoError(t, s.led.update(s.ctx, s.objName(ns, "cm-0"), "delivered before the kill"))
	}
	s.waitReceived(60*time.Second, []*manager{m1}, "sub", s.expectAll(), "changes in both namespaces reach the sink")
	acked := s.led.since(0)
	points := s.waitPoints([]*manager{m1}, "both streams are checkpointed past the changes delivered",
		func(_, ns string) uint64 {
			rv, _ := strconv.ParseUint(s.led.lastRVIn(ns), 10, 64)
			return rv
		})
	subscriber, err := s.subscriber("sub")
	requireNoError(t, err)
	for _, ns := range namespaces {
		t.Logf("checkpoint of stream %s: resourceVersion %d (its last change: %s)", streamOf(ns),
			points[pointKey{subscriber, streamOf(ns)}], s.led.lastRVIn(ns))
	}
	m1.kill(t)

	for _, ns := range namespaces {
		requireNoError(t, writeWhileDown(s.ctx, s.led, s.objName(ns, "cm"), "written in "+ns+" while no manager ran"))
	}
	m2 := startManager(t, "manager-2", s.managerOptions())
	s.awaitExpected(60*time.Second, []*manager{m2}, map[string]*expectation{"sub": s.expectAll()})

	// At most what came after the saved checkpoints may arrive twice; all of acked came
	// before them.
	if dups := resent(s.sink.deliveries("sub"), acked); len(dups) > 0 {
		t.Errorf("%d changes acknowledged by the checkpoints saved before the kill were sent again:\n  %s",
			len(dups), strings.Join(limit(dups, 40), "\n  "))
	}
	if n := len(s.resyncs("sub")); n > 0 {
		t.Logf("%d resync events after the restart", n)
	}
}

// resent lists the changes that were delivered more than once, with a reason each.
func resent(got []delivery, changes []change) []string {
	count := map[string]int{}
	deleted := map[types.UID]int{}
	for _, d := range got {
		if isResync(d) {
			continue
		}
		count[d.ID]++
		if uid, _, typ, ok := parseID(d.ID); ok && typ == "Deleted" {
			deleted[uid]++
		}
	}
	var out []string
	for _, c := range changes {
		n := count[c.ID]
		if c.Type == "Deleted" {
			n = deleted[c.UID]
		}
		if n > 1 {
			out = append(out, fmt.Sprintf("%s  %s/%s: %s, delivered %d times", c.ID, c.Namespace,
				c.Name[strings.LastIndex(c.Name, "/")+1:], c.Phase, n))
		}
	}
	return out
}

// The world of TestInitialEventsSurviveKill: more objects than the delivery queue holds, a
// sink slow enough that the kill finds a good part of the initial events undelivered.
const (
	initialObjects = 2000
	initialWriters = 8
	slowSink       = 10 * time.Millisecond
)

// TestInitialEventsSurviveKill: initial events are delivered at least once across a crash.
// A subscription with sendInitialEvents joins 2,000 existing ConfigMaps and posts to a slow
// sink; the manager is SIGKILLed once more than half were delivered and the whole initial
// list has been queued for more than a checkpoint interval. No checkpoint of the stream may
// have been saved by then, and the next manager sends every object's Added event
// (uid:rv:Added, with the id of its creation) at least once.
func TestInitialEventsSurviveKill(t *testing.T) {
	s := newScenario(t, "initial")
	started := time.Now()
	requireNoError(t, createMany(s.ctx, s.led, "cm", initialObjects, initialWriters, "existing before the subscription"))
	t.Logf("%d ConfigMaps created by %d writers in %s", initialObjects, initialWriters,
		time.Since(started).Round(time.Millisecond))

	s.sink.setDelay(slowSink)
	s.subscribeWith("sub", func(spec *notifyv1.WatchSubscriptionSpec) { spec.SendInitialEvents = true })
	m1 := startManager(t, "manager-1", s.managerOptions())

	// With the default queue, the initial list is all queued once all but a queue's worth
	// (and those in flight) are delivered; a checkpoint saved from then on must not skip
	// what is still queued.
	queuedOnce := initialObjects - notifyv1.DefaultMaxQueueSize + notifyv1.DefaultParallelism
	var queuedAt time.Time
	var delivered int
	what := fmt.Sprintf("more than half of the %d initial events delivered, and the whole list queued "+
		"for two checkpoint intervals", initialObjects)
	s.eventually(2*time.Minute, []*manager{m1}, what, func() error {
		delivered = distinctAdded(s.sink.deliveries("sub"))
		switch {
		case delivered >= initialObjects:
			return StopTrying(fmt.Sprintf("all %d initial events were delivered before the kill: the sink must be "+
				"slower for the test to prove anything", delivered))
		case delivered >= queuedOnce && queuedAt.IsZero():
			queuedAt = time.Now()
		}
		if delivered <= initialObjects/2 || queuedAt.IsZero() || time.Since(queuedAt) < 2*checkpointInterval {
			return fmt.Errorf("%d initial events delivered", delivered)
		}
		return nil
	})
	points, saved, err := s.savedPoints()
	requireNoError(t, err)
	subscriber, err := s.subscriber("sub")
	requireNoError(t, err)
	m1.kill(t)
	// Counted after the checkpoints were read: what was undelivered now was then.
	delivered = distinctAdded(s.sink.deliveries("sub"))
	if delivered >= initialObjects {
		t.Fatalf("all %d initial events were delivered before the kill: the sink must be slower for the test "+
			"to prove anything", delivered)
	}
	t.Logf("at the kill: %d of %d initial events delivered; %s", delivered, initialObjects, saved)
	// A checkpoint says everything of the stream up to it was finished with; the initial
	// events are the objects as of the list, so one saved while some were undelivered lets
	// a manager that resumes from it skip them.
	if rv, ok := points[pointKey{subscriber, streamOf(s.ns)}]; ok {
		t.Errorf("a checkpoint (resourceVersion %d) was saved for %s while %d of its %d initial events were not "+
			"delivered yet: a manager resuming from it skips them", rv, streamOf(s.ns), initialObjects-delivered,
			initialObjects)
	}

	s.sink.setDelay(0)
	m2 := startManager(t, "manager-2", s.managerOptions())
	s.awaitExpected(2*time.Minute, []*manager{m2}, map[string]*expectation{"sub": s.expectAll()})
}

// createMany creates n ConfigMaps named prefix-<i> with the given number of writers.
func createMany(ctx context.Context, led *ledger, prefix string, n, writers int, phase string) error {
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := w; i < n; i += writers {
				if err := led.create(ctx, fmt.Sprintf("%s-%d", prefix, i), phase); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// distinctAdded counts the distinct Added ids received.
func distinctAdded(got []delivery) int {
	seen := map[string]bool{}
	for _, d := range got {
		if strings.HasSuffix(d.ID, ":Added") {
			seen[d.ID] = true
		}
	}
	return len(seen)
}
