package watch

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	apiwatch "k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// refusingServer answers its first `refusals` requests with a 429 carrying message and a
// Retry-After of retryAfter seconds, as the API server does while a watch cache initializes,
// and an empty list after that. It counts the requests.
func refusingServer(t *testing.T, refusals int64, message string, retryAfter int) (*httptest.Server, *atomic.Int64) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if requests.Add(1) <= refusals {
			w.Header().Set("Retry-After", fmt.Sprint(retryAfter))
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":%q,`+
				`"reason":"TooManyRequests","details":{"retryAfterSeconds":%d},"code":429}`, message, retryAfter)
			return
		}
		_, _ = fmt.Fprint(w, `{"kind":"GadgetList","apiVersion":"bench.example.com/v1","metadata":{"resourceVersion":"7"},"items":[]}`)
	}))
	t.Cleanup(srv.Close)
	return srv, &requests
}

const initializing = "storage is (re)initializing"

var gadgets = schema.GroupVersionResource{Group: "bench.example.com", Version: "v1", Resource: "gadgets"}

func gadgetsIn(t *testing.T, srv *httptest.Server) func() (*unstructured.UnstructuredList, error) {
	client, err := NewClient(&rest.Config{Host: srv.URL}, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	ri := client.Resource(gadgets).Namespace("ns")
	return func() (*unstructured.UnstructuredList, error) { return ri.List(t.Context(), metav1.ListOptions{}) }
}

// The informers' client hands a Retry-After back instead of sleeping on it, for lists and
// for watches alike.
func TestClientReturnsRetryAfter(t *testing.T) {
	for _, verb := range []string{"list", "watch"} {
		t.Run(verb, func(t *testing.T) {
			srv, requests := refusingServer(t, 1, initializing, 1)
			client, err := NewClient(&rest.Config{Host: srv.URL}, srv.Client())
			if err != nil {
				t.Fatal(err)
			}
			ri := client.Resource(gadgets).Namespace("ns")
			var w apiwatch.Interface
			if verb == "list" {
				_, err = ri.List(t.Context(), metav1.ListOptions{})
			} else if w, err = ri.Watch(t.Context(), metav1.ListOptions{}); w != nil {
				w.Stop()
			}
			if !apierrors.IsTooManyRequests(err) {
				t.Fatalf("want the 429, got %v", err)
			}
			if n := requests.Load(); n != 1 {
				t.Fatalf("the client retried by itself: %d requests", n)
			}
		})
	}
}

func TestRetryBriefly(t *testing.T) {
	cases := []struct {
		name       string
		refusals   int64
		message    string
		retryAfter int
		wantErr    bool
		requests   int64
	}{
		{"initializing, then ready", 2, initializing, 1, false, 3},
		{"initializing with a cause, then ready", 1, initializing + ": etcd is slow", 1, false, 2},
		{"initializing for too long: bounded", 100, initializing, 1, true, int64(briefRetry.Steps) + 1},
		{"down long enough to ask for more: the caller's backoff", 1, initializing, 5, true, 1},
		{"throttled, not initializing: the caller's backoff", 1, "Too many requests, please try again later.", 1, true, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv, requests := refusingServer(t, c.refusals, c.message, c.retryAfter)
			_, err := retryBriefly(context.Background(), gadgetsIn(t, srv))
			if (err != nil) != c.wantErr {
				t.Fatalf("error: %v, want one: %v", err, c.wantErr)
			}
			if n := requests.Load(); n != c.requests {
				t.Fatalf("%d requests, want %d", n, c.requests)
			}
		})
	}
}

// A cancelled caller is not kept waiting for the next attempt.
func TestRetryBrieflyStopsWithContext(t *testing.T) {
	srv, requests := refusingServer(t, 100, initializing, 1)
	list := gadgetsIn(t, srv)
	ctx, cancel := context.WithCancel(t.Context())
	_, err := retryBriefly(ctx, func() (*unstructured.UnstructuredList, error) {
		defer cancel()
		return list()
	})
	if !apierrors.IsTooManyRequests(err) || requests.Load() != 1 {
		t.Fatalf("got %v after %d requests, want the first 429", err, requests.Load())
	}
}

// A GET whose connection breaks (as when the API server restarts) is tried again at once,
// as client-go would have done before MaxRetries(0).
func TestRetryBrieflyRetriesABrokenConnection(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if requests.Add(1) == 1 {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			_ = conn.Close() // no response at all: the client reads EOF
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprint(w, `{"kind":"GadgetList","apiVersion":"bench.example.com/v1","metadata":{"resourceVersion":"7"},"items":[]}`)
	}))
	t.Cleanup(srv.Close)
	if _, err := retryBriefly(t.Context(), gadgetsIn(t, srv)); err != nil {
		t.Fatalf("a broken connection was not retried: %v", err)
	}
	if n := requests.Load(); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
}
