package controller

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// writtenStatuses remembers the status this process last wrote for each object. Status
// writes do not come back as reconciles, and the informer's copy may still be older than
// the last write when the next reconcile runs: a merge patch computed from that copy leaves
// out every field that went back to its older value (a queue drained to zero, say), and the
// stored status keeps the stale one until something else changes.
type writtenStatuses[S any, P interface {
	*S
	DeepCopy() *S
}] struct {
	mu sync.Mutex
	m  map[types.NamespacedName]written[P]
}

type written[P any] struct {
	uid             types.UID
	resourceVersion string
	status          P
}

// freshen sets status, obj's, to what was last written for obj when obj's copy is older
// than that write.
func (w *writtenStatuses[S, P]) freshen(obj client.Object, status P) {
	w.mu.Lock()
	last, ok := w.m[client.ObjectKeyFromObject(obj)]
	w.mu.Unlock()
	if ok && last.uid == obj.GetUID() && olderThan(obj.GetResourceVersion(), last.resourceVersion) {
		*status = *last.status.DeepCopy()
		obj.SetResourceVersion(last.resourceVersion)
	}
}

// record keeps status, obj's, as just written.
func (w *writtenStatuses[S, P]) record(obj client.Object, status P) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[types.NamespacedName]written[P]{}
	}
	w.m[client.ObjectKeyFromObject(obj)] = written[P]{
		uid: obj.GetUID(), resourceVersion: obj.GetResourceVersion(), status: P(status.DeepCopy())}
}

func (w *writtenStatuses[S, P]) forget(nn types.NamespacedName) {
	w.mu.Lock()
	delete(w.m, nn)
	w.mu.Unlock()
}

// olderThan tells whether resource version a is older than b. Versions that do not
// compare (not the integers the API server hands out) count as not older: the cached
// copy is used, as it was before any write.
func olderThan(a, b string) bool {
	c, err := resourceversion.CompareResourceVersion(a, b)
	return err == nil && c < 0
}
