package sink

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// timeoutError is a net.Error that timed out, as a dial or read deadline reports.
type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

func httpErr(code int) error {
	return &HTTPError{Method: http.MethodPost, URL: "http://sink", StatusCode: code, Status: http.StatusText(code)}
}

func TestRetryableAndFailureReason(t *testing.T) {
	cases := []struct {
		name      string
		err       error
		retryable bool
		reason    string
	}{
		{"400", httpErr(http.StatusBadRequest), false, "client_error"},
		{"401", httpErr(http.StatusUnauthorized), false, "client_error"},
		{"404", httpErr(http.StatusNotFound), false, "client_error"},
		{"408", httpErr(http.StatusRequestTimeout), true, "client_error"},
		{"429", httpErr(http.StatusTooManyRequests), true, "throttled"},
		{"500", httpErr(http.StatusInternalServerError), true, "server_error"},
		{"503", httpErr(http.StatusServiceUnavailable), true, "server_error"},
		// Callers wrap errors; the classification must see through that.
		{"wrapped 503", fmt.Errorf("delivering: %w", httpErr(http.StatusServiceUnavailable)), true, "server_error"},
		{"wrapped 400", fmt.Errorf("delivering: %w", httpErr(http.StatusBadRequest)), false, "client_error"},
		{"deadline", context.DeadlineExceeded, true, "timeout"},
		{"wrapped deadline", fmt.Errorf("POST http://sink: %w", context.DeadlineExceeded), true, "timeout"},
		{"net timeout", fmt.Errorf("POST http://sink: %w", timeoutError{}), true, "timeout"},
		{"other", errors.New("connection reset by peer"), true, "connection"},
		{"permanent", fmt.Errorf("encoding: %w", errPermanent), false, "invalid"},
		{"denied", fmt.Errorf("POST http://sink: %w", ErrDeniedAddress), false, "denied"},
		{"redirect", fmt.Errorf("POST http://sink: %w", &RedirectError{Status: "307 Temporary Redirect",
			Location: "http://elsewhere", Rule: "redirects are not followed"}), false, "redirect"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Retryable(tc.err); got != tc.retryable {
				t.Errorf("Retryable(%v) = %v, want %v", tc.err, got, tc.retryable)
			}
			if got := FailureReason(tc.err); got != tc.reason {
				t.Errorf("FailureReason(%v) = %q, want %q", tc.err, got, tc.reason)
			}
		})
	}
}

func TestRetryAfterOnlyFromHTTPError(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want time.Duration
	}{
		{"http error", &HTTPError{StatusCode: 503, RetryAfter: 3 * time.Second}, 3 * time.Second},
		{"wrapped http error", fmt.Errorf("x: %w", &HTTPError{StatusCode: 429, RetryAfter: time.Second}), time.Second},
		{"other", errors.New("boom"), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := RetryAfter(tc.err); got != tc.want {
				t.Errorf("RetryAfter = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2015, 10, 21, 7, 27, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"120", 2 * time.Minute},
		{"-5", 0},  // a negative delay is not valid
		{"1.5", 0}, // delay-seconds is an integer
		{"soon", 0},
		// All three date formats HTTP allows.
		{"Wed, 21 Oct 2015 07:28:00 GMT", time.Minute},
		{"Wednesday, 21-Oct-15 07:28:00 GMT", time.Minute},
		{"Wed Oct 21 07:28:00 2015", time.Minute},
		{"Wed, 21 Oct 2015 07:27:00 GMT", 0}, // now: no wait
		{"Wed, 21 Oct 2015 07:00:00 GMT", 0}, // past: no wait
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			if got := parseRetryAfter(tc.in, now); got != tc.want {
				t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}
