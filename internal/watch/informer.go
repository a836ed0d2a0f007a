package watch

import (
	"context"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// informer is one reflector feeding a lean view of one (resource, scope) and a fan-out.
// The reflector calls the ReflectorStore methods from one goroutine; mu guards the view and
// the subscriber set, so joining and fan-out are ordered.
type informer struct {
	reg *Registry
	key Key
	// stream is key.String(), named once: every event carries it.
	stream string
	log    logr.Logger

	// ctx ends when the informer stops or stops watching.
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	subs map[string]*subscriber
	// groups index subs by filter signature, so a change is prefiltered once per distinct
	// filter.
	groups  []*group
	objects map[string]record
	synced  bool
	err     error
	// listing is the list being streamed into the view, nil between lists (list.go).
	listing *listing
	// olds holds full objects only while some subscriber needs the object before an
	// update (keepOld of them); nil otherwise. oldsComplete is true once it holds every
	// object in scope; oldsFilling is closed when a fill in progress ends, and oldsChanged
	// has the keys changed since that fill's list (see fillOlds).
	olds         map[string]*unstructured.Unstructured
	keepOld      int
	oldsComplete bool
	oldsFilling  chan struct{}
	oldsChanged  map[string]bool
	// viewRV is the resourceVersion the view is at: the last change applied to it.
	viewRV uint64
	// relists counts the lists after the first (watch gaps).
	relists int
	// listRV is the resourceVersion of the last list; seen is how far the stream has been
	// handed to subscribers (the checkpoint when nothing is open), seenAt about when.
	listRV, seen uint64
	seenAt       time.Time
	resume       *resumeState
}

func newInformer(reg *Registry, key Key) *informer {
	stream := key.String()
	ctx, cancel := context.WithCancel(reg.ctx)
	return &informer{reg: reg, key: key, stream: stream, log: reg.log.WithValues("informer", stream),
		ctx: ctx, cancel: cancel, subs: map[string]*subscriber{}, objects: map[string]record{},
		done: make(chan struct{})}
}

// stop ends the reflector and releases the view. Called with the registry lock held.
func (i *informer) stop() {
	i.cancel()
	i.mu.Lock()
	if i.resume != nil && i.resume.timer != nil {
		i.resume.timer.Stop()
	}
	i.resume = nil
	i.endListing()
	for _, s := range i.subs {
		s.cancel()
	}
	i.subs = map[string]*subscriber{}
	i.groups = nil
	i.objects = nil
	i.mu.Unlock()
}

func (i *informer) subscriberCount() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return len(i.subs)
}

func (i *informer) state() State {
	i.mu.Lock()
	defer i.mu.Unlock()
	return State{Synced: i.synced, Err: i.err}
}

// observe records the outcome of a LIST or WATCH call for State.
func (i *informer) observe(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	i.mu.Lock()
	changed := (err == nil) != (i.err == nil) || err != nil && i.err != nil && err.Error() != i.err.Error()
	i.err = err
	i.mu.Unlock()
	if changed {
		if err != nil {
			i.log.V(1).Info("Watch failing", "error", err.Error())
		}
		i.reg.onChange(i.key)
	}
}
