// Package sink turns events into CloudEvents and sends them somewhere: one file per kind of
// sink. Sinks are safe for concurrent use and hold no per-subscription state beyond their
// settings.
package sink

import (
	"context"
	"strings"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/payload"
)

// TypePrefix starts the CloudEvents type of every resource change.
const TypePrefix = event.CloudEventTypePrefix

// Message is one event on its way to a sink.
type Message struct {
	Event *event.Event
	// Source is the CloudEvents source: the subscription's API path.
	Source string
	// Extensions are extra CloudEvents attributes (lower-case alphanumeric names), such as
	// the reason a dead letter failed.
	Extensions map[string]string
	// Data is the event's data as the subscription sends it: its shaped payload (Secret
	// values redacted unless it opted in), or the event's shared encoding. Sinks never
	// encode the object themselves: a message without Data (its payload could not be
	// shaped, and it goes to the dead-letter sink) carries only a reference to the object
	// (apiVersion, kind, namespace, name, uid, resourceVersion).
	Data []byte
	// ContentType is Data's media type; empty means application/json.
	ContentType string
}

// dataContentType is the media type of the message's data.
func (m Message) dataContentType() string {
	if m.ContentType == "" {
		return payload.JSON
	}
	return m.ContentType
}

// jsonData tells whether the data is JSON, which a structured event embeds as it is;
// other data goes in as a JSON string.
func (m Message) jsonData() bool {
	ct := m.dataContentType()
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(strings.ToLower(ct))
	return ct == payload.JSON || strings.HasSuffix(ct, "+json")
}

// Sink sends one message.
type Sink interface {
	Send(ctx context.Context, msg Message) error
}

// ResyncType is the CloudEvents type of a Resync event.
const ResyncType = event.ResyncCloudEventType

// CloudEventType is the CloudEvents type for a change, e.g. io.dynamicnotifier.resource.added.
func CloudEventType(t event.Type) string { return t.CloudEventType() }
