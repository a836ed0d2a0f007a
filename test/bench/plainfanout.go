package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

// plainFanOut is the least a watcher that sends one request per subscriber and change has
// to do: a raw watch whose every change goes to the sink once per subscriber as a
// binary-mode CloudEvent, each subscriber a goroutine posting in order over the sinks'
// HTTP client (the same the drain baseline uses), with no operator running. Ours over it
// is what the operator adds to the requests; it over raw is what the requests cost here.
type plainFanOut struct {
	watch   *rawWatch
	queues  []*plainQueue
	posters sync.WaitGroup
	// failed is the first error a poster saw; a floor that lost requests is no floor.
	mu     sync.Mutex
	failed error
}

type plainChange struct {
	subject string
	id      string
	// time is the CloudEvents time attribute, formatted once per change as the operator does.
	time string
	body []byte
}

// plainQueue is one subscriber's changes in order; it grows as they come, as the
// operator's lanes do. A channel deep enough for the fan-out scenario's backlog held
// 29 MB for 100 subscribers: a live heap that made the garbage collector run half as often
// as next to the operator, and the floor's tail shorter than what it measures.
type plainQueue struct {
	mu      sync.Mutex
	changes []plainChange
	closed  bool
	ready   chan struct{} // one token: changes came, or the queue closed
}

func newPlainQueue() *plainQueue { return &plainQueue{ready: make(chan struct{}, 1)} }

func (q *plainQueue) put(c plainChange) {
	q.mu.Lock()
	q.changes = append(q.changes, c)
	q.mu.Unlock()
	q.signal()
}

func (q *plainQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

func (q *plainQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// take waits for the next change; false once the queue is closed and empty.
func (q *plainQueue) take() (plainChange, bool) {
	for {
		q.mu.Lock()
		if len(q.changes) > 0 {
			c := q.changes[0]
			q.changes[0] = plainChange{}
			q.changes = q.changes[1:]
			q.mu.Unlock()
			return c, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return plainChange{}, false
		}
		<-q.ready
	}
}

// startPlainFanOut watches configMaps in ns and posts each change subs times to url.
func (h *harness) startPlainFanOut(ctx context.Context, ns string, subs int, url string) (*plainFanOut, error) {
	client, err := sink.NewClients(sink.ClientOptions{}).For(sink.TLSMaterial{})
	if err != nil {
		return nil, err
	}
	p := &plainFanOut{queues: make([]*plainQueue, subs)}
	for i := range p.queues {
		q := newPlainQueue()
		p.queues[i] = q
		p.posters.Go(func() {
			for c, ok := q.take(); ok; c, ok = q.take() {
				if err := postCloudEvent(ctx, client, url, "/plain/"+strconv.Itoa(i), c); err != nil {
					p.mu.Lock()
					p.failed = cmpErr(p.failed, err)
					p.mu.Unlock()
				}
			}
		})
	}
	p.watch, err = h.startRawWatch(ctx, configMaps, ns, func(u *unstructured.Unstructured, _ time.Duration) {
		body, err := json.Marshal(u.Object)
		if err != nil {
			return
		}
		c := plainChange{subject: "/api/v1/namespaces/" + ns + "/configmaps/" + u.GetName(),
			id: string(u.GetUID()) + "-" + u.GetResourceVersion(), time: time.Now().UTC().Format(time.RFC3339Nano),
			body: body}
		for _, q := range p.queues {
			q.put(c)
		}
	})
	if err != nil {
		_ = p.stop() // the watch failed to start; that error is the one to report
		return nil, err
	}
	return p, nil
}

func cmpErr(first, next error) error {
	if first != nil {
		return first
	}
	return next
}

// postCloudEvent sends c as a binary-mode CloudEvent from source with the headers the
// operator sends: a floor whose requests were smaller would cost the sink less to parse.
func postCloudEvent(ctx context.Context, client *http.Client, url, source string, c plainChange) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(c.body))
	if err != nil {
		return err
	}
	req.Header["Content-Type"] = []string{"application/json"}
	req.Header["Ce-Specversion"] = []string{"1.0"}
	req.Header["Ce-Id"] = []string{c.id}
	req.Header["Ce-Type"] = []string{"io.dynamicnotifier.resource.added"}
	req.Header["Ce-Source"] = []string{source}
	req.Header["Ce-Subject"] = []string{c.subject}
	req.Header["Ce-Time"] = []string{c.time}
	req.Header["User-Agent"] = []string{sink.UserAgent}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("sink answered %s", resp.Status)
	}
	return nil
}

// withPlainFanOut runs writes in a fresh namespace (prefix) with a plain fan-out to subs
// subscribers on it, and deletes the namespace's ConfigMaps after.
func (h *harness) withPlainFanOut(ctx context.Context, prefix string, subs int, writes func(ns string) error) error {
	ns, err := h.namespace(ctx, prefix)
	if err != nil {
		return err
	}
	defer func() { _ = h.deleteConfigMaps(context.WithoutCancel(ctx), ns) }()
	fanOut, err := h.startPlainFanOut(ctx, ns, subs, h.sink.URL)
	if err != nil {
		return err
	}
	return errors.Join(writes(ns), fanOut.stop())
}

// stop ends the watch, lets the posters send what they hold and returns the first error.
func (p *plainFanOut) stop() error {
	if p.watch != nil {
		p.watch.stop()
	}
	for _, q := range p.queues {
		q.close()
	}
	p.posters.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}
