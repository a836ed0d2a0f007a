package watch

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/filter"
)

// Key names one shared informer: a resource and a namespace scope. Namespace "" means all
// namespaces, or the whole cluster for cluster-scoped resources.
type Key struct {
	GVR       schema.GroupVersionResource
	Namespace string
}

func (k Key) String() string {
	scope := k.Namespace
	if scope == "" {
		scope = "*"
	}
	return fmt.Sprintf("%s.%s/%s@%s", k.GVR.Resource, k.GVR.Group, k.GVR.Version, scope)
}

// Receiver takes a subscriber's events. Offer is called on the informer's path and must
// return at once; Put may wait and is used for initial events, off that path.
type Receiver interface {
	// Offer hands over an event without blocking; false means it was dropped.
	Offer(ev *event.Event) bool
	// Put hands over an event, waiting for room until ctx ends.
	Put(ctx context.Context, ev *event.Event) error
}

// Subscriber is one subscription's interest in one informer.
type Subscriber struct {
	// ID is unique among the subscribers of a key.
	ID string
	// Filter selects the changes the subscriber wants; nil wants all.
	Filter *filter.Filter
	// SendInitialEvents asks for an Added event for every object in scope when joining.
	SendInitialEvents bool
	// NeedsOldObject asks for the object before each update (for payloads that carry it);
	// filters that need it say so themselves.
	NeedsOldObject bool
	Receiver       Receiver
	// Checkpoint names the subscriber across restarts (unlike ID, it stays the same when the
	// subscription's spec changes); empty means it is not checkpointed.
	Checkpoint string
	// Progress learns from the receiver which events are finished with; required for
	// checkpoints.
	Progress *Progress
	// OnResync is told when the subscriber is sent a Resync event.
	OnResync func(event.ResyncInfo)
}

// State is what an informer can tell about itself.
type State struct {
	// Synced is true once the first list has been received.
	Synced bool
	// Err is the last error listing or watching, nil once that works again.
	Err error
}

// Registry owns the shared informers. Safe for concurrent use.
type Registry struct {
	client   dynamic.Interface
	log      logr.Logger
	onChange func(Key)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	informers map[Key]*informer
	// points are restored checkpoints not yet taken by an informer.
	points map[PointKey]Point
	// restored is closed once points are known; Subscribe waits for it.
	restored     chan struct{}
	restoredOnce sync.Once
	// saveSoon asks for a save before the interval: a subscriber got its first checkpoint.
	saveSoon chan struct{}
}

// New returns a registry watching through client, which NewClient builds as the informers
// expect. onChange is called, without blocking, whenever an informer's State changes.
func New(client dynamic.Interface, log logr.Logger, onChange func(Key)) *Registry {
	ctx, cancel := context.WithCancel(context.Background())
	if onChange == nil {
		onChange = func(Key) {}
	}
	restored := make(chan struct{})
	close(restored)
	return &Registry{client: client, log: log, onChange: onChange, ctx: ctx, cancel: cancel,
		informers: map[Key]*informer{}, points: map[PointKey]Point{}, restored: restored, saveSoon: make(chan struct{}, 1)}
}

// Handle is a subscriber's place in one informer.
type Handle struct {
	reg  *Registry
	inf  *informer
	s    *subscriber
	once sync.Once
}

// Unsubscribe removes the subscriber; the informer stops when its last subscriber leaves.
// Calling it again, or after Resubscribe took the place over, does nothing.
func (h *Handle) Unsubscribe() { h.once.Do(func() { h.reg.unsubscribe(h.inf, h.s) }) }

// CaughtUp tells whether the subscriber has been handed its initial events, or asked for
// none.
func (h *Handle) CaughtUp() bool {
	h.inf.mu.Lock()
	defer h.inf.mu.Unlock()
	return !h.s.catchingUp
}

// Subscribe adds sub to the informer for key, starting it if needed.
//
// With checkpoints, Subscribe first waits (until the registry stops) for them to be
// restored, so a restarted informer resumes every subscriber it had. A subscriber that
// needs old objects joins once the informer keeps them for every object in scope.
func (r *Registry) Subscribe(key Key, sub Subscriber) *Handle {
	return r.join(key, sub, nil)
}

// Resubscribe puts sub in the place of h's subscriber in one step (a subscription's spec
// changed): every change goes to exactly one of the two, and sub goes on from where the old
// one was in the stream. Its initial events are sent only when sub asks for them.
func (r *Registry) Resubscribe(h *Handle, sub Subscriber) *Handle {
	nh := r.join(h.inf.key, sub, h)
	h.once.Do(func() {}) // the old handle's place is taken: it unsubscribes nothing
	return nh
}

func (r *Registry) join(key Key, sub Subscriber, replacing *Handle) *Handle {
	select {
	case <-r.restored:
	case <-r.ctx.Done():
	}
	for {
		r.mu.Lock()
		inf, ok := r.informers[key]
		var stale *Point
		pk := PointKey{Subscriber: sub.Checkpoint, Stream: key.String()}
		if !ok {
			inf = newInformer(r, key)
			r.informers[key] = inf
			inf.startResume(r.takePoints(key.String()))
			inf.start()
		} else if p, found := r.points[pk]; found && sub.Checkpoint != "" {
			delete(r.points, pk)
			stale = &p
		}
		var release func()
		if sub.needsOld() {
			release = inf.keepOlds()
			if !inf.hasOlds() {
				r.mu.Unlock()
				inf.fillOlds()
				r.mu.Lock()
				if r.informers[key] != inf { // stopped while filling: start over
					if stale != nil {
						r.points[pk] = *stale
					}
					r.mu.Unlock()
					release()
					continue
				}
			}
		}
		var s *subscriber
		if replacing != nil && replacing.inf == inf {
			s = inf.replace(replacing.s, sub)
		} else {
			s = inf.add(sub, stale)
		}
		r.mu.Unlock()
		if release != nil {
			release()
		}
		return &Handle{reg: r, inf: inf, s: s}
	}
}

func (r *Registry) unsubscribe(inf *informer, s *subscriber) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if inf.remove(s) == 0 && r.informers[inf.key] == inf {
		delete(r.informers, inf.key)
		inf.stop()
	}
}

// State reports the informer for key; false when none runs.
func (r *Registry) State(key Key) (State, bool) {
	r.mu.Lock()
	inf, ok := r.informers[key]
	r.mu.Unlock()
	if !ok {
		return State{}, false
	}
	return inf.state(), true
}

// Keys lists the running informers, sorted.
func (r *Registry) Keys() []Key {
	r.mu.Lock()
	keys := slices.Collect(maps.Keys(r.informers))
	r.mu.Unlock()
	slices.SortFunc(keys, func(a, b Key) int {
		if c := compareStrings(a.String(), b.String()); c != 0 {
			return c
		}
		return 0
	})
	return keys
}

// Subscribers counts the subscribers of the informer for key.
func (r *Registry) Subscribers(key Key) int {
	r.mu.Lock()
	inf, ok := r.informers[key]
	r.mu.Unlock()
	if !ok {
		return 0
	}
	return inf.subscriberCount()
}

// Start blocks until ctx ends, then stops every informer and waits for their goroutines.
// It lets the registry run as a manager Runnable when nothing else (a checkpoint keeper)
// owns its end.
func (r *Registry) Start(ctx context.Context) error {
	<-ctx.Done()
	r.Stop()
	return nil
}

// StopWatching ends every reflector, so no more events reach the subscribers, and waits
// for them until ctx ends; false if some had not ended. Subscribers stay in place, so
// their checkpoints can still be read.
func (r *Registry) StopWatching(ctx context.Context) bool {
	return r.StopWatchingSome(ctx, func(Key) bool { return true })
}

// StopWatchingSome is StopWatching for the informers whose key matches: a replica handing
// some streams over to another stops only those.
func (r *Registry) StopWatchingSome(ctx context.Context, match func(Key) bool) bool {
	r.mu.Lock()
	infs := make([]*informer, 0, len(r.informers))
	for key, inf := range r.informers {
		if !match(key) {
			continue
		}
		inf.cancel()
		infs = append(infs, inf)
	}
	r.mu.Unlock()
	for _, inf := range infs {
		select {
		case <-inf.done:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// Stop stops every informer and waits for their goroutines to end.
func (r *Registry) Stop() {
	r.mu.Lock()
	for key, inf := range r.informers {
		delete(r.informers, key)
		inf.stop()
	}
	r.mu.Unlock()
	r.cancel()
	r.Restore(nil) // nobody waits for checkpoints that will not come
	r.wg.Wait()
}

// NeedLeaderElection: only the leader watches and delivers.
func (r *Registry) NeedLeaderElection() bool { return true }

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
