package event

import (
	"reflect"
	"slices"
	"strings"
)

// Changes is how many changes the event stands for: 1, or more when changes to its object
// were merged into it (see Merge).
func (e *Event) Changes() int { return max(e.merged, 1) }

// ChangedPaths lists the dotted paths whose values differ between the old object and the
// object of an Updated change, sorted; for a merged event, those of every change merged
// into it. Nil when the old object is not kept or the event is no update. Computed once.
func (e *Event) ChangedPaths() []string {
	e.changedOnce.Do(func() {
		if e.Type == Updated && e.OldObject != nil && e.Object != nil {
			e.changed = Diff(e.OldObject.Object, e.Object.Object)
		}
	})
	return e.changed
}

// Mergeable tells whether next, a later change to held's object, can be merged into it:
// an update of the same object (same uid) after an addition or an update. A deletion is
// never merged, nor anything after one.
func Mergeable(held, next *Event) bool {
	return next.Type == Updated && (held.Type == Added || held.Type == Updated) &&
		held.Object != nil && next.Object != nil && held.Object.GetUID() == next.Object.GetUID()
}

// Merge is the event that stands for held followed by next (see Mergeable), for one
// subscriber: next's object, held's old object and type (an addition followed by updates
// stays an addition of the latest state), the union of their changed paths, and held's
// place in its stream, so a checkpoint taken while it waits covers neither change.
func Merge(held, next *Event) *Event {
	m := &Event{
		Type:              held.Type,
		Resource:          next.Resource,
		Object:            next.Object,
		OldObject:         held.OldObject,
		MetadataUnchanged: held.MetadataUnchanged && next.MetadataUnchanged,
		ObservedAt:        next.ObservedAt,
		Stream:            held.Stream,
		StreamRV:          held.StreamRV,
		Replayed:          held.Replayed && next.Replayed,
		Initial:           held.Initial,
		merged:            held.Changes() + next.Changes(),
	}
	if m.Type == Updated {
		m.changed = union(held.ChangedPaths(), next.ChangedPaths())
	}
	m.changedOnce.Do(func() {})
	return m
}

// union of two sorted path lists, sorted.
func union(a, b []string) []string {
	if len(a) == 0 {
		return b
	}
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

// Diff lists the dotted paths whose values differ between old and updated, sorted. Lists
// are compared whole; resourceVersion and managedFields are left out as write noise.
func Diff(old, updated map[string]any) []string {
	var out []string
	diff("", old, updated, &out)
	slices.Sort(out)
	return out
}

func diff(prefix string, a, b map[string]any, out *[]string) {
	for k, av := range a {
		path := join(prefix, k)
		if noise(path) {
			continue
		}
		bv, ok := b[k]
		if !ok {
			*out = append(*out, path)
			continue
		}
		am, aIsMap := av.(map[string]any)
		bm, bIsMap := bv.(map[string]any)
		switch {
		case aIsMap && bIsMap:
			diff(path, am, bm, out)
		case !reflect.DeepEqual(av, bv):
			*out = append(*out, path)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			if path := join(prefix, k); !noise(path) {
				*out = append(*out, path)
			}
		}
	}
}

func noise(path string) bool {
	field, ok := strings.CutPrefix(path, "metadata.")
	return ok && IsWriteNoise(field)
}

func join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	var b strings.Builder
	b.Grow(len(prefix) + 1 + len(k))
	b.WriteString(prefix)
	b.WriteByte('.')
	b.WriteString(k)
	return b.String()
}
