package delivery

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

// fanOutSubscribers is how many subscriptions every change goes to in the fan-out benchmarks.
const fanOutSubscribers = 100

// processCPU is the CPU time this process used so far, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// fanOutSink is a loopback sink that drains each request and answers 204; wg counts the
// requests still due.
func fanOutSink(b *testing.B) (*httptest.Server, *sync.WaitGroup) {
	var wg sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
		wg.Done()
	}))
	b.Cleanup(srv.Close)
	return srv, &wg
}

// timeFanOut times b.N changes, each offered to every subscriber by offer and delivered
// before the next, and reports the process's CPU per delivery, the server's included.
func timeFanOut(b *testing.B, wg *sync.WaitGroup, offer func(i int)) {
	cpu := processCPU()
	b.ResetTimer()
	for i := range b.N {
		wg.Add(fanOutSubscribers)
		offer(i)
		wg.Wait()
	}
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu)/float64(b.N*fanOutSubscribers), "cpu-ns/delivery")
}

// BenchmarkFanOut100PipelinesToHTTPSink is every change delivered by 100 pipelines, one
// request each, to one loopback sink, as the latency scenario of test/bench has it without
// the API server. Compare with BenchmarkFanOut100PlainPostersToHTTPSink: the same
// requests without the pipelines.
func BenchmarkFanOut100PipelinesToHTTPSink(b *testing.B) {
	srv, wg := fanOutSink(b)
	client, err := sink.NewClients(sink.ClientOptions{}).For(sink.TLSMaterial{})
	if err != nil {
		b.Fatal(err)
	}
	pipelines := make([]*Pipeline, fanOutSubscribers)
	for i := range pipelines {
		pipelines[i] = Start(Options{Sink: &sink.Webhook{URL: srv.URL, Client: client},
			Source: "/apis/notify.example/v1/namespaces/bench/watchsubscriptions/w" + strconv.Itoa(i)})
		defer pipelines[i].Stop()
	}
	evs := benchEvents(b, b.N)
	timeFanOut(b, wg, func(i int) {
		for _, p := range pipelines {
			p.Offer(evs[i])
		}
	})
}

// BenchmarkFanOut100PlainPostersToHTTPSink is the floor of the fan-out above: a goroutine
// per subscriber posting each change in binary mode with the same headers, the same
// client and no timeout.
func BenchmarkFanOut100PlainPostersToHTTPSink(b *testing.B) {
	srv, wg := fanOutSink(b)
	client, err := sink.NewClients(sink.ClientOptions{}).For(sink.TLSMaterial{})
	if err != nil {
		b.Fatal(err)
	}
	evs := benchEvents(b, b.N)
	queues := make([]chan int, fanOutSubscribers)
	for i := range queues {
		queues[i] = make(chan int, 1)
		defer close(queues[i])
		source := "/apis/notify.example/v1/namespaces/bench/watchsubscriptions/w" + strconv.Itoa(i)
		go func() {
			for n := range queues[i] {
				if err := postPlain(client, srv.URL, source, evs[n]); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	timeFanOut(b, wg, func(i int) {
		for _, q := range queues {
			q <- i
		}
	})
}

func postPlain(client *http.Client, url, source string, ev *event.Event) error {
	data, err := ev.Data()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header["Content-Type"] = []string{"application/json"}
	req.Header["Ce-Specversion"] = []string{"1.0"}
	req.Header["Ce-Id"] = []string{ev.ID()}
	req.Header["Ce-Type"] = []string{sink.CloudEventType(ev.Type)}
	req.Header["Ce-Source"] = []string{source}
	req.Header["Ce-Subject"] = []string{ev.ObjectPath()}
	req.Header["Ce-Time"] = []string{ev.Time()}
	req.Header["User-Agent"] = []string{sink.UserAgent}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}
