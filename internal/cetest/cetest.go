// Package cetest reads CloudEvents the way a receiver in a test does.
package cetest

import (
	"net/http"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

// Events reads the CloudEvents of one request in any content mode: binary and structured
// carry one, batched any number.
func Events(req *http.Request) ([]cloudevents.Event, error) {
	if req.Header.Get("Content-Type") == sink.BatchContentType {
		return cehttp.NewEventsFromHTTPRequest(req)
	}
	ev, err := cehttp.NewEventFromHTTPRequest(req)
	if err != nil {
		return nil, err
	}
	return []cloudevents.Event{*ev}, nil
}
