package sink

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Webhook posts CloudEvents over HTTP.
type Webhook struct {
	URL    string
	Client *http.Client
	// Structured sends application/cloudevents+json instead of binary mode.
	Structured bool
	// Header is added to every request (from the subscription's headersFrom Secret).
	Header http.Header
	// SigningKey, when set, signs every request (see Sign).
	SigningKey []byte
}

// SignatureHeader carries "t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">".
const SignatureHeader = "Dynamic-Notifier-Signature"

// Sign computes the signature header value for a body sent at t.
func Sign(key, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(ts))
	mac.Write([]byte("."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// Send posts msg. A response outside 2xx is an *HTTPError naming the URL and status.
func (w *Webhook) Send(ctx context.Context, msg Message) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", errPermanent, err)
	}
	maps.Copy(req.Header, w.Header)
	var body []byte
	if w.Structured {
		body, err = structuredBody(msg)
		req.Header["Content-Type"] = []string{"application/cloudevents+json"}
	} else {
		body, err = messageData(msg)
		setBinaryHeaders(req.Header, msg)
	}
	if err != nil {
		return fmt.Errorf("encoding %s: %w: %w", msg.Event.ObjectPath(), errPermanent, err)
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	if len(w.SigningKey) > 0 {
		req.Header.Set(SignatureHeader, Sign(w.SigningKey, body, time.Now()))
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
		return &HTTPError{Method: http.MethodPost, URL: w.URL, StatusCode: resp.StatusCode, Status: resp.Status,
			RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	}
	return nil
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
	h["Ce-Time"] = []string{ev.ObservedAt.UTC().Format(time.RFC3339Nano)}
	h["Content-Type"] = []string{"application/json"}
	for k, v := range msg.Extensions {
		h[http.CanonicalHeaderKey("ce-"+k)] = []string{v}
	}
}

// messageData is the event data: the subscription's shaped payload or the shared encoding.
func messageData(msg Message) ([]byte, error) {
	if msg.Data != nil {
		return msg.Data, nil
	}
	return msg.Event.Data()
}

func structuredBody(msg Message) ([]byte, error) {
	ce, err := CloudEvent(msg)
	if err != nil {
		return nil, err
	}
	return ce.MarshalJSON()
}
