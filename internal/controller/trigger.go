package controller

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

// trigger asks for reconciles from outside the API: informer state changes at once,
// counter changes at most once per interval per subscription, so status writes stay rare
// however many events flow.
type trigger struct {
	interval time.Duration
	out      chan event.GenericEvent

	mu     sync.Mutex
	urgent map[types.NamespacedName]bool
	later  map[types.NamespacedName]bool
	wake   chan struct{}
}

func newTrigger(interval time.Duration) *trigger {
	return &trigger{interval: interval, out: make(chan event.GenericEvent, 1024),
		urgent: map[types.NamespacedName]bool{}, later: map[types.NamespacedName]bool{},
		wake: make(chan struct{}, 1)}
}

// Now asks for a reconcile of nn as soon as possible.
func (t *trigger) Now(nn types.NamespacedName) {
	t.mu.Lock()
	t.urgent[nn] = true
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// Soon asks for a reconcile of nn within the interval. Cheap enough to call per event.
func (t *trigger) Soon(nn types.NamespacedName) {
	t.mu.Lock()
	t.later[nn] = true
	t.mu.Unlock()
}

// Start feeds the controller until ctx ends (a manager Runnable).
func (t *trigger) Start(ctx context.Context) error {
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	for {
		var batch map[types.NamespacedName]bool
		select {
		case <-ctx.Done():
			return nil
		case <-t.wake:
			t.mu.Lock()
			batch, t.urgent = t.urgent, map[types.NamespacedName]bool{}
			t.mu.Unlock()
		case <-tick.C:
			t.mu.Lock()
			batch, t.later = t.later, map[types.NamespacedName]bool{}
			t.mu.Unlock()
		}
		for nn := range batch {
			obj := &notifyv1.WatchSubscription{}
			obj.Name, obj.Namespace = nn.Name, nn.Namespace
			select {
			case t.out <- event.GenericEvent{Object: obj}:
			case <-ctx.Done():
				return nil
			}
		}
	}
}
