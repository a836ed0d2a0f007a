package subscription

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

// Target is the sink a subscription delivers to, wherever it is written: in the
// subscription itself, in a WatchSink of its namespace, or in a ClusterWatchSink that
// admits it; with the delivery defaults and payload that come with a sink object.
type Target struct {
	Sink   notifyv1.Sink
	Source SecretSource
	// Field names where the sink is written, for messages: spec.sink, or the sink object.
	Field string
	// Origin changes when the sink object does, so its subscriptions are rebuilt.
	Origin string
	// Delivery and Payload are the sink object's defaults; nil for an inline sink.
	Delivery *notifyv1.DeliverySpec
	Payload  *notifyv1.PayloadSpec
	// Described is what status.sink shows: the kind of an inline sink, or Kind/name of the
	// sink object.
	Described string
}

// SinkRefError is a spec.sinkRef naming no usable sink: a definite answer, with its reason
// (a Ready reason).
type SinkRefError struct {
	Reason, Msg string
}

func (e *SinkRefError) Error() string { return e.Msg }

// ResolveSink finds the sink ws delivers to, reading the sink object and, for a
// ClusterWatchSink, the namespace's labels through c (the operator reads them from its
// cache). The Secrets of a ClusterWatchSink are in operatorNamespace. A *SinkRefError is a
// definite answer; other errors are none.
func ResolveSink(ctx context.Context, c client.Reader, ws *notifyv1.WatchSubscription, operatorNamespace string) (Target, error) {
	ref := ws.Spec.SinkRef
	if ref == nil {
		if ws.Spec.Sink == nil {
			return Target{}, &SinkRefError{notifyv1.ReasonInvalidSpec, "spec: neither sink nor sinkRef is set"}
		}
		return Target{Sink: *ws.Spec.Sink, Source: SourceOf(ws), Field: "spec.sink", Origin: "inline",
			Described: SinkKind(*ws.Spec.Sink)}, nil
	}
	if ref.Kind == notifyv1.SinkKindClusterWatchSink {
		return resolveClusterSink(ctx, c, ws, ref.Name, operatorNamespace)
	}
	obj := &notifyv1.WatchSink{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ws.Namespace, Name: ref.Name}, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return Target{}, &SinkRefError{notifyv1.ReasonSinkNotFound, fmt.Sprintf(
				"spec.sinkRef: WatchSink %s not found in namespace %s", ref.Name, ws.Namespace)}
		}
		return Target{}, err
	}
	return Target{Sink: obj.Spec.Sink, Source: SourceOf(ws), Field: "WatchSink " + obj.Name,
		Origin:   fmt.Sprintf("WatchSink/%s/%s@%d", obj.Namespace, obj.Name, obj.Generation),
		Delivery: obj.Spec.Delivery, Payload: obj.Spec.Payload, Described: "WatchSink/" + obj.Name}, nil
}

func resolveClusterSink(ctx context.Context, c client.Reader, ws *notifyv1.WatchSubscription, name,
	operatorNamespace string) (Target, error) {
	obj := &notifyv1.ClusterWatchSink{}
	if err := c.Get(ctx, client.ObjectKey{Name: name}, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return Target{}, &SinkRefError{notifyv1.ReasonSinkNotFound, "spec.sinkRef: ClusterWatchSink " + name + " not found"}
		}
		return Target{}, err
	}
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := c.Get(ctx, client.ObjectKey{Name: ws.Namespace}, ns); err != nil {
		return Target{}, err
	}
	selector, err := metav1.LabelSelectorAsSelector(obj.Spec.NamespaceSelector)
	if err != nil {
		return Target{}, &SinkRefError{notifyv1.ReasonSinkNotAdmitted, fmt.Sprintf(
			"spec.sinkRef: ClusterWatchSink %s has a namespaceSelector that does not parse: %v", name, err)}
	}
	if !selector.Matches(labels.Set(ns.GetLabels())) {
		return Target{}, &SinkRefError{notifyv1.ReasonSinkNotAdmitted, fmt.Sprintf(
			"spec.sinkRef: ClusterWatchSink %s does not admit namespace %s (its namespaceSelector is %s)",
			name, ws.Namespace, selector.String())}
	}
	// The platform team's sink: its Secrets live in the operator's namespace and are read
	// with the operator's rights; the subscription's author never sees them.
	src := SecretSource{Namespace: operatorNamespace, Owner: types.NamespacedName{Namespace: ws.Namespace, Name: ws.Name}}
	return Target{Sink: obj.Spec.Sink, Source: src, Field: "ClusterWatchSink " + obj.Name,
		Origin:   fmt.Sprintf("ClusterWatchSink/%s@%d", obj.Name, obj.Generation),
		Delivery: obj.Spec.Delivery, Payload: obj.Spec.Payload, Described: "ClusterWatchSink/" + obj.Name}, nil
}

// What SinkKind returns.
const (
	KindWebhook = "webhook"
	KindService = "service"
	KindLog     = "log"
	KindKafka   = "kafka"
	KindNATS    = "nats"
)

// SinkKind is what status.sink shows for an inline sink: webhook, service, log, kafka or nats.
func SinkKind(s notifyv1.Sink) string {
	switch {
	case s.Webhook != nil:
		return KindWebhook
	case s.Service != nil:
		return KindService
	case s.Log != nil:
		return KindLog
	case isSet(s.Kafka):
		return KindKafka
	case isSet(s.NATS):
		return KindNATS
	}
	return ""
}

// WithSinkDefaults is ws as the sink object's defaults complete it: each delivery field
// and the payload the subscription leaves out come from the sink object. The dead-letter
// sink, when it comes from there, reads its Secrets where the sink does. ws itself is not
// changed.
func WithSinkDefaults(ws *notifyv1.WatchSubscription, target Target) (*notifyv1.WatchSubscription, SecretSource) {
	deadLetterSource := SourceOf(ws)
	if target.Delivery == nil && target.Payload == nil {
		return ws, deadLetterSource
	}
	out := ws.DeepCopy()
	if out.Spec.Payload == nil && target.Payload != nil {
		out.Spec.Payload = target.Payload.DeepCopy()
	}
	d := target.Delivery
	if d == nil {
		return out, deadLetterSource
	}
	if out.Spec.Delivery == nil {
		out.Spec.Delivery = &notifyv1.DeliverySpec{}
	}
	own := out.Spec.Delivery
	if own.Timeout == nil {
		own.Timeout = d.Timeout
	}
	if own.MaxQueueSize == nil {
		own.MaxQueueSize = d.MaxQueueSize
	}
	if own.Parallelism == nil {
		own.Parallelism = d.Parallelism
	}
	if own.Coalesce == (notifyv1.CoalesceSpec{}) {
		own.Coalesce = d.Coalesce
	}
	if own.RateLimit == (notifyv1.RateLimitSpec{}) {
		own.RateLimit = d.RateLimit
	}
	if own.DeadLetterSink == nil && d.DeadLetterSink != nil {
		own.DeadLetterSink = d.DeadLetterSink.DeepCopy()
		deadLetterSource = target.Source
	}
	if d.Retry != nil {
		if own.Retry == nil {
			own.Retry = &notifyv1.RetryPolicy{}
		}
		if own.Retry.MaxAttempts == nil {
			own.Retry.MaxAttempts = d.Retry.MaxAttempts
		}
		if own.Retry.Backoff == nil {
			own.Retry.Backoff = d.Retry.Backoff
		}
		if own.Retry.MaxBackoff == nil {
			own.Retry.MaxBackoff = d.Retry.MaxBackoff
		}
	}
	return out, deadLetterSource
}
