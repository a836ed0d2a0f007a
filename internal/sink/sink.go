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

// Sink sends one event. source is the CloudEvents source: the subscription's API path.
type Sink interface {
	Send(ctx context.Context, ev *event.Event, source string) error
}

// CloudEventType is the CloudEvents type for a change, e.g. io.dynamicnotifier.resource.added.
func CloudEventType(t event.Type) string { return TypePrefix + strings.ToLower(string(t)) }

// CloudEvent builds the CloudEvents 1.0 form of a change.
func CloudEvent(ev *event.Event, source string) (cloudevents.Event, error) {
	ce := cloudevents.New(cloudevents.CloudEventsVersionV1)
	ce.SetID(ev.ID())
	ce.SetType(CloudEventType(ev.Type))
	ce.SetSource(source)
	ce.SetSubject(ev.ObjectPath())
	ce.SetTime(ev.ObservedAt)
	ce.SetDataContentType("application/json")
	data, err := ev.Data()
	if err != nil {
		return ce, err
	}
	// Shared, already encoded JSON: no copy, no re-encoding per subscriber.
	ce.DataEncoded = data
	return ce, nil
}
