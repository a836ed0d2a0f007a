package resilience

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

// TestHeldEventsSurviveKill: changes held for a coalescing window when the manager dies are
// not lost. Subscription "plain" delivers the ConfigMaps' changes as they come; "held", on
// the same namespace, coalesces them for 10 s. Once plain's checkpoint shows the manager saved
// checkpoints after the held changes arrived, held's saved checkpoint must still be before
// them. The manager is SIGKILLed inside the window, and the next one delivers each object's
// final state to held.
func TestHeldEventsSurviveKill(t *testing.T) {
	s := newScenario(t, "coalesce")
	s.subscribe("plain")
	m1 := startManager(t, "manager-1", s.managerOptions())
	s.waitReady(m1)
	s.probe(30*time.Second, m1)
	s.subscribeWith("held", func(spec *notifyv1.WatchSubscriptionSpec) {
		spec.Delivery = &notifyv1.DeliverySpec{Coalesce: notifyv1.CoalesceSpec{Window: "10s"}}
	})
	s.waitReady(m1)
	heldFrom := s.led.len()

	for i := range 3 {
		name := fmt.Sprintf("flap-%d", i)
		requireNoError(t, s.led.create(s.ctx, name, "held when the manager was killed"))
		for range 5 {
			requireNoError(t, s.led.update(s.ctx, name, "held when the manager was killed"))
		}
	}
	held := s.led.since(heldFrom)
	first, _ := strconv.ParseUint(held[0].RV, 10, 64)
	last, _ := strconv.ParseUint(s.led.lastRV(), 10, 64)
	holder, err := s.subscriber("held")
	requireNoError(t, err)
	points := s.waitPoints([]*manager{m1}, "plain is checkpointed past the held changes",
		func(sub, _ string) uint64 {
			if sub == "plain" {
				return last
			}
			return 0
		})
	if p := points[pointKey{holder, streamOf(s.ns)}]; p >= first {
		t.Fatalf("held's checkpoint is at %d, at or past its first held change (%d): a crash now would lose them", p, first)
	}
	if got := s.sink.count("held"); got > 0 {
		t.Fatalf("held received %d events before the kill: the window ended too soon for the test to prove anything", got)
	}
	m1.kill(t)

	m2 := startManager(t, "manager-2", s.managerOptions())
	heldExp := newExpectation(s.led)
	heldExp.requireFinalStates(held)
	s.awaitExpected(60*time.Second, []*manager{m2}, map[string]*expectation{"plain": s.expectAll(), "held": heldExp})
}
