package sink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// Webhook posts CloudEvents in HTTP binary content mode.
type Webhook struct {
	URL    string
	Client *http.Client
}

// NewHTTPClient is the client webhooks share: keep-alive connections pooled per host.
func NewHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	t.IdleConnTimeout = 90 * time.Second
	return &http.Client{Transport: t}
}

// Send posts ev; any status outside 2xx is an error naming the URL and status.
func (w *Webhook) Send(ctx context.Context, ev *event.Event, source string) error {
	ce, err := CloudEvent(ev, source)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", ev.ObjectPath(), err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, nil)
	if err != nil {
		return err
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&ce), req); err != nil {
		return fmt.Errorf("POST %s: %w", w.URL, err)
	}
	resp, err := w.Client.Do(req)
	if err != nil {
		if uerr, ok := errors.AsType[*url.Error](err); ok {
			err = uerr.Err
		}
		return fmt.Errorf("POST %s: %w", w.URL, err)
	}
	// Drain so the connection goes back to the pool.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("POST %s: %s", w.URL, resp.Status)
	}
	return nil
}
