package resilience

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
	Path    string // request path: one per subscription
	ID      string
	Type    string
	Source  string
	Subject string
	At      time.Time
}

// sink is a CloudEvents receiver on 127.0.0.1. Each subscription posts to its own path, so
// deliveries are told apart without trusting the event's own attributes.
type sink struct {
	base string // http://127.0.0.1:port
	srv  *http.Server

	delay   atomic.Int64 // time.Duration each request takes before the answer
	invalid atomic.Int64 // requests that were not CloudEvents

	mu   sync.Mutex
	got  []delivery
	cond *sync.Cond
}

func startSink(t *testing.T) *sink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{base: "http://" + ln.Addr().String()}
	s.cond = sync.NewCond(&s.mu)
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("sink: %v", err)
		}
	}()
	t.Cleanup(func() { _ = s.srv.Close() })
	return s
}

// url is where the subscription called name posts.
func (s *sink) url(name string) string { return s.base + "/" + name }

// setDelay makes every request take d before it is answered (and recorded).
func (s *sink) setDelay(d time.Duration) { s.delay.Store(int64(d)) }

func (s *sink) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	d := delivery{
		Path:    strings.TrimPrefix(r.URL.Path, "/"),
		ID:      r.Header.Get("Ce-Id"),
		Type:    r.Header.Get("Ce-Type"),
		Source:  r.Header.Get("Ce-Source"),
		Subject: r.Header.Get("Ce-Subject"),
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/cloudevents+json" {
		var structured struct{ ID, Type, Source, Subject string }
		if json.Unmarshal(body, &structured) == nil {
			d.ID, d.Type, d.Source, d.Subject = structured.ID, structured.Type, structured.Source, structured.Subject
		}
	}
	if d.ID == "" || d.Type == "" {
		s.invalid.Add(1)
		http.Error(w, "not a CloudEvent", http.StatusBadRequest)
		return
	}
	if delay := time.Duration(s.delay.Load()); delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return // the sender went away: not delivered
		}
	}
	d.At = time.Now()
	s.mu.Lock()
	s.got = append(s.got, d)
	s.cond.Broadcast()
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

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
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, d := range s.got {
		if d.Path == path {
			n++
		}
	}
	return n
}

// has tells whether path received id.
func (s *sink) has(path, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.got {
		if d.Path == path && d.ID == id {
			return true
		}
	}
	return false
}
