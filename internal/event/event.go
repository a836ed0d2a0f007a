// Package event is the unit that flows from the watch registry through filters and delivery
// to sinks: one observed change to one Kubernetes object.
package event

import (
	"encoding/json"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Type is the kind of change. The values equal the API's eventTypes.
type Type string

const (
	Added   Type = "Added"
	Updated Type = "Updated"
	Deleted Type = "Deleted"
	// Resync is not a change: it tells a subscriber that the watch could not resume from its
	// checkpoint, so changes in the gap were re-listed and deletions in it may be missing.
	Resync Type = "Resync"
	// Test is not a change either: a synthetic event that `kubectl notifier send` sends to
	// try a subscription's sink. The operator never sends one.
	Test Type = "Test"
)

// CloudEventTypePrefix starts the CloudEvents type of every resource change.
const CloudEventTypePrefix = "io.dynamicnotifier.resource."

// ResyncCloudEventType is the CloudEvents type of a Resync event.
const ResyncCloudEventType = "io.dynamicnotifier.resync"

// TestCloudEventType is the CloudEvents type of a Test event, so receivers can tell a
// try of the sink from a change.
const TestCloudEventType = "io.dynamicnotifier.test"

// CloudEventType is the CloudEvents type of a change, e.g. io.dynamicnotifier.resource.added.
func (t Type) CloudEventType() string {
	switch t {
	case Resync:
		return ResyncCloudEventType
	case Test:
		return TestCloudEventType
	case Added:
		return CloudEventTypePrefix + "added" // constant: no allocation per delivery
	case Updated:
		return CloudEventTypePrefix + "updated"
	case Deleted:
		return CloudEventTypePrefix + "deleted"
	}
	return CloudEventTypePrefix + strings.ToLower(string(t))
}

// Event is one change. It is shared read-only by every subscriber it fans out to, so the
// object is never mutated after the event is built and its JSON is encoded once.
type Event struct {
	Type     Type
	Resource schema.GroupVersionResource
	// Object is the object after the change (the last state known for Deleted), without
	// managedFields.
	Object *unstructured.Unstructured
	// OldObject is the object before an Updated change, when the informer keeps old
	// objects (only while a subscriber needs them); nil otherwise.
	OldObject *unstructured.Unstructured
	// MetadataUnchanged is true for an Updated change that left metadata as it was
	// (resourceVersion and managedFields aside), as far as the informer knows.
	MetadataUnchanged bool
	// ObservedAt is when the operator saw the change.
	ObservedAt time.Time
	// Stream names the informer that produced the event, so completions find their checkpoint.
	Stream string
	// StreamRV is the resourceVersion as a number, read once for every subscriber; 0 when
	// the event is not part of a stream or its resourceVersion is not a number.
	StreamRV uint64
	// Replayed marks a change from before the informer (re)started: caught up from a
	// checkpoint, and due only to subscribers whose checkpoint is older than it.
	Replayed bool
	// Initial marks an Added from a subscriber's initial list: an object that existed when
	// it joined, not a change.
	Initial bool

	// id, path and time are computed once for all subscribers.
	id       string
	idOnce   sync.Once
	path     string
	pathOnce sync.Once
	time     string
	timeOnce sync.Once

	encodeOnce sync.Once
	data       []byte
	encodeErr  error

	sizeOnce sync.Once
	size     int

	// merged counts the changes merged into the event (see Merge); 0 for one change.
	merged      int
	changedOnce sync.Once
	changed     []string

	memoMu    sync.Mutex
	memo      map[string]memoEntry
	decisions map[string]*decision
}

type decision struct {
	once sync.Once
	ok   bool
	err  error
}

// Decide computes a yes-or-no about the event once per key (a filter expression, say) and
// shares it between the subscribers that ask the same question. Different questions are
// answered concurrently: a slow one holds up only those who ask it.
func (e *Event) Decide(key string, decide func() (bool, error)) (bool, error) {
	e.memoMu.Lock()
	d := e.decisions[key]
	if d == nil {
		if e.decisions == nil {
			e.decisions = map[string]*decision{}
		}
		d = &decision{}
		e.decisions[key] = d
	}
	e.memoMu.Unlock()
	d.once.Do(func() { d.ok, d.err = decide() })
	return d.ok, d.err
}

type memoEntry struct {
	data []byte
	err  error
}

// Memo encodes a variant of the data once per event (for example with Secret values
// redacted) and shares it between the subscribers that want that variant.
func (e *Event) Memo(variant string, encode func() ([]byte, error)) ([]byte, error) {
	e.memoMu.Lock()
	defer e.memoMu.Unlock()
	if m, ok := e.memo[variant]; ok {
		return m.data, m.err
	}
	data, err := encode()
	if e.memo == nil {
		e.memo = map[string]memoEntry{}
	}
	e.memo[variant] = memoEntry{data, err}
	return data, err
}

// New builds an event observed now.
func New(t Type, gvr schema.GroupVersionResource, obj *unstructured.Unstructured) *Event {
	return &Event{Type: t, Resource: gvr, Object: obj, ObservedAt: time.Now()}
}

// Data is the object as JSON, encoded on first use and shared by all subscribers.
func (e *Event) Data() ([]byte, error) {
	e.encodeOnce.Do(func() { e.data, e.encodeErr = json.Marshal(e.Object.Object) })
	return e.data, e.encodeErr
}

// Size is about how many bytes the event holds, computed once: what delivery's memory
// budget counts. Each object is counted twice its JSON size: once decoded, once for the
// encoding an event keeps once it was sent (in memory a decoded object takes more than its
// JSON, which the budget's default leaves room for).
func (e *Event) Size() int {
	e.sizeOnce.Do(func() {
		if e.Object != nil {
			e.size = 2 * jsonSize(e.Object.Object)
		}
		if e.OldObject != nil {
			e.size += jsonSize(e.OldObject.Object)
		}
		for _, p := range e.changed {
			e.size += len(p) + 16
		}
		e.size += 256 // the event itself: id, path, attributes
	})
	return e.size
}

// jsonSize estimates the JSON size of a decoded object without encoding it.
func jsonSize(v any) int {
	switch v := v.(type) {
	case map[string]any:
		n := 2
		for k, x := range v {
			n += len(k) + 4 + jsonSize(x)
		}
		return n
	case []any:
		n := 2
		for _, x := range v {
			n += 1 + jsonSize(x)
		}
		return n
	case string:
		return len(v) + 2
	default:
		return 8 // numbers, booleans, null
	}
}

// ResourceVersion of the object as the change left it.
func (e *Event) ResourceVersion() string { return e.Object.GetResourceVersion() }

// ObjectKey is namespace/name, or name for cluster-scoped objects.
func (e *Event) ObjectKey() string { return KeyOf(e.Object) }

// KeyOf is an object's namespace/name, or name when it is cluster-scoped: how the operator
// tells objects apart everywhere.
func KeyOf(u *unstructured.Unstructured) string {
	if ns := u.GetNamespace(); ns != "" {
		return ns + "/" + u.GetName()
	}
	return u.GetName()
}

// IsWriteNoise tells the metadata fields that every write changes (resourceVersion) or
// that only record who wrote (managedFields): a change to nothing else is no change anyone
// can see.
func IsWriteNoise(metadataField string) bool {
	return metadataField == "resourceVersion" || metadataField == "managedFields"
}

// ObjectPath is the object's API path, e.g. /api/v1/namespaces/team-a/configmaps/settings;
// for a Resync, the collection's path.
func (e *Event) ObjectPath() string {
	e.pathOnce.Do(func() {
		if e.Type == Resync {
			ns, _ := e.Object.Object["namespace"].(string)
			e.path = strings.TrimSuffix(ResourcePath(e.Resource, ns, ""), "/")
			return
		}
		e.path = ResourcePath(e.Resource, e.Object.GetNamespace(), e.Object.GetName())
	})
	return e.path
}

// Time is ObservedAt as a CloudEvents time attribute (RFC 3339, UTC). Set ObservedAt
// before the first call.
func (e *Event) Time() string {
	e.timeOnce.Do(func() { e.time = e.ObservedAt.UTC().Format(time.RFC3339Nano) })
	return e.time
}

// ResourcePath is the API path of a named object of a resource.
func ResourcePath(gvr schema.GroupVersionResource, namespace, name string) string {
	p := "/apis/" + gvr.Group + "/" + gvr.Version
	if gvr.Group == "" {
		p = "/api/" + gvr.Version
	}
	if namespace != "" {
		p += "/namespaces/" + namespace
	}
	return p + "/" + gvr.Resource + "/" + name
}

// ID is deterministic from the object's uid, resourceVersion and the change type, so a
// redelivery of the same change carries the same id and receivers can drop duplicates.
func (e *Event) ID() string {
	e.idOnce.Do(func() {
		if e.id == "" {
			e.id = string(e.Object.GetUID()) + ":" + e.Object.GetResourceVersion() + ":" + string(e.Type)
		}
	})
	return e.id
}

// ResyncInfo is the data of a Resync event.
type ResyncInfo struct {
	// Reason is why the checkpoint could not be used, e.g. WatchExpired.
	Reason string `json:"reason"`
	// Checkpoint is the resourceVersion the subscriber had received everything up to.
	Checkpoint string `json:"checkpoint"`
	// ResourceVersion is where the re-list resumed the stream.
	ResourceVersion string `json:"resourceVersion"`
	// Namespace is the scope re-listed; empty for all namespaces or cluster-scoped resources.
	Namespace string `json:"namespace,omitempty"`
	// DeletionsMayBeMissing is true when objects deleted in the gap were not seen.
	DeletionsMayBeMissing bool `json:"deletionsMayBeMissing"`
}

// NewResync builds the Resync event of one subscriber. Its id is deterministic from the
// subscriber, the stream and the checkpoint, so a repeat after a restart carries the same id.
func NewResync(gvr schema.GroupVersionResource, stream, subscriber string, info ResyncInfo) *Event {
	obj := map[string]any{
		"reason":                info.Reason,
		"checkpoint":            info.Checkpoint,
		"resourceVersion":       info.ResourceVersion,
		"deletionsMayBeMissing": info.DeletionsMayBeMissing,
	}
	if info.Namespace != "" {
		obj["namespace"] = info.Namespace
	}
	ev := New(Resync, gvr, &unstructured.Unstructured{Object: obj})
	ev.Stream = stream
	ev.id = "resync:" + subscriber + ":" + stream + ":" + info.Checkpoint
	return ev
}
