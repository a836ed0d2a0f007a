package main

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	pipeline "github.com/dynamic-notifier/dynamic-notifier/internal/delivery"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

// delivery is what the sink learns from one request: the CloudEvent's subject (the
// object's API path), its id, how many changes it stands for, and when it arrived.
type delivery struct {
	Subject string
	ID      string
	// Coalesced is the extension attribute coalesced: 0 for an event of one change.
	Coalesced int
	At        time.Duration
}

// sinkServer is a CloudEvents receiver on loopback. In binary mode it reads only the
// headers and drains the body, so the sink costs as little CPU as possible: on two cores it
// competes with the operator, the API server and etcd. Batched requests are decoded.
type sinkServer struct {
	URL     string
	srv     *http.Server
	onEvent atomic.Pointer[func(delivery)]
	// conns counts the connections accepted: with keep-alive, a handful per sender.
	conns atomic.Int64
	// requests counts the requests served.
	requests atomic.Int64
	// gate, while set, holds every request until it is closed (see hold).
	gate atomic.Pointer[chan struct{}]
}

func startSink() (*sinkServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sinkServer{URL: "http://" + ln.Addr().String() + "/events"}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, state http.ConnState) {
			if state == http.StateNew {
				s.conns.Add(1)
			}
		}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			panic(err)
		}
	}()
	return s, nil
}

func (s *sinkServer) serve(w http.ResponseWriter, r *http.Request) {
	if gate := s.gate.Load(); gate != nil {
		select {
		case <-*gate:
		case <-r.Context().Done():
			return
		}
	}
	at := now()
	s.requests.Add(1)
	if r.Header.Get("Content-Type") == sink.BatchContentType {
		s.serveBatch(w, r, at)
		return
	}
	_, _ = io.Copy(io.Discard, r.Body)
	subject := r.Header.Get("Ce-Subject")
	if r.Header.Get("Ce-Id") == "" || subject == "" || !strings.HasPrefix(r.Header.Get("Ce-Type"), "io.dynamicnotifier.") {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if fn := s.onEvent.Load(); fn != nil {
		coalesced, _ := strconv.Atoi(r.Header.Get("Ce-" + pipeline.CoalescedExtension))
		(*fn)(delivery{Subject: subject, ID: r.Header.Get("Ce-Id"), Coalesced: coalesced, At: at})
	}
	w.WriteHeader(http.StatusNoContent)
}

// serveBatch reads a batched-mode request: every event in it arrived at the same time.
func (s *sinkServer) serveBatch(w http.ResponseWriter, r *http.Request, at time.Duration) {
	var batch []struct {
		ID      string `json:"id"`
		Type    string `json:"type"`
		Subject string `json:"subject"`
	}
	if err := json.NewDecoder(r.Body).Decode(&batch); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	fn := s.onEvent.Load()
	for _, ce := range batch {
		if ce.ID == "" || ce.Subject == "" || !strings.HasPrefix(ce.Type, "io.dynamicnotifier.") {
			continue // not a CloudEvent of ours: not counted
		}
		if fn != nil {
			(*fn)(delivery{Subject: ce.Subject, ID: ce.ID, At: at})
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// hold makes requests wait until the returned release is called: senders queue up
// behind the requests they have in flight.
func (s *sinkServer) hold() (release func()) {
	gate := make(chan struct{})
	s.gate.Store(&gate)
	return func() {
		s.gate.Store(nil)
		close(gate)
	}
}

// handle routes deliveries to fn until the next call; nil ignores them.
func (s *sinkServer) handle(fn func(delivery)) {
	if fn == nil {
		s.onEvent.Store(nil)
		return
	}
	s.onEvent.Store(&fn)
}

// closeIdle drops the keep-alive connections the operator left open, so their goroutines
// do not count against the operator when goroutines are compared with a baseline.
func (s *sinkServer) closeIdle() { s.srv.SetKeepAlivesEnabled(false); s.srv.SetKeepAlivesEnabled(true) }

func (s *sinkServer) close() { _ = s.srv.Close() }

// epoch anchors now: durations since it are monotonic, unlike wall-clock timestamps.
var epoch = time.Now()

func now() time.Duration { return time.Since(epoch) }
