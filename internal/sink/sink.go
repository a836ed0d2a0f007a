// Package sink turns events into CloudEvents and sends them somewhere: one file per kind of
// sink. Sinks are safe for concurrent use and hold no per-subscription state beyond their
// settings.
package sink

import (
	"context"
	"strings"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// TypePrefix starts the CloudEvents type of every resource change.
const TypePrefix = "io.dynamicnotifier.resource."

// Message is one event on its way to a sink.
type Message struct {
	Event *event.Event
	// Source is the CloudEvents source: the subscription's API path.
	Source string
	// Extensions are extra CloudEvents attributes (lower-case alphanumeric names), such as
	// the reason a dead letter failed.
	Extensions map[string]string
	// Data overrides the event's shared encoding when the subscription shapes its payload.
	Data []byte
}

// Sink sends one message.
type Sink interface {
	Send(ctx context.Context, msg Message) error
}

// ResyncType is the CloudEvents type of a Resync event.
const ResyncType = "io.dynamicnotifier.resync"

// CloudEventType is the CloudEvents type for a change, e.g. io.dynamicnotifier.resource.added.
func CloudEventType(t event.Type) string {
	switch t {
	case event.Resync:
		return ResyncType
	case event.Added:
		return TypePrefix + "added" // constant: no allocation per delivery
	case event.Updated:
		return TypePrefix + "updated"
	case event.Deleted:
		return TypePrefix + "deleted"
	}
	return TypePrefix + strings.ToLower(string(t))
}

// CloudEvent builds the CloudEvents 1.0 form of a message.
func CloudEvent(msg Message) (cloudevents.Event, error) {
	ev := msg.Event
	ce := cloudevents.New(cloudevents.CloudEventsVersionV1)
	ce.SetID(ev.ID())
	ce.SetType(CloudEventType(ev.Type))
	ce.SetSource(msg.Source)
	ce.SetSubject(ev.ObjectPath())
	ce.SetTime(ev.ObservedAt)
	ce.SetDataContentType("application/json")
	for k, v := range msg.Extensions {
		ce.SetExtension(k, v)
	}
	data := msg.Data
	if data == nil {
		var err error
		if data, err = ev.Data(); err != nil {
			return ce, err
		}
	}
	// Shared, already encoded JSON: no copy, no re-encoding per subscriber.
	ce.DataEncoded = data
	return ce, nil
}
