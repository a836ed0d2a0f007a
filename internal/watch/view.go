package watch

import (
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

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

// The ReflectorStore methods below receive every change from the reflector.

func (i *informer) Add(obj any) error { i.apply(event.Added, obj); return nil }

func (i *informer) Update(obj any) error { i.apply(event.Updated, obj); return nil }

func (i *informer) Delete(obj any) error { i.apply(event.Deleted, obj); return nil }

func (i *informer) Resync() error { return nil }

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
		i.advanceReplay(rv, true)
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
	if i.advanceReplay(rv, rvOK) {
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

// Replace ends a list: the streamed one whose pages are in (list.go), or one the reflector
// hands over whole, taken as a single page. The first list fills the view silently (its
// objects existed before anyone subscribed); later ones, after a watch gap, become the
// changes they imply.
func (i *informer) Replace(items []any, resourceVersion string) error {
	i.mu.Lock()
	if i.objects == nil {
		i.mu.Unlock()
		return nil
	}
	l := i.listing
	if l == nil || !l.complete {
		l = i.beginList()
	}
	if len(items) > 0 {
		page := make([]*unstructured.Unstructured, 0, len(items))
		for _, item := range items {
			if u, ok := item.(*unstructured.Unstructured); ok {
				page = append(page, u)
			}
		}
		i.listPage(l, page)
	}
	listRV, _ := parseRV(resourceVersion)
	i.finishList(l, listRV)
	changed := !i.synced || i.err != nil
	i.synced, i.err = true, nil
	i.settleResume()
	large := l.first && len(i.objects) >= largeList
	i.mu.Unlock()
	if changed {
		i.reg.onChange(i.key)
	}
	if large {
		returnMemory()
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

func objectKey(u *unstructured.Unstructured) string { return event.KeyOf(u) }

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
