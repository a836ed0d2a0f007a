package delivery

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

// batchReceiver is a real HTTP sink on loopback that records, per request, the subjects
// of the CloudEvents it carried: a batched-mode array, or one binary-mode event.
type batchReceiver struct {
	url string
	// status answers request i (from 0), which carried events; nil answers 204. It may
	// block, e.g. until the request is cancelled.
	status func(r *http.Request, i, events int) int

	mu       sync.Mutex
	requests int
	accepted [][]string
}

func newBatchReceiver(t *testing.T, status func(r *http.Request, i, events int) int) *batchReceiver {
	t.Helper()
	rcv := &batchReceiver{status: status}
	srv := httptest.NewServer(http.HandlerFunc(rcv.serve))
	t.Cleanup(srv.Close)
	rcv.url = srv.URL
	return rcv
}

func (rcv *batchReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var subjects []string
	if r.Header.Get("Content-Type") == sink.BatchContentType {
		var batch []struct {
			Subject string `json:"subject"`
		}
		if err := json.Unmarshal(body, &batch); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		for _, ce := range batch {
			subjects = append(subjects, ce.Subject)
		}
	} else {
		subjects = []string{r.Header.Get("Ce-Subject")}
	}
	rcv.mu.Lock()
	i := rcv.requests
	rcv.requests++
	rcv.mu.Unlock()
	code := http.StatusNoContent
	if rcv.status != nil {
		code = rcv.status(r, i, len(subjects))
	}
	if code/100 == 2 {
		rcv.mu.Lock()
		rcv.accepted = append(rcv.accepted, subjects)
		rcv.mu.Unlock()
	}
	w.WriteHeader(code)
}

// batches are the accepted requests' subjects, request by request.
func (rcv *batchReceiver) batches() [][]string {
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	return append([][]string(nil), rcv.accepted...)
}

func (rcv *batchReceiver) requestCount() int {
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	return rcv.requests
}

func (rcv *batchReceiver) webhook(batch int) *sink.Webhook {
	return &sink.Webhook{URL: rcv.url, Client: &http.Client{}, Batch: batch}
}

func objName(i int) string { return fmt.Sprintf("c%02d", i) }

// subjects of team-a's ConfigMaps objName(from)..objName(to-1), in order.
func subjects(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, newEvent(objName(i), 1).ObjectPath())
	}
	return out
}

// offerHeld queues the changes of objName(0)..objName(n-1) on a held p, then releases it:
// all are queued before its worker starts.
func offerHeld(g *WithT, p *Pipeline, n int) {
	for i := range n {
		g.Expect(p.Offer(newEvent(objName(i), 1))).To(BeTrue())
	}
	p.TakeOver(nil)
}

func TestBatchingSinkTakesWhatIsQueuedInOrder(t *testing.T) {
	g := newG(t)
	rcv := newBatchReceiver(t, nil)
	var done doneLog
	stats := NewStats(Snapshot{})
	metrics := &recordingMetrics{}
	// Held, so all 12 are queued before the lane's worker starts.
	p := Start(Options{Sink: rcv.webhook(5), Parallelism: 1, Held: true, Observer: &watching{stats: stats, metrics: metrics, done: &done}})
	defer p.Stop()
	offerHeld(g, p, 12)

	g.Eventually(rcv.batches).Should(Equal([][]string{subjects(0, 5), subjects(5, 10), subjects(10, 12)}),
		"queued events go in batches of at most 5, in queue order")
	g.Eventually(done.get).Should(HaveLen(12))
	g.Expect(stats.Snapshot().Delivered).To(Equal(int64(12)), "delivered counts events, not requests")
	metrics.mu.Lock()
	g.Expect(metrics.delivered).To(Equal(12))
	metrics.mu.Unlock()
	g.Eventually(func() int { return len(p.slots) }).Should(BeZero(), "every event's queue slot is given back")

	// An event arriving alone is not held back to wait for company.
	g.Expect(p.Offer(newEvent(objName(12), 1))).To(BeTrue())
	g.Eventually(rcv.batches).Should(HaveLen(4))
	g.Expect(rcv.batches()[3]).To(Equal(subjects(12, 13)))
}

func TestFailedBatchIsDeadLetteredEventByEvent(t *testing.T) {
	g := newG(t)
	down := newBatchReceiver(t, func(*http.Request, int, int) int { return http.StatusInternalServerError })
	letters := newBatchReceiver(t, nil)
	stats := NewStats(Snapshot{})
	p := Start(Options{Sink: down.webhook(10), DeadLetter: letters.webhook(0),
		Parallelism: 1, Held: true, Retry: Retry{MaxAttempts: 2, Backoff: time.Millisecond, MaxBackoff: time.Millisecond}, Observer: &watching{stats: stats}})
	defer p.Stop()
	offerHeld(g, p, 3)

	g.Eventually(letters.batches).Should(Equal([][]string{subjects(0, 1), subjects(1, 2), subjects(2, 3)}),
		"each event of the failed batch reaches the dead-letter sink on its own, in order")
	g.Expect(down.requestCount()).To(Equal(2), "the batch was tried twice as a whole")
	// The receiver records a dead letter before the pipeline has its answer and counts it.
	g.Eventually(func(g Gomega) {
		s := stats.Snapshot()
		g.Expect(s.Failed).To(Equal(int64(3)))
		g.Expect(s.DeadLettered).To(Equal(int64(3)))
		g.Expect(s.Delivered).To(BeZero())
	}).Should(Succeed())
}

func TestReplacementRetriesABatchCutShort(t *testing.T) {
	g := newG(t)
	rcv := newBatchReceiver(t, func(r *http.Request, i, _ int) int {
		if i == 0 {
			<-r.Context().Done() // the first attempt hangs until the old pipeline stops
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})
	var done doneLog
	old := Start(Options{Sink: rcv.webhook(10), Parallelism: 1, Held: true,
		HandOverWait: 50 * time.Millisecond, Observer: &watching{done: &done}})
	offerHeld(g, old, 3)
	g.Eventually(rcv.requestCount).Should(Equal(1), "the batch of 3 is in flight")

	replacement := Start(Options{Sink: rcv.webhook(10), Parallelism: 1, Held: true, Observer: &watching{done: &done}})
	defer replacement.Stop()
	g.Expect(replacement.Offer(newEvent(objName(3), 1))).To(BeTrue())
	replacement.TakeOver(old)

	g.Eventually(rcv.batches).Should(Equal([][]string{subjects(0, 4)}),
		"the cut-short batch goes again, ahead of the new pipeline's own event")
	g.Eventually(done.get).Should(HaveLen(4))
}

func TestBatchStopsGrowingAtMaxBatchBytes(t *testing.T) {
	// About 40% of the limit each: two fit in a request, three do not.
	big := strings.Repeat("x", MaxBatchBytes*2/5)
	for _, tc := range []struct {
		name    string
		objects map[string]any // the objects' data
		shape   func(*event.Event) ([]byte, string, error)
	}{
		{"large objects", map[string]any{"payload": big}, nil},
		// Sized on what is sent: a small object can carry a large shaped payload.
		{"large shaped payloads", map[string]any{"small": "x"}, func(*event.Event) ([]byte, string, error) {
			return []byte(`{"payload":"` + big + `"}`), "", nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newG(t)
			rcv := newBatchReceiver(t, nil)
			p := Start(Options{Sink: rcv.webhook(10), Parallelism: 1, Held: true, Shape: tc.shape})
			defer p.Stop()
			for i := range 5 {
				ev := newEvent(objName(i), 1)
				ev.Object.Object["data"] = tc.objects
				g.Expect(p.Offer(ev)).To(BeTrue())
			}
			p.TakeOver(nil)

			g.Eventually(rcv.batches).Should(Equal([][]string{subjects(0, 2), subjects(2, 4), subjects(4, 5)}),
				"requests stop short of MaxBatchBytes, in order")
		})
	}
}

func TestOneUnencodableEventFailsAloneInItsBatch(t *testing.T) {
	shapeFails := func(ev *event.Event) ([]byte, string, error) {
		if ev.Object.GetName() == objName(1) {
			return nil, "", errors.New("payload cannot be shaped")
		}
		data, err := ev.Data()
		return data, "", err
	}
	for _, tc := range []struct {
		name  string
		shape func(*event.Event) ([]byte, string, error)
	}{
		{"its payload cannot be shaped", shapeFails},
		{"the object cannot be encoded", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newG(t)
			rcv := newBatchReceiver(t, nil)
			stats, metrics := NewStats(Snapshot{}), &recordingMetrics{}
			var done doneLog
			p := Start(Options{Sink: rcv.webhook(10), Parallelism: 1, Held: true, Shape: tc.shape, Observer: &watching{stats: stats, metrics: metrics, done: &done}})
			defer p.Stop()
			for i := range 3 {
				ev := newEvent(objName(i), 1)
				if i == 1 && tc.shape == nil {
					ev.Object.Object["data"] = map[string]any{"ratio": math.NaN()} // JSON has no NaN
				}
				g.Expect(p.Offer(ev)).To(BeTrue())
			}
			p.TakeOver(nil)

			g.Eventually(rcv.batches).Should(Equal([][]string{{subjects(0, 1)[0], subjects(2, 3)[0]}}),
				"the two good events still go, together")
			g.Eventually(done.get).Should(HaveLen(3), "the failed event is finished with too")
			g.Expect(stats.Snapshot().Failed).To(Equal(int64(1)))
			g.Expect(stats.Snapshot().Delivered).To(Equal(int64(2)))
			g.Expect(metrics.failures()).To(Equal([]string{sink.ReasonInvalid}))
		})
	}
}

func TestBatchTooLargeForTheSinkIsSplit(t *testing.T) {
	g := newG(t)
	rcv := newBatchReceiver(t, func(_ *http.Request, _, events int) int {
		if events > 2 {
			return http.StatusRequestEntityTooLarge
		}
		return http.StatusNoContent
	})
	stats := NewStats(Snapshot{})
	p := Start(Options{Sink: rcv.webhook(10), Parallelism: 1, Held: true, Retry: fastRetry, Observer: &watching{stats: stats}})
	defer p.Stop()
	offerHeld(g, p, 5)

	g.Eventually(rcv.batches).Should(Equal([][]string{subjects(0, 2), subjects(2, 3), subjects(3, 5)}),
		"a 413 halves the batch until the halves pass, in order")
	s := stats.Snapshot()
	g.Expect(s.Delivered).To(Equal(int64(5)))
	g.Expect(s.Failed).To(BeZero())
	g.Expect(s.Failing).To(BeFalse(), "a split is not a failure")
}

func TestReplacementGetsOnlyWhatADeadLetteringPipelineLeft(t *testing.T) {
	g := newG(t)
	down := newBatchReceiver(t, func(*http.Request, int, int) int { return http.StatusInternalServerError })
	letters := newBatchReceiver(t, func(r *http.Request, i, _ int) int {
		if i == 1 {
			<-r.Context().Done() // the second dead letter hangs until the pipeline stops
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})
	old := Start(Options{Sink: down.webhook(10), DeadLetter: letters.webhook(0),
		Parallelism: 1, Held: true, Retry: Retry{MaxAttempts: 1}, HandOverWait: 50 * time.Millisecond})
	offerHeld(g, old, 3)
	g.Eventually(letters.requestCount).Should(Equal(2), "the first event is dead-lettered, the second on its way")

	fixed := newBatchReceiver(t, nil)
	replacement := Start(Options{Sink: fixed.webhook(10), Parallelism: 1, Held: true})
	defer replacement.Stop()
	replacement.TakeOver(old)

	g.Eventually(fixed.batches).Should(Equal([][]string{subjects(1, 3)}),
		"the replacement retries the two events not settled, not the one already dead-lettered")
	g.Expect(letters.batches()).To(Equal([][]string{subjects(0, 1)}))
}
