package watch

import (
	"math"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// catchUpBufferLimit bounds the live events kept for a subscriber while its initial LIST
// runs; past it the buffer is dropped and the LIST starts over, so nothing is lost.
const catchUpBufferLimit = 10000

// catchUp sends a joining subscriber an Added for every object in scope, from a LIST rather
// than from a cache, then the changes buffered since it joined that the LIST did not cover.
func (i *informer) catchUp(s *subscriber) {
	backoff := wait.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.1, Steps: math.MaxInt32, Cap: 30 * time.Second}
	for {
		listRV, err := i.listInitial(s)
		if err == nil {
			if i.finishCatchUp(s, listRV) {
				return
			}
			i.log.Info("Changes outran the initial list; listing again", "subscriber", s.ID)
			continue
		}
		if s.ctx.Err() != nil {
			return
		}
		i.log.V(1).Info("Initial list failed, retrying", "subscriber", s.ID, "error", err.Error())
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(backoff.Step()):
		}
	}
}

// listInitial sends s an Added for every object in scope that its filter matches. It lists
// every page first, one right after the other, and only then hands the objects over:
// waiting for a slow sink between pages would hold the list's continue token until it
// expired and the list had to start over.
func (i *informer) listInitial(s *subscriber) (uint64, error) {
	ri := i.reg.client.Resource(i.key.GVR).Namespace(i.key.Namespace)
	opts := metav1.ListOptions{Limit: 500}
	if s.Filter != nil && s.Filter.LabelSelector() != nil {
		opts.LabelSelector = s.Filter.LabelSelector().String()
	}
	var listRV uint64
	var matched []*unstructured.Unstructured
	for {
		list, err := retryBriefly(s.ctx, func() (*unstructured.UnstructuredList, error) {
			return ri.List(s.ctx, opts)
		})
		if err != nil {
			return 0, err
		}
		if opts.Continue == "" {
			listRV, _ = parseRV(list.GetResourceVersion())
		}
		for idx := range list.Items {
			u := &list.Items[idx]
			u.SetManagedFields(nil)
			if s.Filter == nil || s.Filter.Matches(event.Added, u) {
				matched = append(matched, u)
			}
		}
		if opts.Continue = list.GetContinue(); opts.Continue == "" {
			break
		}
	}
	for idx, u := range matched {
		ev := event.New(event.Added, i.key.GVR, u)
		ev.Stream, ev.Initial = i.stream, true
		if s.Progress != nil {
			s.Progress.offered(ev)
		}
		if err := s.Receiver.Put(s.ctx, ev); err != nil {
			if s.Progress != nil {
				s.Progress.Done(ev)
			}
			return 0, err
		}
		matched[idx] = nil // handed over: let the pipeline own it
	}
	return listRV, nil
}

// finishCatchUp switches s to live events; false when its buffer overflowed and the LIST
// must be repeated (objects are then sent again as Added, with the same event ids).
func (i *informer) finishCatchUp(s *subscriber, listRV uint64) bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	if s.buffer.overflowed {
		s.buffer.reset()
		return false
	}
	for _, ev := range s.buffer.events {
		if ev.StreamRV != 0 && ev.StreamRV <= listRV {
			continue
		}
		s.receive(ev)
	}
	s.buffer.reset()
	s.catchingUp = false
	s.floor = listRV
	i.reg.checkpointSoon()
	return true
}
