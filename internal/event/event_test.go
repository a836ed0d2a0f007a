package event

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestPathsAndIDs(t *testing.T) {
	cm := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": "settings", "namespace": "team-a", "uid": "u1", "resourceVersion": "42"},
	}}
	ns := &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"name": "team-a"}}}
	cases := []struct {
		name     string
		ev       *Event
		path, id string
	}{
		{"core namespaced", New(Added, schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, cm),
			"/api/v1/namespaces/team-a/configmaps/settings", "u1:42:Added"},
		{"group namespaced", New(Updated, schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, cm),
			"/apis/apps/v1/namespaces/team-a/deployments/settings", "u1:42:Updated"},
		{"cluster scoped", New(Deleted, schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, ns),
			"/api/v1/namespaces/team-a", "::Deleted"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.ev.ObjectPath(); got != tc.path {
				t.Errorf("path = %q, want %q", got, tc.path)
			}
			if got := tc.ev.ID(); got != tc.id {
				t.Errorf("id = %q, want %q", got, tc.id)
			}
		})
	}
}

func TestDataIsEncodedOnceAndShared(t *testing.T) {
	ev := New(Added, schema.GroupVersionResource{Version: "v1", Resource: "configmaps"},
		&unstructured.Unstructured{Object: map[string]any{"kind": "ConfigMap"}})
	a, err := ev.Data()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ev.Data()
	if string(a) != `{"kind":"ConfigMap"}` || &a[0] != &b[0] {
		t.Fatalf("want one shared encoding, got %q and %q", a, b)
	}
}

func TestCloudEventTypes(t *testing.T) {
	for typ, want := range map[Type]string{
		Added: "io.dynamicnotifier.resource.added", Updated: "io.dynamicnotifier.resource.updated",
		Deleted: "io.dynamicnotifier.resource.deleted", Resync: "io.dynamicnotifier.resync",
		Test: "io.dynamicnotifier.test",
	} {
		if got := typ.CloudEventType(); got != want {
			t.Errorf("%s.CloudEventType() = %q, want %q", typ, got, want)
		}
	}
}
