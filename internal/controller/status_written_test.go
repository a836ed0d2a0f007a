package controller

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

func TestWrittenStatusesFreshenOnlyAnOlderCopy(t *testing.T) {
	subscription := func(uid types.UID, rv string, queued int64) *notifyv1.WatchSubscription {
		return &notifyv1.WatchSubscription{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s", UID: uid, ResourceVersion: rv},
			Status:     notifyv1.WatchSubscriptionStatus{EventsQueued: queued}}
	}
	cases := []struct {
		name       string
		writtenAt  string
		cached     *notifyv1.WatchSubscription
		wantQueued int64
		wantRV     string
	}{
		{"the cache is behind the last write", "42", subscription("u1", "41", 0), 1, "42"},
		{"the cache has the last write", "42", subscription("u1", "42", 1), 1, "42"},
		{"someone wrote after us", "42", subscription("u1", "43", 5), 5, "43"},
		{"ten is newer than nine", "10", subscription("u1", "9", 0), 1, "10"},
		{"a new object of the same name", "42", subscription("u2", "41", 0), 0, "41"},
		{"versions that do not compare", "42", subscription("u1", "x", 0), 0, "x"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var w writtenStatuses[notifyv1.WatchSubscriptionStatus, *notifyv1.WatchSubscriptionStatus]
			last := subscription("u1", tc.writtenAt, 1)
			w.record(last, &last.Status)
			last.Status.EventsQueued = 99 // what is recorded is a copy

			w.freshen(tc.cached, &tc.cached.Status)
			if tc.cached.Status.EventsQueued != tc.wantQueued || tc.cached.ResourceVersion != tc.wantRV {
				t.Fatalf("eventsQueued %d at %q, want %d at %q", tc.cached.Status.EventsQueued,
					tc.cached.ResourceVersion, tc.wantQueued, tc.wantRV)
			}
		})
	}

	t.Run("forgotten", func(t *testing.T) {
		var w writtenStatuses[notifyv1.WatchSubscriptionStatus, *notifyv1.WatchSubscriptionStatus]
		last := subscription("u1", "42", 1)
		w.record(last, &last.Status)
		w.forget(types.NamespacedName{Namespace: "ns", Name: "s"})
		cached := subscription("u1", "41", 0)
		w.freshen(cached, &cached.Status)
		if cached.Status.EventsQueued != 0 {
			t.Fatalf("a forgotten write still replaces the cached status")
		}
	})
}
