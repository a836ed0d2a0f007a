package watch

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// obj is a ConfigMap in a list: name, uid, resourceVersion and one data value.
type obj struct{ name, uid, rv, data string }

func (o obj) object() *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"data": map[string]any{"v": o.data}}}
	u.SetNamespace("ns")
	u.SetName(o.name)
	u.SetUID(types.UID(o.uid))
	u.SetResourceVersion(o.rv)
	return u
}

func page(objs ...obj) []*unstructured.Unstructured {
	out := make([]*unstructured.Unstructured, len(objs))
	for i, o := range objs {
		out[i] = o.object()
	}
	return out
}

// events is a Receiver that keeps "Type name rv" per event, and old objects' rv.
type events struct {
	mu  sync.Mutex
	got []string
}

func (e *events) Offer(ev *event.Event) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := fmt.Sprintf("%s %s %s", ev.Type, ev.Object.GetName(), ev.Object.GetResourceVersion())
	if ev.OldObject != nil {
		s += " old " + ev.OldObject.GetResourceVersion()
	}
	e.got = append(e.got, s)
	return true
}

func (e *events) Put(_ context.Context, ev *event.Event) error { e.Offer(ev); return nil }

func (e *events) take() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.got
	e.got = nil
	return out
}

// streamPages feeds pages into i as listPages does; complete tells whether the list got
// all its pages (then Replace finishes it, as the reflector does) or was abandoned.
func streamPages(i *informer, rv string, complete bool, pages ...[]*unstructured.Unstructured) {
	i.mu.Lock()
	l := i.beginList()
	for _, p := range pages {
		i.listPage(l, p)
	}
	l.complete = complete
	i.mu.Unlock()
	if complete {
		_ = i.Replace(nil, rv)
	} else {
		i.abandonList(l)
	}
}

func newTestInformer(t *testing.T) *informer {
	reg := New(nil, logr.Discard(), nil)
	t.Cleanup(reg.cancel)
	return newInformer(reg, Key{GVR: schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, Namespace: "ns"})
}

// attempt is one list of a table case: its pages, and whether it got them all.
type attempt struct {
	pages    [][]obj
	complete bool
}

func TestStreamedListTurnsPagesIntoChanges(t *testing.T) {
	a1, b1, c1, d1 := obj{"a", "ua", "11", "1"}, obj{"b", "ub", "12", "1"}, obj{"c", "uc", "13", "1"}, obj{"d", "ud", "14", "1"}
	tests := []struct {
		name  string
		first [][]obj // the first list, in pages: silent
		// relists after a watch gap, in order; every attempt but a complete one is abandoned
		relists []attempt
		keepOld bool
		// wantPaged is what subscribers got before the last relist's Replace; want, after.
		wantPaged, want []string
		wantView        []string
	}{{
		name:     "first list over pages fills the view silently",
		first:    [][]obj{{a1, b1}, {c1}},
		wantView: []string{"a 11", "b 12", "c 13"},
	}, {
		name:  "relist across pages sends what changed as each page arrives, deletions at the end",
		first: [][]obj{{a1, b1}, {c1, d1}},
		relists: []attempt{{complete: true, pages: [][]obj{
			{a1, {"b", "ub", "20", "2"}}, {{"c", "uc", "21", "1"}, {"e", "ue", "22", "1"}}}}},
		wantPaged: []string{"Updated b 20", "Added e 22"},
		want:      []string{"Deleted d 14"},
		wantView:  []string{"a 11", "b 20", "c 21", "e 22"},
	}, {
		name:  "an object recreated under its name is Added",
		first: [][]obj{{a1}},
		relists: []attempt{{complete: true, pages: [][]obj{
			{{"a", "ua2", "30", "1"}}}}},
		wantPaged: []string{"Added a 30"},
		wantView:  []string{"a 30"},
	}, {
		name:  "a relist restarted after its snapshot expired sends each change once",
		first: [][]obj{{a1, b1}, {c1}},
		relists: []attempt{
			{pages: [][]obj{{{"a", "ua", "40", "2"}, b1}}},
			{complete: true, pages: [][]obj{{{"a", "ua", "40", "2"}, {"b", "ub", "41", "2"}}}},
		},
		wantPaged: []string{"Updated a 40", "Updated b 41"},
		want:      []string{"Deleted c 13"},
		wantView:  []string{"a 40", "b 41"},
	}, {
		name:    "old objects come from the view's earlier list and follow the pages",
		first:   [][]obj{{a1}, {b1}},
		keepOld: true,
		relists: []attempt{{complete: true, pages: [][]obj{
			{{"a", "ua", "50", "2"}}, {{"b", "ub", "51", "2"}}}}},
		wantPaged: []string{"Updated a 50 old 11", "Updated b 51 old 12"},
		wantView:  []string{"a 50", "b 51"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := newTestInformer(t)
			got := &events{}
			i.add(Subscriber{ID: "s", Receiver: got, NeedsOldObject: tt.keepOld}, nil)
			firstPages := make([][]*unstructured.Unstructured, len(tt.first))
			for n, p := range tt.first {
				firstPages[n] = page(p...)
			}
			streamPages(i, "10", true, firstPages...)
			if ev := got.take(); len(ev) != 0 {
				t.Fatalf("first list sent %v, want nothing", ev)
			}
			var paged []string
			for n, a := range tt.relists {
				i.mu.Lock()
				l := i.beginList()
				for _, p := range a.pages {
					i.listPage(l, page(p...))
				}
				l.complete = a.complete
				i.mu.Unlock()
				paged = append(paged, got.take()...)
				if n < len(tt.relists)-1 || !a.complete {
					i.abandonList(l)
					continue
				}
				_ = i.Replace(nil, "99")
			}
			if !slices.Equal(paged, tt.wantPaged) {
				t.Errorf("while paging got %q, want %q", paged, tt.wantPaged)
			}
			if ev := got.take(); !slices.Equal(ev, tt.want) {
				t.Errorf("at the end got %q, want %q", ev, tt.want)
			}
			view := make([]string, 0, len(i.objects))
			for key, rec := range i.objects {
				view = append(view, key[len("ns/"):]+" "+rec.rv)
			}
			slices.Sort(view)
			if !slices.Equal(view, tt.wantView) {
				t.Errorf("view %q, want %q", view, tt.wantView)
			}
			if tt.keepOld && (!i.oldsComplete || len(i.olds) != len(tt.wantView)) {
				t.Errorf("old objects: complete %v, %d of them; want all %d", i.oldsComplete, len(i.olds), len(tt.wantView))
			}
			if !i.synced || i.listing != nil {
				t.Errorf("synced %v, list still open %v", i.synced, i.listing != nil)
			}
		})
	}
}

// A subscriber that needs old objects and joins while a list is under way cannot have the
// objects of the pages already gone: the old objects are marked incomplete, for fillOlds.
func TestOldObjectsKeptFromMidListAreIncomplete(t *testing.T) {
	for _, tt := range []struct {
		name         string
		holdBefore   bool
		wantComplete bool
	}{
		{"held before the first page", true, true},
		{"held after the first page", false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			i := newTestInformer(t)
			i.mu.Lock()
			if tt.holdBefore {
				i.holdOld()
			}
			l := i.beginList()
			i.listPage(l, page(obj{"a", "ua", "11", "1"}))
			if !tt.holdBefore {
				i.holdOld()
			}
			i.listPage(l, page(obj{"b", "ub", "12", "1"}))
			l.complete = true
			i.mu.Unlock()
			_ = i.Replace(nil, "20")
			if i.oldsComplete != tt.wantComplete {
				t.Errorf("old objects complete: %v, want %v", i.oldsComplete, tt.wantComplete)
			}
		})
	}
}
