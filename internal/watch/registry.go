// Package watch is the registry of shared watches. It runs one informer per distinct
// (resource, namespace scope) among the active subscriptions, fans each change out to the
// subscribers whose filters match, starts an informer with its first subscriber and stops it
// with its last. It knows nothing about sinks: subscribers receive events through a Receiver
// that must not block.
package watch

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

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

// CheckpointStore keeps checkpoints across restarts.
type CheckpointStore interface {
	Load(ctx context.Context) (map[string]Point, error)
	Save(ctx context.Context, points map[string]Point) error
}

// Drainer is a Receiver that can wait for what it holds to be finished with.
type Drainer interface {
	Drain(ctx context.Context) bool
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
	// points are loaded checkpoints not yet taken by an informer, by checkpoint name.
	points map[string]Point
	// loaded is closed once points are known; Subscribe waits for it.
	loaded chan struct{}
	store  CheckpointStore
	// Options for checkpoints and shutdown; see Checkpointing.
	checkpointInterval, shutdownGrace time.Duration
	// saveSoon asks for a save before the interval: a subscriber got its first checkpoint.
	saveSoon chan struct{}
	// saveFailing is owned by the save loop.
	saveFailing bool
}

// New returns a registry watching through client, which NewClient builds as the informers
// expect. onChange is called, without blocking, whenever an informer's State changes.
func New(client dynamic.Interface, log logr.Logger, onChange func(Key)) *Registry {
	ctx, cancel := context.WithCancel(context.Background())
	if onChange == nil {
		onChange = func(Key) {}
	}
	loaded := make(chan struct{})
	close(loaded)
	return &Registry{client: client, log: log, onChange: onChange, ctx: ctx, cancel: cancel,
		informers: map[Key]*informer{}, points: map[string]Point{}, loaded: loaded, saveSoon: make(chan struct{}, 1)}
}

// checkpointSoon asks the save loop to save now rather than at the next interval, so a
// subscriber that just started has a checkpoint before a crash could find it without one.
func (r *Registry) checkpointSoon() {
	select {
	case r.saveSoon <- struct{}{}:
	default:
	}
}

// Subscribe adds sub to the informer for key, starting it if needed. The returned function
// removes the subscriber; the informer stops when its last subscriber leaves.
//
// With checkpoints, Subscribe first waits (until the registry stops) for them to be loaded,
// so a restarted informer resumes every subscriber it had.
func (r *Registry) Subscribe(key Key, sub Subscriber) (unsubscribe func()) {
	select {
	case <-r.loaded:
	case <-r.ctx.Done():
	}
	r.mu.Lock()
	inf, ok := r.informers[key]
	var stale *Point
	if !ok {
		inf = newInformer(r, key)
		r.informers[key] = inf
		inf.startResume(r.takePoints(key.String()))
		inf.start()
	} else if p, found := r.points[sub.Checkpoint]; found && sub.Checkpoint != "" && p.Stream == key.String() {
		delete(r.points, sub.Checkpoint)
		stale = &p
	}
	s := inf.add(sub, stale)
	r.mu.Unlock()

	var once sync.Once
	return func() { once.Do(func() { r.unsubscribe(inf, s) }) }
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
// It lets the registry run as a manager Runnable.
func (r *Registry) Start(ctx context.Context) error {
	if r.store == nil {
		<-ctx.Done()
	} else {
		r.load(ctx)
		r.shutdown(r.saveLoop(ctx))
	}
	r.Stop()
	return nil
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
