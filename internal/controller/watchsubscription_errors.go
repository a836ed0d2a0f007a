package controller

import (
	"errors"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
)

// couldNotAsk tells a failure to get an answer from the API server (unreachable,
// overloaded, timing out, the operator's own credentials refused, or the reconcile
// cancelled by a shutdown) from an answer about the subscription (NotFound, Forbidden,
// Invalid). Only an answer may stop a subscription.
func couldNotAsk(err error) bool {
	if err == nil {
		return false
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		code := status.Status().Code
		return code == 0 || code == http.StatusUnauthorized || code == http.StatusRequestTimeout ||
			code == http.StatusTooManyRequests || code >= http.StatusInternalServerError
	}
	return true // no answer at all: a transport error, a timeout, a cancelled context
}

// checkRetry paces the retries of checks that could not be made, per subscription:
// exponential from checkRetryMin to checkRetryMax with jitter, reset once a check works.
type checkRetry struct {
	mu       sync.Mutex
	attempts map[types.NamespacedName]int
}

const (
	checkRetryMin = 500 * time.Millisecond
	checkRetryMax = 30 * time.Second
)

func (c *checkRetry) next(nn types.NamespacedName) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.attempts == nil {
		c.attempts = map[types.NamespacedName]int{}
	}
	n := c.attempts[nn]
	c.attempts[nn] = n + 1
	d := checkRetryMin << min(n, 6)
	d = min(d, checkRetryMax)
	return d/2 + rand.N(d/2+1) //nolint:gosec // jitter needs no cryptographic randomness
}

func (c *checkRetry) reset(nn types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.attempts, nn)
}
