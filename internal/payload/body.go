package payload

import (
	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/template"
)

// JSON is the content type of every body but a template's.
const JSON = "application/json"

// Body is what a request carries for ev in this shape, and its content type: the
// template's rendering when the shape has one (of the redacted objects, for Secrets a
// subscription did not opt in to), else Data as JSON. A Resync's data is never templated.
func (s Shape) Body(ev *event.Event) ([]byte, string, error) {
	if s.Template == nil || ev.Type == event.Resync {
		data, err := s.Data(ev)
		return data, JSON, err
	}
	obj, old := ev.Object, ev.OldObject
	if s.RedactSecrets {
		obj = Redact(obj)
		if old != nil {
			old = Redact(old)
		}
	}
	return s.Template.Render(string(ev.Type), obj, old, ev.ChangedPaths(), template.Attributes{ID: ev.ID(), Type: ev.Type.CloudEventType(),
		Source: s.Source, Subject: ev.ObjectPath(), Time: ev.ObservedAt})
}
