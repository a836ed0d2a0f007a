package resilience

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dynamic-notifier/dynamic-notifier/internal/cetest"
)

// CloudEvents types of the contract.
const (
	typeAdded   = "io.dynamicnotifier.resource.added"
	typeUpdated = "io.dynamicnotifier.resource.updated"
	typeDeleted = "io.dynamicnotifier.resource.deleted"
	typeResync  = "io.dynamicnotifier.resync"
)

// delivery is one CloudEvent the sink accepted (answered 2xx).
type delivery struct {
	Path string // request path: one per subscription
	ID   string
	Type string
}

// sink is a CloudEvents receiver on 127.0.0.1. Each subscription posts to its own path, so
// deliveries are told apart without trusting the event's own attributes.
type sink struct {
	base    string       // http://127.0.0.1:port
	delay   atomic.Int64 // time.Duration each request takes before the answer
	arrived atomic.Int64 // requests received, answered or not yet

	mu  sync.Mutex
	got []delivery
}

func startSink(t *testing.T) *sink {
	t.Helper()
	s := &sink{}
	srv := httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(srv.Close)
	s.base = srv.URL
	return s
}

// url is where the subscription called name posts.
func (s *sink) url(name string) string { return s.base + "/" + name }

// setDelay makes every request take d before it is answered (and recorded).
func (s *sink) setDelay(d time.Duration) { s.delay.Store(int64(d)) }

func (s *sink) serve(w http.ResponseWriter, r *http.Request) {
	evs, err := cetest.Events(r)
	if err != nil {
		http.Error(w, "not a CloudEvent: "+err.Error(), http.StatusBadRequest)
		return
	}
	s.arrived.Add(1)
	if delay := time.Duration(s.delay.Load()); delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return // the sender went away: not delivered
		}
	}
	path := strings.TrimPrefix(r.URL.Path, "/")
	s.mu.Lock()
	for _, ev := range evs {
		s.got = append(s.got, delivery{Path: path, ID: ev.ID(), Type: ev.Type()})
	}
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// arrivals counts the requests received so far, including those not answered yet.
func (s *sink) arrivals() int64 { return s.arrived.Load() }

// deliveries returns what path received so far, in arrival order.
func (s *sink) deliveries(path string) []delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []delivery
	for _, d := range s.got {
		if d.Path == path {
			out = append(out, d)
		}
	}
	return out
}

// count is how many deliveries path received.
func (s *sink) count(path string) int { //nolint:unparam // the tests that count have one subscription
	return len(s.deliveries(path))
}

// has tells whether path received id.
func (s *sink) has(path, id string) bool {
	return slices.ContainsFunc(s.deliveries(path), func(d delivery) bool { return d.ID == id })
}
