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
	queues  []chan plainChange
	posters sync.WaitGroup
	// failed is the first error a poster saw; a floor that lost requests is no floor.
	mu     sync.Mutex
	failed error
}

type plainChange struct {
	subject string
	id      string
	body    []byte
}

// startPlainFanOut watches configMaps in ns and posts each change subs times to url.
func (h *harness) startPlainFanOut(ctx context.Context, ns string, subs int, url string) (*plainFanOut, error) {
	client, err := sink.NewClients(sink.ClientOptions{}).For(sink.TLSMaterial{})
	if err != nil {
		return nil, err
	}
	p := &plainFanOut{queues: make([]chan plainChange, subs)}
	for i := range p.queues {
		p.queues[i] = make(chan plainChange, 4096)
		p.posters.Go(func() {
			for c := range p.queues[i] {
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
			id: string(u.GetUID()) + "-" + u.GetResourceVersion(), body: body}
		for _, q := range p.queues {
			q <- c
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

// postCloudEvent sends c as a binary-mode CloudEvent from source, as the operator would.
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
		close(q)
	}
	p.posters.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}
