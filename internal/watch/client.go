package watch

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// NewClient returns the dynamic client the registry is meant to watch through. Unlike
// client-go's default, it does not sleep on a Retry-After answer (whole seconds, up to ten
// times) but returns it: the informers retry with backoffs of their own, which are shorter
// where the wait is known to be short (see untilStorageReady).
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

// storageInitRetry paces retries while the API server's watch cache for a resource
// initializes, as it does for a CRD's first tens of milliseconds after it is Established.
// About as long in all as the server's one-second Retry-After; then the caller's own
// backoff takes over.
var storageInitRetry = wait.Backoff{Duration: 25 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 5}

// untilStorageReady calls call again, with storageInitRetry, while it fails because the
// resource's watch cache is (re)initializing; any other outcome is returned at once.
func untilStorageReady[T any](ctx context.Context, call func() (T, error)) (T, error) {
	b := storageInitRetry
	for {
		v, err := call()
		if err == nil || b.Steps == 0 || !storageInitializing(err) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(b.Step()):
		}
	}
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
