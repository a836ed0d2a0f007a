package delivery

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

// acceptedLog records Accepted calls: the event's resourceVersion and the answer time.
type acceptedLog struct {
	nopObserver
	mu   sync.Mutex
	rvs  []string
	when map[string]time.Time
}

func (a *acceptedLog) Accepted(ev *event.Event, at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rvs = append(a.rvs, ev.ResourceVersion())
	a.when[ev.ResourceVersion()] = at
}

func (a *acceptedLog) get() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.rvs...)
}

// Accepted is heard once for each event the sink took, after a retry too, with the time of
// the answer (what the latency histogram measures up to); never for an event that failed.
func TestAcceptedOncePerDeliveredEventWithTheAnswerTime(t *testing.T) {
	g := newG(t)
	var mu sync.Mutex
	answered := map[string]time.Time{}
	s := &fakeSink{send: func(_ context.Context, msg sink.Message, n int) error {
		rv := msg.Event.ResourceVersion()
		switch {
		case rv == "2":
			return httpError(http.StatusBadRequest) // fails for good
		case rv == "1" && n == 1:
			return httpError(http.StatusServiceUnavailable) // retried
		}
		mu.Lock()
		answered[rv] = time.Now()
		mu.Unlock()
		return nil
	}}
	log := &acceptedLog{when: map[string]time.Time{}}
	p := Start(Options{Sink: s, Parallelism: 1, Retry: fastRetry, Observer: log})
	defer p.Stop()

	evs := []*event.Event{newEvent("a", 1), newEvent("a", 2), newEvent("a", 3)}
	for _, ev := range evs {
		g.Expect(p.Offer(ev)).To(BeTrue())
	}
	g.Eventually(log.get).Should(Equal([]string{"1", "3"}))
	g.Consistently(log.get, 50*time.Millisecond).Should(Equal([]string{"1", "3"}))
	mu.Lock()
	defer mu.Unlock()
	for _, ev := range []*event.Event{evs[0], evs[2]} {
		at := log.when[ev.ResourceVersion()]
		g.Expect(at).NotTo(BeTemporally("<", answered[ev.ResourceVersion()]), "at is when the sink answered")
		g.Expect(at).To(BeTemporally(">", ev.ObservedAt))
	}
}
