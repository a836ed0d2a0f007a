package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
	"github.com/dynamic-notifier/dynamic-notifier/internal/subscription"
)

// builtSinks is what a subscription delivers to, prepared, and a fingerprint of what they
// were built from (the sink object's generation, the Secrets' versions): a changed
// fingerprint rebuilds the pipeline.
type builtSinks struct {
	sink, deadLetter subscription.Prepared
	fingerprint      string
}

// openedSinks are what a pipeline delivers to. Close them once it has stopped: a broker
// sink closed under a delivery in flight fails it, not as retryable.
type openedSinks struct {
	sink, deadLetter sink.Sink
}

// open connects the broker sinks. An error is the sink's to fix: a setting the broker
// client refuses (the settings were checked when the sinks were prepared).
func (b builtSinks) open() (openedSinks, error) {
	var out openedSinks
	var err error
	if out.sink, err = b.sink.Open(); err != nil {
		return openedSinks{}, err
	}
	if b.deadLetter.Set() {
		if out.deadLetter, err = b.deadLetter.Open(); err != nil {
			out.close()
			return openedSinks{}, err
		}
	}
	return out, nil
}

// close closes the sinks that hold connections (broker sinks give their shared client back).
func (o openedSinks) close() {
	for _, s := range []sink.Sink{o.sink, o.deadLetter} {
		if c, ok := s.(io.Closer); ok {
			_ = c.Close()
		}
	}
}

// sinkBuilder builds sinks as the operator does: Secrets read uncached with its own rights,
// once the subscription's ServiceAccount may get them.
func (r *WatchSubscriptionReconciler) sinkBuilder() *subscription.Sinks {
	return &subscription.Sinks{Secrets: r.APIReader, Authorizer: r.Authorizer, Clients: r.HTTPClients,
		Brokers: r.Brokers, Log: r.Log}
}

func (r *WatchSubscriptionReconciler) buildSinks(ctx context.Context, target subscription.Target, deadLetter *notifyv1.Sink,
	deadLetterSource subscription.SecretSource) (builtSinks, error) {
	b := r.sinkBuilder()
	fp := sha256.New()
	_, _ = fp.Write([]byte(target.Origin + ";"))
	main, err := b.Build(ctx, target.Sink, target.Source, target.Field, fp)
	if err != nil {
		return builtSinks{}, err
	}
	out := builtSinks{sink: main}
	if deadLetter != nil {
		if out.deadLetter, err = b.Build(ctx, *deadLetter, deadLetterSource, "spec.delivery.deadLetterSink", fp); err != nil {
			return builtSinks{}, err
		}
	}
	out.fingerprint = hex.EncodeToString(fp.Sum(nil))
	return out, nil
}

// sinkCouldNotAsk tells a Secret that could not be read (see couldNotAsk) from a sink that
// is wrong: a Secret that does not exist, a key it lacks, a CA that does not parse.
func sinkCouldNotAsk(err error) bool {
	se, ok := errors.AsType[*subscription.SinkError](err)
	return ok && se.Cause != nil && couldNotAsk(se.Cause)
}
