package watch

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
)

// The informer keeps full objects (olds) only while some subscriber needs the object as it
// was before an update: a filter on oldObject, includeOldObject, changed paths, ignore.*.
// Streams nobody asks that of keep the lean view alone.

// needsOld tells whether the subscriber needs the object before each update.
func (s Subscriber) needsOld() bool {
	return s.NeedsOldObject || s.Filter != nil && s.Filter.NeedsOldObject()
}

// keepOlds makes the informer keep old objects until the returned release is called; a
// joining subscriber holds this while it fills them and joins.
func (i *informer) keepOlds() (release func()) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.holdOld()
	return func() {
		i.mu.Lock()
		defer i.mu.Unlock()
		i.releaseOld()
	}
}

// holdOld and releaseOld count who needs old objects. Called with mu held.
func (i *informer) holdOld() {
	if i.keepOld++; i.olds == nil {
		i.olds = map[string]*unstructured.Unstructured{}
		// Before the first list the map fills from it; after it, or once a list is under
		// way (its earlier pages are gone), fillOlds must fill it.
		i.oldsComplete = !i.synced && i.listing == nil
		if i.listing != nil {
			i.listing.oldsPartial = true
		}
	}
}

func (i *informer) releaseOld() {
	if i.keepOld--; i.keepOld == 0 {
		i.olds, i.oldsComplete = nil, false
	}
}

// hasOlds tells whether the informer holds the old object of every object in scope.
func (i *informer) hasOlds() bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.oldsComplete
}

// oldsFillTries bounds how often fillOlds lists before it gives up; a subscriber then joins
// without old objects for objects not changed since.
const oldsFillTries = 3

// fillOlds fills the old objects of a running informer that kept none: it lists the scope
// as it was at the position of the view (an exact-resourceVersion list, so the objects
// match the view whatever changed since) and adds each object no change has replaced
// since. One filler at a time; others wait for it. Called holding keepOlds.
func (i *informer) fillOlds() {
	backoff := wait.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: oldsFillTries}
	for try := 1; ; try++ {
		i.mu.Lock()
		if i.oldsComplete || i.objects == nil {
			i.mu.Unlock()
			return
		}
		if f := i.oldsFilling; f != nil {
			i.mu.Unlock()
			<-f
			continue
		}
		if l := i.listing; l != nil { // fill once the list is over, from where it left the view
			i.mu.Unlock()
			select {
			case <-l.done:
			case <-i.ctx.Done():
				return
			}
			continue
		}
		if !i.synced { // the next list fills them from its first page
			i.oldsComplete = true
			i.mu.Unlock()
			return
		}
		done := make(chan struct{})
		i.oldsFilling, i.oldsChanged = done, map[string]bool{}
		at, epoch := i.viewRV, i.relists
		i.mu.Unlock()

		items, err := i.listAt(at)

		i.mu.Lock()
		// A relist meanwhile filled them from a newer list already.
		if err == nil && i.objects != nil && i.relists == epoch && i.olds != nil {
			for _, u := range items {
				if key := objectKey(u); !i.oldsChanged[key] {
					i.olds[key] = u
				}
			}
			i.oldsComplete = true
		}
		complete := i.oldsComplete || i.objects == nil
		i.oldsFilling, i.oldsChanged = nil, nil
		close(done)
		i.mu.Unlock()
		if complete || i.ctxDone() {
			return
		}
		if try == oldsFillTries {
			i.log.Info("Could not list old objects for a joining subscriber; its first update of each "+
				"object not changed since comes without the old object", "error", errString(err))
			return
		}
		time.Sleep(backoff.Step())
	}
}

// listAt lists the informer's scope exactly as it was at resourceVersion rv.
func (i *informer) listAt(rv uint64) ([]*unstructured.Unstructured, error) {
	ctx, cancel := context.WithTimeout(i.reg.ctx, time.Minute)
	defer cancel()
	ri := i.reg.client.Resource(i.key.GVR).Namespace(i.key.Namespace)
	opts := metav1.ListOptions{Limit: 500, ResourceVersion: formatRV(rv),
		ResourceVersionMatch: metav1.ResourceVersionMatchExact}
	var out []*unstructured.Unstructured
	for {
		list, err := retryBriefly(ctx, func() (*unstructured.UnstructuredList, error) { return ri.List(ctx, opts) })
		if err != nil {
			return nil, err
		}
		for idx := range list.Items {
			u := &list.Items[idx]
			u.SetManagedFields(nil)
			out = append(out, u)
		}
		if opts.Continue = list.GetContinue(); opts.Continue == "" {
			return out, nil
		}
		opts.ResourceVersion, opts.ResourceVersionMatch = "", "" // the continue token carries it
	}
}

func (i *informer) ctxDone() bool {
	select {
	case <-i.reg.ctx.Done():
		return true
	default:
		return false
	}
}

func errString(err error) string {
	if err == nil {
		return "the view was re-listed meanwhile"
	}
	return err.Error()
}
