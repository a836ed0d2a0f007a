package v1alpha1

import "time"

// Defaults of the fields a WatchSubscription may leave out, in one place: the operator
// applies them when it plans a subscription, and the field docs state them. Together the
// delivery defaults ride out a sink outage of about seven minutes (1+2+4+8+16+32 s, then
// 60 s waits: 12 attempts span about 7 minutes) without losing events.
const (
	// DefaultServiceAccountName is the ServiceAccount a subscription acts as.
	DefaultServiceAccountName = "default"
	// DefaultTimeout bounds one delivery attempt.
	DefaultTimeout = 10 * time.Second
	// DefaultMaxAttempts counts the first attempt too.
	DefaultMaxAttempts = 12
	// DefaultBackoff is the wait before the second attempt, doubling after.
	DefaultBackoff = time.Second
	// DefaultMaxBackoff caps the wait between attempts.
	DefaultMaxBackoff = 60 * time.Second
	// DefaultMaxQueueSize is how many events may wait for delivery.
	DefaultMaxQueueSize = 1000
	// DefaultParallelism is how many deliveries may be in flight at once.
	DefaultParallelism = 4
	// DefaultMaxBatchSize is how many events a batched request carries at most.
	DefaultMaxBatchSize = 100
	// DefaultCAKey is the key of a CA Secret holding the PEM bundle.
	DefaultCAKey = "ca.crt"
	// DefaultSigningKey is the key of a signing Secret holding the key.
	DefaultSigningKey = "key"
)
