// Package payload shapes the data an event carries: the whole object, its metadata, or a
// reference, optionally in an envelope with the old object and the changed paths.
package payload

import (
	"encoding/json"
	"maps"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/template"
)

// Mode is how much of an object is sent.
type Mode string

const (
	Full      Mode = "Full"
	Metadata  Mode = "Metadata"
	Reference Mode = "Reference"
)

// Shape is a subscription's payload settings.
type Shape struct {
	Mode                Mode
	IncludeOldObject    bool
	IncludeChangedPaths bool
	// RedactSecrets replaces Secret values (data, stringData, last-applied-configuration)
	// by Redacted, keeping the keys.
	RedactSecrets bool
	// Template, when set, renders the whole body (see Body); Mode and the envelope options
	// do not apply then.
	Template *template.Template
	// Source is the CloudEvents source of the events (the subscription's path), for
	// templates.
	Source string
}

// Redacted stands in for a Secret value the subscription did not opt in to.
const Redacted = "<redacted>"

// Plain is true when the data is the whole object: the encoding shared by all such
// subscribers is used as is.
func (s Shape) Plain() bool {
	return (s.Mode == "" || s.Mode == Full) && !s.IncludeOldObject && !s.IncludeChangedPaths && !s.RedactSecrets &&
		s.Template == nil
}

// NeedsOldObject tells whether the shape carries anything about the old object.
func (s Shape) NeedsOldObject() bool {
	return s.IncludeOldObject || s.IncludeChangedPaths || s.Template != nil && s.Template.NeedsOldObject()
}

// Data encodes ev's data in this shape; a Resync's data, which is no object, goes as it is.
func (s Shape) Data(ev *event.Event) ([]byte, error) {
	if s.Plain() || ev.Type == event.Resync {
		return ev.Data()
	}
	if !s.IncludeOldObject && !s.IncludeChangedPaths {
		if s.Mode == "" || s.Mode == Full {
			// Every redacting subscriber of this event shares one encoding.
			return ev.Memo("redacted", func() ([]byte, error) { return json.Marshal(s.view(ev.Object)) })
		}
		return json.Marshal(s.view(ev.Object))
	}
	env := envelope{Object: s.view(ev.Object)}
	if ev.Type == event.Updated && ev.OldObject != nil {
		if s.IncludeOldObject {
			env.OldObject = s.view(ev.OldObject)
		}
		if s.IncludeChangedPaths {
			env.ChangedPaths = ev.ChangedPaths()
		}
	}
	return json.Marshal(env)
}

// envelope is the documented data shape when the old object or changed paths are asked for.
type envelope struct {
	Object       any      `json:"object"`
	OldObject    any      `json:"oldObject,omitempty"`
	ChangedPaths []string `json:"changedPaths,omitempty"`
}

func (s Shape) view(u *unstructured.Unstructured) any {
	if s.RedactSecrets {
		u = Redact(u)
	}
	switch s.Mode {
	case Metadata:
		return map[string]any{"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(), "metadata": u.Object["metadata"]}
	case Reference:
		ref := map[string]any{"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(), "name": u.GetName(),
			"uid": u.GetUID(), "resourceVersion": u.GetResourceVersion()}
		if ns := u.GetNamespace(); ns != "" {
			ref["namespace"] = ns
		}
		return ref
	}
	return u.Object
}

// ChangedPaths lists the dotted paths whose values differ between old and updated, sorted.
// Lists are compared whole; resourceVersion and managedFields are left out as noise.
func ChangedPaths(old, updated map[string]any) []string { return event.Diff(old, updated) }

// lastApplied is the annotation kubectl apply writes: for a Secret it holds the values.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// Redact returns a copy of a Secret with its values replaced by Redacted: every value of
// data and stringData (keys kept; a field that is not a map, which the API never serves,
// is replaced whole) and the last-applied-configuration annotation. What it does not
// change is shared with the original, which other subscribers may be reading.
func Redact(u *unstructured.Unstructured) *unstructured.Unstructured {
	out := make(map[string]any, len(u.Object))
	maps.Copy(out, u.Object)
	for _, field := range []string{"data", "stringData"} {
		switch v := out[field].(type) {
		case nil:
		case map[string]any:
			red := make(map[string]any, len(v))
			for k := range v {
				red[k] = Redacted
			}
			out[field] = red
		default:
			out[field] = Redacted
		}
	}
	if md, ok := out["metadata"].(map[string]any); ok {
		if ann, ok := md["annotations"].(map[string]any); ok {
			if _, has := ann[lastApplied]; has {
				mdCopy := make(map[string]any, len(md))
				maps.Copy(mdCopy, md)
				annCopy := make(map[string]any, len(ann))
				maps.Copy(annCopy, ann)
				annCopy[lastApplied] = Redacted
				mdCopy["annotations"] = annCopy
				out["metadata"] = mdCopy
			}
		}
	}
	return &unstructured.Unstructured{Object: out}
}
