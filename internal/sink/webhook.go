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

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
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
	ce, err := CloudEvent(msg)
	if err != nil {
		return fmt.Errorf("encoding %s: %w: %w", msg.Event.ObjectPath(), errPermanent, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", errPermanent, err)
	}
	maps.Copy(req.Header, w.Header)
	if w.Structured {
		err = writeStructured(req, ce)
	} else {
		err = cehttp.WriteRequest(ctx, binding.ToMessage(&ce), req)
	}
	if err != nil {
		return fmt.Errorf("POST %s: %w: %w", w.URL, errPermanent, err)
	}
	if len(w.SigningKey) > 0 {
		body := ce.DataEncoded // binary mode: the body is the data
		if w.Structured {
			if body, err = io.ReadAll(req.Body); err != nil {
				return fmt.Errorf("POST %s: %w: %w", w.URL, errPermanent, err)
			}
			req.Body = io.NopCloser(bytes.NewReader(body))
		}
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

func writeStructured(req *http.Request, ce event.Event) error {
	body, err := ce.MarshalJSON()
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/cloudevents+json")
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	return nil
}
