package controller

import (
	"errors"
	"math"
	"net/http"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
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
	backoffs map[types.NamespacedName]*wait.Backoff
}

const (
	checkRetryMin = 500 * time.Millisecond
	checkRetryMax = 30 * time.Second
)

func (c *checkRetry) next(nn types.NamespacedName) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.backoffs == nil {
		c.backoffs = map[types.NamespacedName]*wait.Backoff{}
	}
	b, ok := c.backoffs[nn]
	if !ok {
		b = &wait.Backoff{Duration: checkRetryMin, Factor: 2, Jitter: 0.5, Steps: math.MaxInt32, Cap: checkRetryMax}
		c.backoffs[nn] = b
	}
	return b.Step()
}

func (c *checkRetry) reset(nn types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.backoffs, nn)
}
