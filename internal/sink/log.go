package sink

import (
	"context"

	"github.com/go-logr/logr"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// Log writes each event as one structured line with the CloudEvents attributes.
type Log struct {
	Logger logr.Logger
}

// Send logs ev at info level.
func (l *Log) Send(_ context.Context, ev *event.Event, source string) error {
	data, err := ev.Data()
	if err != nil {
		return err
	}
	l.Logger.Info("Event",
		"id", ev.ID(),
		"type", CloudEventType(ev.Type),
		"source", source,
		"subject", ev.ObjectPath(),
		"time", ev.ObservedAt,
		"datacontenttype", "application/json",
		"data", string(data))
	return nil
}
