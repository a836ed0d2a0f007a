package sink

import (
	cloudevents "github.com/cloudevents/sdk-go/v2/event"
)

// CloudEvent builds the CloudEvents 1.0 form of a message with the SDK: what the
// hand-written encoders are checked against.
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
		ce.SetExtension(k, MaskURLsIn(v)) // as the sinks send them
	}
	data, err := messageData(msg)
	if err != nil {
		return ce, err
	}
	// Shared, already encoded JSON: no copy, no re-encoding per subscriber.
	ce.DataEncoded = data
	return ce, nil
}
