package sink

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/dynamic-notifier/dynamic-notifier/internal/payload"
)

// Webhook posts CloudEvents over HTTP.
type Webhook struct {
	URL    string
	Client *http.Client
	// Structured sends application/cloudevents+json instead of binary mode.
	Structured bool
	// Batch, when above zero, sends application/cloudevents-batch+json arrays of up to
	// Batch events; it takes precedence over Structured.
	Batch int
	// Header is added to every request (from the subscription's headersFrom Secret).
	Header http.Header
	// DisplayURL, when set, names the sink in errors instead of URL: for a URL that is a
	// credential as a whole, such as a Slack webhook's.
	DisplayURL string
	// SigningKey, when set, signs every request by the Standard Webhooks scheme. Signed
	// requests are never binary: binary mode carries type, subject and the other attributes
	// in ce-* headers, which the scheme does not sign, so they go structured instead.
	SigningKey []byte
}

// Batcher is a sink that takes several messages in one request.
type Batcher interface {
	Sink
	// BatchSize is the most messages one SendBatch takes; 1 or less means no batching.
	BatchSize() int
	// SendBatch sends msgs, in order, in one request: the operator counts them delivered
	// or failed together (a receiver may have handled part of a failed batch; delivery is
	// at least once, and event ids let receivers drop repeats).
	SendBatch(ctx context.Context, msgs []Message) error
}

// BatchSize is how many messages one request may carry.
func (w *Webhook) BatchSize() int { return max(w.Batch, 1) }

// Mode is how an HTTP sink puts events on the wire: the CloudEvents HTTP binding's
// content modes.
type Mode string

const (
	// ModeBinary: the data is the body, the attributes are ce-* headers.
	ModeBinary Mode = "binary"
	// ModeStructured: one application/cloudevents+json object.
	ModeStructured Mode = "structured"
	// ModeBatched: an application/cloudevents-batch+json array.
	ModeBatched Mode = "batched"
)

// ModeOf is the mode of a webhook asked for structured mode or batches of batch events,
// signed or not: batched when batch is above zero, else structured when asked or when
// signed (a signature covers the body only, not ce-* headers), else binary.
func ModeOf(structured bool, batch int, signed bool) Mode {
	switch {
	case batch > 0:
		return ModeBatched
	case structured || signed:
		return ModeStructured
	}
	return ModeBinary
}

// Mode is how w sends.
func (w *Webhook) Mode() Mode { return ModeOf(w.Structured, w.Batch, len(w.SigningKey) > 0) }

// Encode is the body of one request carrying msgs in mode m (one message unless batched),
// and the headers that describe it: Content-Type and, in binary mode, the CloudEvents
// attributes. A webhook adds its own headers, User-Agent and the signature when it sends.
func Encode(m Mode, msgs ...Message) (http.Header, []byte, error) {
	header := http.Header{}
	body, err := encodeInto(header, m, msgs)
	return header, body, err
}

// encodeInto writes what Encode returns into header.
func encodeInto(header http.Header, m Mode, msgs []Message) ([]byte, error) {
	if m == ModeBatched {
		header["Content-Type"] = []string{BatchContentType}
		return batchBody(msgs)
	}
	if len(msgs) != 1 {
		return nil, fmt.Errorf("%s mode carries one event per request, not %d", m, len(msgs))
	}
	if m == ModeStructured {
		header["Content-Type"] = []string{StructuredContentType}
		return structuredBody(msgs[0])
	}
	setBinaryHeaders(header, msgs[0])
	return messageData(msgs[0])
}

// Send posts msg. A response outside 2xx is an *HTTPError naming the URL and status.
func (w *Webhook) Send(ctx context.Context, msg Message) error {
	mode := w.Mode()
	if mode == ModeBatched {
		return w.SendBatch(ctx, []Message{msg})
	}
	header := http.Header{}
	maps.Copy(header, w.Header)
	body, err := encodeInto(header, mode, []Message{msg})
	if err != nil {
		return Unencodable(msg.Event, err)
	}
	return w.post(ctx, header, body, msg.Event.ID)
}

// SendBatch posts msgs as one batched-mode request.
func (w *Webhook) SendBatch(ctx context.Context, msgs []Message) error {
	header := http.Header{}
	maps.Copy(header, w.Header)
	body, err := encodeInto(header, ModeBatched, msgs)
	if err != nil {
		return fmt.Errorf("encoding a batch of %d events: %w: %w", len(msgs), errPermanent, err)
	}
	return w.post(ctx, header, body, func() string { return batchID(msgs) })
}

// UserAgent goes with every request unless the sink's headers set their own.
const UserAgent = "dynamic-notifier"

// shown is how errors name the sink.
func (w *Webhook) shown() string { return cmp.Or(w.DisplayURL, w.URL) }

// post sends body; id names the request for the signature, computed only when signing.
func (w *Webhook) post(ctx context.Context, header http.Header, body []byte, id func() string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, nil)
	if err != nil {
		// The parse error quotes the URL: only its masked text is kept.
		return &RequestError{Method: http.MethodPost, URL: w.shown(), raw: w.URL,
			Err: &maskedError{msg: maskKnownURL(fmt.Errorf("%w: %w", errPermanent, err).Error(), w.URL), err: errPermanent}}
	}
	req.Header = header
	if _, set := header["User-Agent"]; !set {
		// Some APIs (GitHub's) refuse requests without one; Go's default names no product.
		header["User-Agent"] = []string{UserAgent}
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	if len(w.SigningKey) > 0 {
		id, now := id(), time.Now()
		req.Header[HeaderWebhookID] = []string{id}
		req.Header[HeaderWebhookTimestamp] = []string{strconv.FormatInt(now.Unix(), 10)}
		req.Header[HeaderWebhookSignature] = []string{sign(w.SigningKey, id, now, body)}
	}
	resp, followed, err := send(w.Client, req)
	if err != nil {
		if uerr, ok := errors.AsType[*url.Error](err); ok {
			err = uerr.Err
		}
		return &RequestError{Method: http.MethodPost, URL: w.shown(), raw: w.URL, Err: err}
	}
	// Drain so the connection goes back to the pool.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		rerr := &RedirectError{Status: resp.Status, Rule: "this redirect is not followed"}
		loc, err := resp.Location()
		if err == nil {
			rerr.Location = loc.String()
		}
		if !followed && err == nil && redirectStatus(resp.StatusCode) {
			rerr.Rule = "redirects are not followed"
		}
		return &RequestError{Method: http.MethodPost, URL: w.shown(), raw: w.URL, Err: rerr}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &HTTPError{Method: http.MethodPost, URL: w.shown(), StatusCode: resp.StatusCode, Status: resp.Status,
			RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	}
	return nil
}

// redirectStatus tells the answers an HTTP client follows when it has a Location.
func redirectStatus(code int) bool {
	switch code {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect,
		http.StatusPermanentRedirect:
		return true
	}
	return false
}

// setBinaryHeaders writes the CloudEvents HTTP binary-mode attributes. Written by hand
// rather than through the SDK's binding: this runs once per delivery, and the keys are
// already canonical, so no per-header work is repeated.
func setBinaryHeaders(h http.Header, msg Message) {
	ev := msg.Event
	h["Ce-Specversion"] = []string{"1.0"}
	h["Ce-Id"] = []string{ev.ID()}
	h["Ce-Type"] = []string{CloudEventType(ev.Type)}
	h["Ce-Source"] = []string{msg.Source}
	h["Ce-Subject"] = []string{ev.ObjectPath()}
	h["Ce-Time"] = []string{ev.Time()}
	h["Content-Type"] = []string{msg.dataContentType()}
	for k, v := range msg.Extensions {
		h[http.CanonicalHeaderKey("ce-"+k)] = []string{MaskURLsIn(v)}
	}
}

// messageData is the event data: the subscription's shaped payload, or, for a message
// without one, a reference to the object (see Message.Data).
func messageData(msg Message) ([]byte, error) {
	if msg.Data != nil {
		return msg.Data, nil
	}
	return unshaped.Data(msg.Event)
}

// unshaped is the shape of a message without data: a reference, which holds nothing a
// subscription's shape could leave out, and a Resync's data as it is.
var unshaped = payload.Shape{Mode: payload.Reference}
