package watch

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	apiwatch "k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/filter"
)

// catchUpBufferLimit bounds the live events kept for a subscriber while its initial LIST
// runs; past it the buffer is dropped and the LIST starts over, so nothing is lost.
const catchUpBufferLimit = 10000

// record is all the informer keeps per object: enough to tell real changes from repeats,
// to synthesize a Deleted after a gap, and to match label selectors on it. Full objects go
// from the watch stream to the subscribers and are not retained here.
type record struct {
	uid    types.UID
	rv     string
	labels map[string]string
	// hash and metaHash fingerprint the object and its metadata without resourceVersion
	// and managedFields, to drop updates that change nothing anyone can see.
	hash, metaHash uint64
}

// informer is one reflector feeding a lean view of one (resource, scope) and a fan-out.
// The reflector calls the ReflectorStore methods from one goroutine; mu guards the view and
// the subscriber set, so joining and fan-out are ordered.
type informer struct {
	reg *Registry
	key Key
	// stream is key.String(), named once: every event carries it.
	stream string
	log    logr.Logger

	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	subs map[string]*subscriber
	// groups index subs by filter signature, so a change is matched once per distinct
	// filter; subscribers whose filter must run alone are in groups of their own.
	groups  []*group
	objects map[string]record
	synced  bool
	err     error
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

type subscriber struct {
	Subscriber
	ctx    context.Context
	cancel context.CancelFunc

	// Guarded by informer.mu.
	catchingUp bool
	buffer     []*event.Event
	overflowed bool
	floor      uint64 // events at or below this resourceVersion were in the initial LIST
	// resumeFrom: replayed changes at or below it are not for this subscriber (its
	// checkpoint, or where the stream was when it joined).
	resumeFrom uint64
	// point is the checkpoint it resumed from; zero when it did not resume.
	point Point
}

func (s *subscriber) resumed() bool { return s.point.Stream != "" }

func newInformer(reg *Registry, key Key) *informer {
	stream := key.String()
	return &informer{reg: reg, key: key, stream: stream, log: reg.log.WithValues("informer", stream),
		subs: map[string]*subscriber{}, objects: map[string]record{}, done: make(chan struct{})}
}

// group is subscribers with equal filters.
type group struct {
	filter *filter.Filter
	subs   []*subscriber
}

// regroup rebuilds the filter index. Called with mu held whenever subs changes.
func (i *informer) regroup() {
	bySig := map[string]*group{}
	groups := make([]*group, 0, len(i.groups))
	for _, s := range i.subs {
		sig := s.Filter.Signature()
		g := bySig[sig]
		if g == nil || sig == "" {
			g = &group{filter: s.Filter}
			groups = append(groups, g)
			if sig != "" {
				bySig[sig] = g
			}
		}
		g.subs = append(g.subs, s)
	}
	i.groups = groups
}

func (i *informer) start() {
	ctx, cancel := context.WithCancel(i.reg.ctx)
	i.cancel = cancel
	ri := i.reg.client.Resource(i.key.GVR).Namespace(i.key.Namespace)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			list, err := retryBriefly(ctx, func() (*unstructured.UnstructuredList, error) {
				return ri.List(ctx, opts)
			})
			i.observe(ctx, err)
			return list, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (apiwatch.Interface, error) {
			opts.ResourceVersion = i.watchFrom(opts.ResourceVersion)
			w, err := retryBriefly(ctx, func() (apiwatch.Interface, error) { return ri.Watch(ctx, opts) })
			i.observe(ctx, err)
			return w, err
		},
	}
	var lister cache.ListerWatcher = lw
	if i.resume != nil {
		// Resuming needs a list, then a watch from the checkpoint: the streaming list
		// (WatchList) would carry on from the present instead.
		lister = listThenWatch{lw}
	}
	reflector := cache.NewReflectorWithOptions(lister, &unstructured.Unstructured{}, i,
		cache.ReflectorOptions{Name: i.stream, Backoff: &reconnectBackoff})
	// The reflector retries failures with backoff and reports each through klog. Those
	// failures are already in the subscription's status, so keep them out of error logs.
	quietLog := logr.Discard()
	if sink := i.log.GetSink(); sink != nil {
		quietLog = logr.New(demoteErrors{sink})
	}
	quiet := klog.NewContext(ctx, quietLog)
	i.reg.wg.Go(func() {
		defer close(i.done)
		reflector.RunWithContext(quiet)
	})
}

// stop ends the reflector and releases the view. Called with the registry lock held.
func (i *informer) stop() {
	i.cancel()
	i.mu.Lock()
	if i.resume != nil && i.resume.timer != nil {
		i.resume.timer.Stop()
	}
	i.resume = nil
	for _, s := range i.subs {
		s.cancel()
	}
	i.subs = map[string]*subscriber{}
	i.groups = nil
	i.objects = nil
	i.mu.Unlock()
}

// add joins sub. stale is a checkpoint the informer can no longer serve (its resume window
// closed): the subscriber is told so with a Resync event.
func (i *informer) add(sub Subscriber, stale *Point) *subscriber {
	ctx, cancel := context.WithCancel(i.reg.ctx)
	s := &subscriber{Subscriber: sub, ctx: ctx, cancel: cancel, catchingUp: sub.SendInitialEvents}
	i.mu.Lock()
	if old, ok := i.subs[sub.ID]; ok {
		old.cancel()
		i.forgetOld(old)
	}
	var point *Point
	if i.resume != nil && sub.Checkpoint != "" {
		if p, ok := i.resume.waiting[sub.Checkpoint]; ok {
			point = &p
		}
	}
	switch {
	case point != nil:
		// Its initial events went out in an earlier life; it resumes instead.
		s.catchingUp, s.point = false, *point
		s.resumeFrom, _ = parseRV(point.ResourceVersion)
	case stale != nil:
		s.catchingUp, s.point = false, *stale
		s.resumeFrom = max(i.listRV, i.seen)
	case i.synced:
		s.resumeFrom = max(i.listRV, i.seen)
	default:
		s.resumeFrom = notJoinedYet
	}
	i.subs[sub.ID] = s
	i.regroup()
	if sub.Checkpoint != "" && i.synced {
		i.reg.checkpointSoon()
	}
	if point != nil {
		i.joinResume(s)
	} else if stale != nil {
		i.offerResync(s, ResyncCheckpointUnavailable, stale.ResourceVersion)
	}
	if s.needsOld() {
		i.holdOld()
	}
	i.mu.Unlock()
	if sub.SendInitialEvents {
		i.reg.wg.Go(func() { i.catchUp(s) })
	}
	return s
}

// replace puts sub in old's place in one step: it goes on from old's position in the
// stream (and resume state), and no change goes to both. Initial events are sent only if
// sub asks for them. Called with the registry lock held.
func (i *informer) replace(old *subscriber, sub Subscriber) *subscriber {
	ctx, cancel := context.WithCancel(i.reg.ctx)
	s := &subscriber{Subscriber: sub, ctx: ctx, cancel: cancel, catchingUp: sub.SendInitialEvents}
	i.mu.Lock()
	if i.subs[old.ID] == old {
		delete(i.subs, old.ID)
		s.resumeFrom, s.floor, s.point = old.resumeFrom, old.floor, old.point
		if !sub.SendInitialEvents && old.catchingUp {
			// Its live events waited for an initial list that is no longer wanted.
			for _, ev := range old.buffer {
				s.offer(ev)
			}
		}
		i.forgetOld(old)
	} else {
		s.resumeFrom = max(i.listRV, i.seen)
		if !i.synced {
			s.resumeFrom = notJoinedYet
		}
	}
	old.cancel()
	if prev, ok := i.subs[sub.ID]; ok && prev != old {
		prev.cancel()
		i.forgetOld(prev)
	}
	i.subs[sub.ID] = s
	i.regroup()
	if s.needsOld() {
		i.holdOld()
	}
	i.mu.Unlock()
	if sub.SendInitialEvents {
		i.reg.wg.Go(func() { i.catchUp(s) })
	}
	return s
}

func (i *informer) remove(s *subscriber) int {
	s.cancel()
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.subs[s.ID] == s {
		delete(i.subs, s.ID)
		i.regroup()
		i.forgetOld(s)
	}
	return len(i.subs)
}

// forgetOld stops keeping old objects when the last subscriber needing them leaves.
func (i *informer) forgetOld(s *subscriber) {
	if s.needsOld() {
		i.releaseOld()
	}
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

// The ReflectorStore methods below receive every change from the reflector.

func (i *informer) Add(obj any) error    { i.apply(event.Added, obj); return nil }
func (i *informer) Update(obj any) error { i.apply(event.Updated, obj); return nil }
func (i *informer) Delete(obj any) error { i.apply(event.Deleted, obj); return nil }
func (i *informer) Resync() error        { return nil }

// Bookmark is accepted so the reflector keeps resource versions fresh without a relist.
func (i *informer) Bookmark(string) error { return nil }

// UpdateResourceVersion is told how far the watch has come after each event and bookmark:
// everything up to rv has been handed to the subscribers.
func (i *informer) UpdateResourceVersion(resourceVersion string) {
	rv, ok := parseRV(resourceVersion)
	if !ok {
		return
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.resume != nil && i.resume.replaying && rv > i.listRV {
		i.replayed(rv, true)
	}
	if rv > i.seen {
		i.seen, i.seenAt = rv, time.Now()
	}
}

func (i *informer) apply(t event.Type, obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	u.SetManagedFields(nil)
	key := objectKey(u)
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.objects == nil { // stopped
		return
	}
	rv, rvOK := parseRV(u.GetResourceVersion())
	if i.replayed(rv, rvOK) {
		// A change made while no operator was watching: the view (listed after it) is
		// already newer, so it is only handed to subscribers whose checkpoint is older.
		ev := i.newEvent(t, u, rv)
		ev.Replayed = true
		i.fanOut(ev)
		return
	}
	if rvOK && rv > i.viewRV {
		i.viewRV = rv
	}
	if i.oldsChanged != nil {
		i.oldsChanged[key] = true
	}
	prev, known := i.objects[key]
	var old *unstructured.Unstructured
	if i.olds != nil {
		old = i.olds[key]
		if t == event.Deleted {
			delete(i.olds, key)
		} else {
			i.olds[key] = u
		}
	}
	if t == event.Deleted {
		delete(i.objects, key)
		i.fanOut(i.newEvent(t, u, rv))
		return
	}
	if known && prev.rv == u.GetResourceVersion() && prev.uid == u.GetUID() {
		return // a repeat, e.g. after a re-watch
	}
	rec := recordOf(u)
	i.objects[key] = rec
	if t == event.Updated && (!known || prev.uid != u.GetUID()) {
		t = event.Added
	}
	if t == event.Updated && rec.hash == prev.hash {
		return // only resourceVersion or managedFields changed: nothing to see
	}
	ev := i.newEvent(t, u, rv)
	if t == event.Updated {
		ev.OldObject = old
		ev.MetadataUnchanged = rec.metaHash == prev.metaHash
	}
	i.fanOut(ev)
}

// Replace receives a full list: the first one fills the view silently (its objects existed
// before anyone subscribed); later ones, after a watch gap, become the changes they imply.
func (i *informer) Replace(items []any, resourceVersion string) error {
	i.mu.Lock()
	if i.objects == nil {
		i.mu.Unlock()
		return nil
	}
	first := !i.synced
	listRV, _ := parseRV(resourceVersion)
	for _, item := range items {
		if u, ok := item.(*unstructured.Unstructured); ok {
			u.SetManagedFields(nil) // before any event shares the object
		}
	}
	var covered map[string]bool
	if first {
		i.listed(listRV)
	} else if i.resume != nil && i.resume.replaying {
		covered = i.gapRelisted(items, listRV)
	}
	seen := make(map[string]record, len(items))
	for _, item := range items {
		u, ok := item.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		key := objectKey(u)
		rec := recordOf(u)
		seen[key] = rec
		if first || covered[key] {
			continue
		}
		switch prev, known := i.objects[key]; {
		case !known || prev.uid != rec.uid:
			i.fanOut(i.newEvent(event.Added, u, streamRV(rec.rv)))
		case prev.rv != rec.rv && prev.hash != rec.hash:
			ev := i.newEvent(event.Updated, u, streamRV(rec.rv))
			ev.MetadataUnchanged = rec.metaHash == prev.metaHash
			if i.olds != nil {
				ev.OldObject = i.olds[key]
			}
			i.fanOut(ev)
		}
	}
	if !first {
		for key, prev := range i.objects {
			if _, still := seen[key]; !still {
				i.fanOut(i.newEvent(event.Deleted, i.tombstone(key, prev), streamRV(prev.rv)))
			}
		}
	}
	i.objects = seen
	if !first {
		i.listRV = listRV
		i.relists++
		if listRV > i.seen {
			i.seen, i.seenAt = listRV, time.Now()
		}
	}
	i.viewRV = max(i.viewRV, listRV)
	if i.olds != nil {
		i.olds = make(map[string]*unstructured.Unstructured, len(items))
		for _, item := range items {
			if u, ok := item.(*unstructured.Unstructured); ok {
				i.olds[objectKey(u)] = u
			}
		}
		i.oldsComplete = true
	}
	changed := !i.synced || i.err != nil
	i.synced, i.err = true, nil
	i.settleResume()
	i.mu.Unlock()
	if changed {
		i.reg.onChange(i.key)
	}
	return nil
}

// tombstone stands in for an object deleted while the watch was down: all that is known.
func (i *informer) tombstone(key string, rec record) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	u.SetNamespace(ns)
	u.SetName(name)
	u.SetUID(rec.uid)
	u.SetResourceVersion(rec.rv)
	u.SetLabels(rec.labels)
	return u
}

// listed takes the first list of the informer. Called with mu held.
func (i *informer) listed(listRV uint64) {
	i.listRV, i.seen, i.seenAt = listRV, listRV, time.Now()
	i.reg.checkpointSoon()
	for _, s := range i.subs {
		if s.resumeFrom == notJoinedYet {
			s.resumeFrom = listRV
		}
	}
	rs := i.resume
	if rs == nil {
		return
	}
	if rs.from < listRV { // changes were made since the checkpoints: replay them
		rs.replaying = true
		i.seen, i.seenAt = rs.from, rs.fromTime
	}
}

// newEvent builds an event of the stream; rv is u's resourceVersion as a number (see
// streamRV), passed in so apply parses it once per change.
func (i *informer) newEvent(t event.Type, u *unstructured.Unstructured, rv uint64) *event.Event {
	ev := event.New(t, i.key.GVR, u)
	ev.Stream, ev.StreamRV = i.stream, rv
	return ev
}

// fanOut hands ev to every matching subscriber. Called with mu held; never blocks.
func (i *informer) fanOut(ev *event.Event) {
	objLabels := filter.Labels(ev.Object)
	for _, g := range i.groups {
		if g.filter != nil && !g.filter.Match(ev, objLabels) {
			continue
		}
		for _, s := range g.subs {
			i.pass(s, ev)
		}
	}
	i.keepForWaiting(ev)
}

// deliverTo hands ev to s if s wants it. Called with mu held.
func (i *informer) deliverTo(s *subscriber, ev *event.Event) {
	if s.Filter != nil && !s.Filter.Match(ev, filter.Labels(ev.Object)) {
		return
	}
	i.pass(s, ev)
}

// pass hands a matching ev to s, unless s has it already. Called with mu held.
func (i *informer) pass(s *subscriber, ev *event.Event) {
	if ev.Replayed && ev.StreamRV != 0 && ev.StreamRV <= s.resumeFrom {
		return // it had this change before the restart, or joined after it
	}
	if s.catchingUp {
		if len(s.buffer) < catchUpBufferLimit && !s.overflowed {
			s.buffer = append(s.buffer, ev)
		} else {
			s.overflowed, s.buffer = true, nil
		}
		return
	}
	if s.floor != 0 {
		if ev.StreamRV != 0 && ev.StreamRV <= s.floor {
			return // already sent from the initial LIST
		}
		s.floor = 0 // watch events arrive in order: later ones are all newer
	}
	s.offer(ev)
}

// offer records ev as open for checkpoints, then hands it over.
func (s *subscriber) offer(ev *event.Event) {
	if s.Progress != nil {
		s.Progress.offered(ev)
	}
	s.Receiver.Offer(ev)
}

// catchUp sends a joining subscriber an Added for every object in scope, from a LIST rather
// than from a cache, then the changes buffered since it joined that the LIST did not cover.
func (i *informer) catchUp(s *subscriber) {
	backoff := time.Second
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
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
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
	if s.overflowed {
		s.overflowed = false
		return false
	}
	for _, ev := range s.buffer {
		if ev.StreamRV != 0 && ev.StreamRV <= listRV {
			continue
		}
		s.offer(ev)
	}
	s.buffer = nil
	s.catchingUp = false
	s.floor = listRV
	i.reg.checkpointSoon()
	return true
}

func objectKey(u *unstructured.Unstructured) string {
	if ns := u.GetNamespace(); ns != "" {
		return ns + "/" + u.GetName()
	}
	return u.GetName()
}

func recordOf(u *unstructured.Unstructured) record {
	whole, meta := objectHashes(u.Object)
	return record{uid: u.GetUID(), rv: u.GetResourceVersion(), labels: u.GetLabels(), hash: whole, metaHash: meta}
}

// parseRV reads an etcd-backed resourceVersion. Resource versions are opaque in general;
// when one is not a number the caller errs on the side of delivering.
func parseRV(rv string) (uint64, bool) {
	n, err := strconv.ParseUint(rv, 10, 64)
	return n, err == nil
}

// streamRV is rv as event.Event.StreamRV holds it: 0 when not a number.
func streamRV(rv string) uint64 {
	n, _ := parseRV(rv)
	return n
}

// reconnectBackoff paces an informer's retries after its watch fails: at most about 7.5s
// (5s plus jitter) rather than client-go's 30s plus as much again, so changes flow again
// soon after an API server outage; the jitter keeps many informers from retrying in step.
var reconnectBackoff = wait.Backoff{Duration: 500 * time.Millisecond, Cap: 5 * time.Second, Steps: 100,
	Factor: 2, Jitter: 0.5}

// listThenWatch opts out of the streaming list, so the reflector lists and then watches.
type listThenWatch struct{ *cache.ListWatch }

func (listThenWatch) IsWatchListSemanticsUnSupported() bool { return true }

// demoteErrors turns the reflector's error logs into debug lines: its failures are reported
// through State and status instead, and a CRD deleted under a running watch must not fill
// the log with 404s.
type demoteErrors struct{ logr.LogSink }

func (d demoteErrors) Error(err error, msg string, kv ...any) {
	if d.Enabled(1) {
		d.Info(1, msg, append(kv, "error", err)...)
	}
}

func (d demoteErrors) WithValues(kv ...any) logr.LogSink {
	return demoteErrors{d.LogSink.WithValues(kv...)}
}

func (d demoteErrors) WithName(name string) logr.LogSink {
	return demoteErrors{d.LogSink.WithName(name)}
}
