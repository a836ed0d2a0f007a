package sink

import (
	"context"

	"github.com/go-logr/logr"
)

// Log writes each event as one structured line with the CloudEvents attributes.
type Log struct {
	Logger logr.Logger
}

// Send logs ev at info level.
func (l *Log) Send(_ context.Context, msg Message) error {
	ev, source := msg.Event, msg.Source
	data, err := messageData(msg)
	if err != nil {
		return Unencodable(ev, err)
	}
	l.Logger.Info("Event",
		"id", ev.ID(),
		"type", CloudEventType(ev.Type),
		"source", source,
		"subject", ev.ObjectPath(),
		"time", ev.ObservedAt,
		"datacontenttype", msg.dataContentType(),
		"data", string(data),
		"extensions", msg.Extensions)
	return nil
}
