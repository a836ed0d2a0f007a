package delivery

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	. "github.com/onsi/gomega"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

// bigEvent is a change to an object of about 1 KiB.
func bigEvent(name string, rv int) *event.Event {
	ev := newEvent(name, rv)
	ev.Object.Object["data"] = map[string]any{"payload": strings.Repeat("x", 1000)}
	return ev
}

// TestMemoryBudgetCostsOnlyTheFlooder: a subscription whose sink hangs floods the budget;
// it loses its oldest events, never more than the budget is held, and a subscription
// within its share loses nothing.
func TestMemoryBudgetCostsOnlyTheFlooder(t *testing.T) {
	g := newG(t)
	// The calm subscription's share is half the budget, room for about 40 events; it gets
	// 25, and its sink holds them all until the flood is over, so they stay queued, where
	// the budget could take them.
	budget := NewMemoryBudget(200 << 10)
	hang := &fakeSink{send: func(ctx context.Context, _ sink.Message, _ int) error { <-ctx.Done(); return ctx.Err() }}
	floodStats := NewStats(Snapshot{})
	flood := Start(Options{Sink: hang, Budget: budget, QueueSize: 100000, Parallelism: 2, Observer: &watching{stats: floodStats}})
	defer flood.Stop()
	release := make(chan struct{})
	quiet := &fakeSink{send: func(ctx context.Context, _ sink.Message, _ int) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	quietStats := NewStats(Snapshot{})
	calm := Start(Options{Sink: quiet, Budget: budget, Observer: &watching{stats: quietStats}})
	defer calm.Stop()

	maxUsed := int64(0)
	for i := range 1000 {
		flood.Offer(bigEvent(fmt.Sprintf("flood-%d", i%50), i))
		maxUsed = max(maxUsed, budget.Used())
		if i%40 == 0 {
			g.Expect(calm.Offer(bigEvent(fmt.Sprintf("calm-%d", i), i))).To(BeTrue(), "the calm subscription is within its share")
		}
	}
	g.Expect(maxUsed).To(BeNumerically("<=", budget.Limit()+int64(bigEvent("x", 1).Size())),
		"never much more than the budget is held")
	close(release)
	g.Eventually(func() int { return len(quiet.accepted()) }).Should(Equal(25),
		"the calm subscription delivers everything")
	snap := floodStats.Snapshot()
	g.Expect(snap.Evicted).To(BeNumerically(">", 800), "the flooder loses its oldest events")
	g.Expect(snap.Dropped).To(Equal(snap.Evicted))
	g.Expect(quietStats.Snapshot().Dropped).To(BeZero())

	// Its newest events are the ones kept.
	var kept []string
	for _, l := range flood.lanes {
		l.mu.Lock()
		for _, ev := range l.queue {
			kept = append(kept, ev.ResourceVersion())
		}
		l.mu.Unlock()
	}
	g.Expect(kept).NotTo(BeEmpty())
	for _, rv := range kept {
		g.Expect(strconv.Atoi(rv)).To(BeNumerically(">=", 800), "only recent events are kept: %v", kept)
	}
}

func TestMemoryBudgetIsGivenBackWhenPipelinesStop(t *testing.T) {
	g := NewWithT(t)
	budget := NewMemoryBudget(1 << 20)
	hang := &fakeSink{send: func(ctx context.Context, _ sink.Message, _ int) error { <-ctx.Done(); return ctx.Err() }}
	p := Start(Options{Sink: hang, Budget: budget})
	for i := range 10 {
		g.Expect(p.Offer(bigEvent(fmt.Sprintf("o-%d", i), i))).To(BeTrue())
	}
	g.Expect(budget.Used()).To(BeNumerically(">", 10000))
	successor := Start(Options{Sink: &fakeSink{}, Budget: budget, Held: true})
	defer successor.Stop()
	successor.TakeOver(p)
	g.Eventually(budget.Used).Should(BeZero(), "delivered by the successor, and nothing counted twice")
}
