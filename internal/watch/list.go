package watch

import (
	"context"
	"runtime/debug"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// The informer's lists are streamed into the view a page at a time: each page becomes lean
// records (and the changes it implies) before the next is fetched, so only one page of full
// objects is decoded at a time instead of every object in scope. The reflector's own list
// (which gathers every page, or with WatchList every object, before handing them over) is
// bypassed: the ListerWatcher's List streams the pages in and returns an empty list carrying
// the list's resourceVersion, and Replace finishes the streamed list (deletions, positions)
// before the reflector watches from there.

// listPageSize is how many objects one page of a list holds; a variable so tests can page
// small lists.
var listPageSize int64 = 500

// listRestarts bounds how often a list whose continue token expired starts over.
const listRestarts = 2

// largeList is the size of a first list after which the memory its pages used is handed
// back to the OS at once (returnMemory).
const largeList = 5000

var returningMemory atomic.Bool

// returnMemory hands the heap's free memory back to the OS. After a large first list the
// pages it decoded are garbage, but the runtime keeps the memory they took (RSS at the
// list's high-water mark) for reuse, returning it only slowly. One forced collection per
// large first list is cheap next to the list itself; lists that end together share it.
func returnMemory() {
	if returningMemory.CompareAndSwap(false, true) {
		debug.FreeOSMemory()
		returningMemory.Store(false)
	}
}

// listing is a list being streamed into the view. Guarded by informer.mu.
type listing struct {
	// first is the informer's first list: it fills the view silently.
	first bool
	// gap: listed while a replay from checkpoints was incomplete (see gapRelisted); since
	// and fromTime are the replay's position when the list began.
	gap      bool
	since    uint64
	fromTime time.Time
	// seen has the keys listed so far; the others are deleted when the list ends. The first
	// list needs none: it starts from an empty view.
	seen map[string]struct{}
	// oldsPartial: old objects began to be kept after the list's first page, so the list
	// cannot complete them (fillOlds does, once the list is over).
	oldsPartial bool
	// complete: every page is in, Replace finishes the list.
	complete bool
	// done is closed when the list finishes or is abandoned.
	done chan struct{}
}

// listStreamed lists the informer's scope into the view, page by page, as one consistent
// snapshot, and returns the snapshot's resourceVersion; Replace must then finish it. A list
// whose continue token expired (it took longer than etcd keeps the snapshot) starts over.
func (i *informer) listStreamed(ctx context.Context, ri dynamic.ResourceInterface) (string, error) {
	for attempt := 0; ; attempt++ {
		rv, err := i.listPages(ctx, ri)
		if err == nil || !apierrors.IsResourceExpired(err) || attempt == listRestarts || ctx.Err() != nil {
			return rv, err
		}
		i.log.V(1).Info("List snapshot expired between pages; listing again", "error", err.Error())
	}
}

func (i *informer) listPages(ctx context.Context, ri dynamic.ResourceInterface) (string, error) {
	opts := metav1.ListOptions{Limit: listPageSize}
	var l *listing
	var rv string
	for {
		list, err := retryBriefly(ctx, func() (*unstructured.UnstructuredList, error) { return ri.List(ctx, opts) })
		if err != nil {
			i.abandonList(l)
			return "", err
		}
		items := make([]*unstructured.Unstructured, len(list.Items))
		for idx := range list.Items {
			items[idx] = &list.Items[idx]
		}
		opts.Continue = list.GetContinue()
		i.mu.Lock()
		if i.objects == nil { // stopped
			i.mu.Unlock()
			return "", context.Canceled
		}
		if l == nil {
			// The first page's resourceVersion is the snapshot's; the continue token keeps
			// the later pages on it.
			rv = list.GetResourceVersion()
			l = i.beginList()
		} else if i.listing != l {
			i.mu.Unlock()
			return "", context.Canceled // another list took over (the reflector gave up on this one)
		}
		i.listPage(l, items)
		l.complete = opts.Continue == ""
		i.mu.Unlock()
		if l.complete {
			return rv, nil
		}
	}
}

// beginList starts a streamed list, abandoning any unfinished one. Called with mu held.
func (i *informer) beginList() *listing {
	i.endListing()
	l := &listing{first: !i.synced, done: make(chan struct{})}
	if l.first {
		// Nothing of an abandoned first list has been handed to anyone.
		clear(i.objects)
		if i.olds != nil {
			clear(i.olds)
		}
	} else {
		l.seen = make(map[string]struct{}, len(i.objects))
		if rs := i.resume; rs != nil && rs.replaying {
			l.gap, l.since, l.fromTime = true, max(rs.from, rs.lastReplayed), rs.fromTime
		}
	}
	i.listing = l
	return l
}

// abandonList ends l unfinished (its list failed). The view keeps what its pages brought:
// the changes they implied were handed out, and the next list goes on from there.
func (i *informer) abandonList(l *listing) {
	if l == nil {
		return
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.listing == l {
		i.endListing()
	}
}

// endListing drops the list in progress, if any. Called with mu held.
func (i *informer) endListing() {
	if l := i.listing; l != nil {
		close(l.done)
		i.listing = nil
	}
}

// listPage takes one page of l into the view: the first list records the objects; later
// ones (after a watch gap) hand out what changed as Added and Updated events. Called with
// mu held.
func (i *informer) listPage(l *listing, items []*unstructured.Unstructured) {
	for _, u := range items {
		u.SetManagedFields(nil) // before any event shares the object
		key := objectKey(u)
		rec := recordOf(u)
		prev, known := i.objects[key]
		i.objects[key] = rec
		var old *unstructured.Unstructured
		if i.olds != nil {
			old = i.olds[key]
			i.olds[key] = u
		}
		if i.oldsChanged != nil {
			i.oldsChanged[key] = true // newer than the snapshot a fill in progress lists
		}
		if l.first {
			continue
		}
		l.seen[key] = struct{}{}
		if l.gap && i.resume != nil && i.gapChange(u, l) {
			continue
		}
		switch {
		case !known || prev.uid != rec.uid:
			i.fanOut(i.newEvent(event.Added, u, streamRV(rec.rv)))
		case prev.rv != rec.rv && prev.hash != rec.hash:
			ev := i.newEvent(event.Updated, u, streamRV(rec.rv))
			ev.MetadataUnchanged = rec.metaHash == prev.metaHash
			ev.OldObject = old
			i.fanOut(ev)
		}
	}
}

// finishList ends the streamed list l at resourceVersion listRV: objects it did not see are
// deleted (with a Deleted event after a watch gap), and the informer's positions move to
// the list. Called with mu held.
func (i *informer) finishList(l *listing, listRV uint64) {
	if !l.first {
		for key, prev := range i.objects {
			if _, still := l.seen[key]; still {
				continue
			}
			delete(i.objects, key)
			if i.olds != nil {
				delete(i.olds, key)
			}
			i.fanOut(i.newEvent(event.Deleted, i.tombstone(key, prev), streamRV(prev.rv)))
		}
	}
	if i.olds != nil && !l.oldsPartial {
		i.oldsComplete = true
	}
	if l.first {
		i.listed(listRV)
	} else {
		if l.gap && i.resume != nil {
			i.gapFinished()
		}
		i.listRV = listRV
		i.relists++
		if listRV > i.seen {
			i.seen, i.seenAt = listRV, time.Now()
		}
	}
	i.viewRV = max(i.viewRV, listRV)
	i.endListing()
}
