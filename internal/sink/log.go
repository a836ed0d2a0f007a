package sink

import (
	"context"
	"maps"

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
		"extensions", maskedExtensions(msg.Extensions))
	return nil
}

// maskedExtensions is exts with URL credentials masked (MaskURLsIn) in the values: a dead
// letter's deliveryerror may name a sink URL. exts itself is left alone.
func maskedExtensions(exts map[string]string) map[string]string {
	var out map[string]string
	for k, v := range exts {
		if m := MaskURLsIn(v); m != v {
			if out == nil {
				out = maps.Clone(exts)
			}
			out[k] = m
		}
	}
	if out == nil {
		return exts
	}
	return out
}
