package event

import (
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var deployments = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}

func deployment(uid, rv string, replicas int64, image string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": "web", "namespace": "shop", "uid": uid, "resourceVersion": rv},
		"spec":     map[string]any{"replicas": replicas, "image": image},
	}}
}

// change is an event of the stream "s" at resourceVersion rv.
func change(t Type, obj, old *unstructured.Unstructured, rv uint64) *Event {
	ev := New(t, deployments, obj)
	ev.OldObject, ev.Stream, ev.StreamRV = old, "s", rv
	return ev
}

func TestMergeable(t *testing.T) {
	v1, v2 := deployment("u1", "10", 1, "web:1"), deployment("u1", "11", 2, "web:1")
	other := deployment("u2", "12", 1, "web:1")
	cases := []struct {
		name       string
		held, next *Event
		want       bool
	}{
		{"update after addition", change(Added, v1, nil, 10), change(Updated, v2, v1, 11), true},
		{"update after update", change(Updated, v1, v1, 10), change(Updated, v2, v1, 11), true},
		{"deletion is never merged", change(Updated, v1, v1, 10), change(Deleted, v2, nil, 11), false},
		{"nothing after a deletion", change(Deleted, v1, nil, 10), change(Updated, v2, v1, 11), false},
		{"an addition starts anew", change(Updated, v1, v1, 10), change(Added, v2, nil, 11), false},
		{"another object of the same name", change(Added, v1, nil, 10), change(Updated, other, other, 12), false},
	}
	for _, tc := range cases {
		if got := Mergeable(tc.held, tc.next); got != tc.want {
			t.Errorf("%s: Mergeable = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestMergeKeepsTheFirstPlaceAndTheLatestState(t *testing.T) {
	v1 := deployment("u1", "10", 1, "web:1")
	v2 := deployment("u1", "11", 2, "web:1")
	v3 := deployment("u1", "12", 2, "web:2")
	first, second, third := change(Updated, v2, v1, 11), change(Updated, v3, v2, 12), change(Updated, v3, v3, 13)

	m := Merge(Merge(first, second), third)
	if m.Object != v3 || m.OldObject != v1 || m.Type != Updated {
		t.Errorf("merged: object %v, old %v, type %s; want the latest object, the first old one, Updated", m.Object, m.OldObject, m.Type)
	}
	if m.StreamRV != 11 || m.Stream != "s" {
		t.Errorf("merged at %s/%d; want the first change's place, s/11, so checkpoints stay before it", m.Stream, m.StreamRV)
	}
	if m.Changes() != 3 {
		t.Errorf("Changes = %d, want 3", m.Changes())
	}
	if want := []string{"spec.image", "spec.replicas"}; !slices.Equal(m.ChangedPaths(), want) {
		t.Errorf("ChangedPaths = %q, want the union %q", m.ChangedPaths(), want)
	}
	if m.ID() != "u1:12:Updated" {
		t.Errorf("ID = %s, want the latest change's", m.ID())
	}
	if first.Changes() != 1 || first.Object != v2 {
		t.Errorf("the merged events are shared by other subscribers and must stay as they were")
	}

	added := Merge(change(Added, v1, nil, 10), change(Updated, v2, v1, 11))
	if added.Type != Added || added.Object != v2 || added.OldObject != nil || added.ChangedPaths() != nil {
		t.Errorf("an addition followed by an update is an addition of the latest state: %s %v old %v paths %q",
			added.Type, added.Object, added.OldObject, added.ChangedPaths())
	}
	initial := change(Added, v1, nil, 0)
	initial.Initial = true
	if m := Merge(initial, change(Updated, v2, v1, 11)); !m.Initial || m.StreamRV != 0 {
		t.Errorf("an initial event stays initial when merged, so its pin on the checkpoint holds")
	}
}

func TestDiff(t *testing.T) {
	old := map[string]any{"metadata": map[string]any{"resourceVersion": "1", "labels": map[string]any{"a": "1"}},
		"spec": map[string]any{"replicas": int64(1), "ports": []any{int64(80)}}}
	updated := map[string]any{"metadata": map[string]any{"resourceVersion": "2", "labels": map[string]any{"b": "1"}},
		"spec": map[string]any{"replicas": int64(1), "ports": []any{int64(80), int64(443)}}, "status": map[string]any{}}
	want := []string{"metadata.labels.a", "metadata.labels.b", "spec.ports", "status"}
	if got := Diff(old, updated); !slices.Equal(got, want) {
		t.Errorf("Diff = %q, want %q", got, want)
	}
}
