package watch

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// NewClient returns the dynamic client the registry is meant to watch through. Unlike
// client-go's default, it does not sleep on a Retry-After answer (whole seconds, up to ten
// times) but returns it: the informers retry with backoffs of their own, which are shorter
// where the wait is known to be short (see retryBriefly). The same setting ends client-go's
// silent retries of a GET whose connection broke; retryBriefly takes those over.
func NewClient(cfg *rest.Config, httpClient *http.Client) (dynamic.Interface, error) {
	c := dynamic.ConfigFor(cfg)
	c.GroupVersion = nil // as dynamic.NewForConfigAndClient: paths are absolute
	rc, err := rest.UnversionedRESTClientForConfigAndClient(c, httpClient)
	if err != nil {
		return nil, err
	}
	return dynamic.New(noRetryAfter{rc}), nil
}

// noRetryAfter gives every GET (the registry only lists and watches) MaxRetries(0).
type noRetryAfter struct{ rest.Interface }

func (c noRetryAfter) Get() *rest.Request { return c.Interface.Get().MaxRetries(0) }

// briefRetry paces retries of failures that pass within a moment: the API server's watch
// cache for a resource initializing, as it does for a CRD's first tens of milliseconds
// after it is Established, or a connection that broke. About as long in all as the
// server's one-second Retry-After; then the caller's own backoff takes over.
var briefRetry = wait.Backoff{Duration: 25 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 5}

// retryBriefly calls call again, with briefRetry, while it fails in a way that passes
// within a moment (see transient); any other outcome is returned at once.
func retryBriefly[T any](ctx context.Context, call func() (T, error)) (T, error) {
	b := briefRetry
	for {
		v, err := call()
		if err == nil || b.Steps == 0 || !transient(err) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(b.Step()):
		}
	}
}

// transient tells the failures retryBriefly retries: a watch cache initializing, and the
// broken connections client-go itself retries a GET on (reset, EOF, a lost HTTP/2
// connection), as when an API server restarts.
func transient(err error) bool {
	return storageInitializing(err) ||
		utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err) || utilnet.IsHTTP2ConnectionLost(err)
}

// storageInitializing tells the 429 the API server answers a watch (or a list it cannot
// send to etcd) while the resource's watch cache is not ready. Only while it asks for the
// shortest wait it can: a cache down for longer asks for more and is left to the caller's
// backoff. The message is the only mark of it; should it change, so is every such 429.
func storageInitializing(err error) bool {
	var status apierrors.APIStatus
	if !apierrors.IsTooManyRequests(err) || !errors.As(err, &status) ||
		!strings.HasPrefix(status.Status().Message, "storage is (re)initializing") {
		return false
	}
	seconds, ok := apierrors.SuggestsClientDelay(err)
	return !ok || seconds <= 1
}
