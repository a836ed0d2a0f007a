package sink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// HTTPError is a response outside 2xx.
type HTTPError struct {
	Method, URL string
	StatusCode  int
	Status      string
	// RetryAfter is what the sink asked for in a Retry-After header, 0 when absent.
	RetryAfter time.Duration
}

// Error names the URL with its credentials masked (MaskURL).
func (e *HTTPError) Error() string {
	return e.Method + " " + MaskURL(e.URL) + ": " + MaskURLsIn(e.Status)
}

// RequestError is a request that got no answer (or was refused before it was sent). Its
// message names the URL, with credentials masked (MaskURL) there and in the cause's text.
type RequestError struct {
	Method, URL string
	Err         error
	// raw is the URL the request went to when URL shows something else (a URL that is a
	// credential as a whole): the cause's text names URL in its place.
	raw string
}

func (e *RequestError) Error() string {
	text := e.Err.Error()
	if e.raw != "" && e.raw != e.URL {
		text = replaceQuoted(text, e.raw, e.URL)
	}
	return e.Method + " " + MaskURL(e.URL) + ": " + maskKnownURL(text, e.URL)
}

// replaceQuoted replaces old by new in text, as it is and as %q writes it.
func replaceQuoted(text, old, new string) string {
	text = strings.ReplaceAll(text, old, new)
	if q, nq := strconv.Quote(old), strconv.Quote(new); q[1:len(q)-1] != old {
		text = strings.ReplaceAll(text, q[1:len(q)-1], nq[1:len(nq)-1])
	}
	return text
}

func (e *RequestError) Unwrap() error { return e.Err }

// maskKnownURL masks a text that may quote rawURL, as it is or as %q writes it, and any
// other URL in it.
func maskKnownURL(text, rawURL string) string {
	if masked := MaskURL(rawURL); masked != rawURL {
		text = replaceQuoted(text, rawURL, masked)
	}
	return MaskURLsIn(text)
}

// maskedError is an error whose text was masked, standing in for one that quoted a URL:
// err is what errors.Is and errors.As find instead.
type maskedError struct {
	msg string
	err error
}

func (e *maskedError) Error() string { return e.msg }
func (e *maskedError) Unwrap() error { return e.err }

// RedirectError is a redirect the operator did not follow: a policy decision, not retried.
type RedirectError struct {
	// Status of the sink's answer, such as "307 Temporary Redirect".
	Status string
	// Location is where the sink sent the request, resolved against its URL; empty when the
	// answer named none.
	Location string
	// Rule says why the redirect was not followed.
	Rule string
}

// Error names the Location with its credentials masked (MaskURL): a redirect to a signed
// URL carries its signature.
func (e *RedirectError) Error() string {
	if e.Location == "" {
		return "the sink answered " + e.Status + ", a redirect without a Location"
	}
	return "the sink answered " + e.Status + ", a redirect to " + MaskURL(e.Location) + ": " + e.Rule
}

// Retryable tells whether a failed delivery may succeed when tried again: connection
// errors, timeouts, 408, 429 and 5xx. Other 4xx will fail the same way every time.
func Retryable(err error) bool {
	if berr, ok := errors.AsType[*BrokerError](err); ok {
		return berr.Retry
	}
	if herr, ok := errors.AsType[*HTTPError](err); ok {
		c := herr.StatusCode
		return c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500
	}
	if _, ok := errors.AsType[*RedirectError](err); ok {
		return false
	}
	return !errors.Is(err, errPermanent) && !errors.Is(err, ErrDeniedAddress)
}

// RetryAfter is the wait a sink asked for, 0 when it did not.
func RetryAfter(err error) time.Duration {
	if herr, ok := errors.AsType[*HTTPError](err); ok {
		return herr.RetryAfter
	}
	return 0
}

// Values of FailureReason.
const (
	ReasonThrottled   = "throttled"
	ReasonServerError = "server_error"
	ReasonClientError = "client_error"
	ReasonTimeout     = "timeout"
	ReasonInvalid     = "invalid"
	ReasonDenied      = "denied"
	ReasonConnection  = "connection"
	ReasonRedirect    = "redirect"
)

// FailureReasons are every value FailureReason returns.
var FailureReasons = []string{ReasonThrottled, ReasonServerError, ReasonClientError, ReasonTimeout, ReasonInvalid,
	ReasonDenied, ReasonConnection, ReasonRedirect}

// FailureReason sorts an error into a few stable values, for metric labels.
func FailureReason(err error) string {
	if berr, ok := errors.AsType[*BrokerError](err); ok {
		return berr.Reason
	}
	if _, ok := errors.AsType[*RedirectError](err); ok {
		return ReasonRedirect
	}
	if herr, ok := errors.AsType[*HTTPError](err); ok {
		switch c := herr.StatusCode; {
		case c == http.StatusTooManyRequests:
			return ReasonThrottled
		case c >= 500:
			return ReasonServerError
		default:
			return ReasonClientError
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return ReasonTimeout
	}
	if nerr, ok := errors.AsType[net.Error](err); ok && nerr.Timeout() {
		return ReasonTimeout
	}
	if errors.Is(err, errPermanent) {
		return ReasonInvalid
	}
	if errors.Is(err, ErrDeniedAddress) {
		return ReasonDenied
	}
	return ReasonConnection
}

// errPermanent marks failures no retry can fix (an event that cannot be encoded).
var errPermanent = errors.New("permanent")

// Unencodable is the failure of an event whose data cannot be encoded: permanent.
func Unencodable(ev *event.Event, err error) error {
	return fmt.Errorf("encoding %s: %w: %w", ev.ObjectPath(), errPermanent, err)
}

// TooLarge tells whether the sink refused a request for its size (413, or a broker's
// message too large): a smaller one may pass.
func TooLarge(err error) bool {
	if berr, ok := errors.AsType[*BrokerError](err); ok {
		return berr.TooLarge
	}
	herr, ok := errors.AsType[*HTTPError](err)
	return ok && herr.StatusCode == http.StatusRequestEntityTooLarge
}

// parseRetryAfter reads delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
