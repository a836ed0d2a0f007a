package controller

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

// resolvedSink is the sink a subscription delivers to, wherever it is written: in the
// subscription itself, in a WatchSink of its namespace, or in a ClusterWatchSink that
// admits it; with the delivery defaults and payload that come with a sink object.
type resolvedSink struct {
	sink   notifyv1.Sink
	source sinkSource
	// field names where the sink is written, for messages: spec.sink, or the sink object.
	field string
	// origin changes when the sink object does, so its subscriptions are rebuilt.
	origin string
	// delivery and payload are the sink object's defaults; nil for an inline sink.
	delivery *notifyv1.DeliverySpec
	payload  *notifyv1.PayloadSpec
	// described is what status.sink shows.
	described string
}

// sinkRefError is a spec.sinkRef naming no usable sink: a definite answer, with its reason.
type sinkRefError struct {
	reason, msg string
}

func (e *sinkRefError) Error() string { return e.msg }

// resolveSink finds the sink ws delivers to. The sink objects and namespaces come from the
// manager's cache.
func (r *WatchSubscriptionReconciler) resolveSink(ctx context.Context, ws *notifyv1.WatchSubscription) (resolvedSink, error) {
	ref := ws.Spec.SinkRef
	if ref == nil {
		if ws.Spec.Sink == nil {
			return resolvedSink{}, &sinkRefError{notifyv1.ReasonInvalidSpec, "spec: neither sink nor sinkRef is set"}
		}
		return resolvedSink{sink: *ws.Spec.Sink, source: sourceOf(ws), field: "spec.sink", origin: "inline",
			described: sinkKind(*ws.Spec.Sink)}, nil
	}
	if ref.Kind == notifyv1.SinkKindClusterWatchSink {
		return r.resolveClusterSink(ctx, ws, ref.Name)
	}
	obj := &notifyv1.WatchSink{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: ws.Namespace, Name: ref.Name}, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return resolvedSink{}, &sinkRefError{notifyv1.ReasonSinkNotFound, fmt.Sprintf(
				"spec.sinkRef: WatchSink %s not found in namespace %s", ref.Name, ws.Namespace)}
		}
		return resolvedSink{}, err
	}
	return resolvedSink{sink: obj.Spec.Sink, source: sourceOf(ws), field: "WatchSink " + obj.Name,
		origin:   fmt.Sprintf("WatchSink/%s/%s@%d", obj.Namespace, obj.Name, obj.Generation),
		delivery: obj.Spec.Delivery, payload: obj.Spec.Payload, described: "WatchSink/" + obj.Name}, nil
}

func (r *WatchSubscriptionReconciler) resolveClusterSink(ctx context.Context, ws *notifyv1.WatchSubscription, name string) (resolvedSink, error) {
	obj := &notifyv1.ClusterWatchSink{}
	if err := r.Get(ctx, client.ObjectKey{Name: name}, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return resolvedSink{}, &sinkRefError{notifyv1.ReasonSinkNotFound, "spec.sinkRef: ClusterWatchSink " + name + " not found"}
		}
		return resolvedSink{}, err
	}
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := r.Get(ctx, client.ObjectKey{Name: ws.Namespace}, ns); err != nil {
		return resolvedSink{}, err
	}
	selector, err := metav1.LabelSelectorAsSelector(obj.Spec.NamespaceSelector)
	if err != nil {
		return resolvedSink{}, &sinkRefError{notifyv1.ReasonSinkNotAdmitted, fmt.Sprintf(
			"spec.sinkRef: ClusterWatchSink %s has a namespaceSelector that does not parse: %v", name, err)}
	}
	if !selector.Matches(labels.Set(ns.GetLabels())) {
		return resolvedSink{}, &sinkRefError{notifyv1.ReasonSinkNotAdmitted, fmt.Sprintf(
			"spec.sinkRef: ClusterWatchSink %s does not admit namespace %s (its namespaceSelector is %s)",
			name, ws.Namespace, selector.String())}
	}
	// The platform team's sink: its Secrets live in the operator's namespace and are read
	// with the operator's rights; the subscription's author never sees them.
	src := sinkSource{namespace: r.OperatorNamespace, owner: types.NamespacedName{Namespace: ws.Namespace, Name: ws.Name}}
	return resolvedSink{sink: obj.Spec.Sink, source: src, field: "ClusterWatchSink " + obj.Name,
		origin:   fmt.Sprintf("ClusterWatchSink/%s@%d", obj.Name, obj.Generation),
		delivery: obj.Spec.Delivery, payload: obj.Spec.Payload, described: "ClusterWatchSink/" + obj.Name}, nil
}

// withSinkDefaults is ws as the sink object's defaults complete it: each delivery field
// and the payload the subscription leaves out come from the sink object. The dead-letter
// sink, when it comes from there, reads its Secrets where the sink does.
func withSinkDefaults(ws *notifyv1.WatchSubscription, target resolvedSink) (*notifyv1.WatchSubscription, sinkSource) {
	deadLetterSource := sourceOf(ws)
	if target.delivery == nil && target.payload == nil {
		return ws, deadLetterSource
	}
	out := ws.DeepCopy()
	if out.Spec.Payload == nil && target.payload != nil {
		out.Spec.Payload = target.payload.DeepCopy()
	}
	d := target.delivery
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
		deadLetterSource = target.source
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
