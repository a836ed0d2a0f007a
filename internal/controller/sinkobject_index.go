package controller

import (
	"context"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/subscription"
)

// Field indexes that tie subscriptions, sink objects and the Secrets they read together,
// so a change to any of them reaches the subscriptions it concerns.
const (
	// secretIndex indexes subscriptions, WatchSinks and ClusterWatchSinks by the Secrets
	// their sinks read.
	secretIndex = "spec.sink.secretRefs"
	// sinkRefIndex indexes subscriptions by the sink object they name (sinkObjectKey).
	sinkRefIndex = "spec.sinkRef"
	// sinkRefKindIndex indexes subscriptions by the kind of sink object they name.
	sinkRefKindIndex = "spec.sinkRef.kind"
)

// indexSinkUsers registers the indexes, once per manager (both controllers need them).
func indexSinkUsers(mgr ctrl.Manager) error {
	idx := mgr.GetFieldIndexer()
	ctx := context.Background()
	for _, i := range []struct {
		obj     client.Object
		field   string
		extract client.IndexerFunc
	}{
		{&notifyv1.WatchSubscription{}, secretIndex, func(o client.Object) []string {
			ws := o.(*notifyv1.WatchSubscription)
			return secretRefs(ws.Spec.Sink, ws.Spec.Delivery)
		}},
		{&notifyv1.WatchSubscription{}, sinkRefIndex, func(o client.Object) []string {
			if key := sinkRefKey(o.(*notifyv1.WatchSubscription)); key != "" {
				return []string{key}
			}
			return nil
		}},
		{&notifyv1.WatchSubscription{}, sinkRefKindIndex, func(o client.Object) []string {
			if ref := o.(*notifyv1.WatchSubscription).Spec.SinkRef; ref != nil {
				return []string{string(ref.KindOrDefault())}
			}
			return nil
		}},
		{&notifyv1.WatchSink{}, secretIndex, func(o client.Object) []string {
			spec := o.(*notifyv1.WatchSink).Spec
			return secretRefs(&spec.Sink, spec.Delivery)
		}},
		{&notifyv1.ClusterWatchSink{}, secretIndex, func(o client.Object) []string {
			spec := o.(*notifyv1.ClusterWatchSink).Spec
			return secretRefs(&spec.Sink, spec.Delivery)
		}},
	} {
		if err := idx.IndexField(ctx, i.obj, i.field, i.extract); err != nil {
			return err
		}
	}
	return nil
}

// sinkRefKey is the sink object a subscription names, as sinkObjectKey writes it; "" for
// an inline sink.
func sinkRefKey(ws *notifyv1.WatchSubscription) string {
	ref := ws.Spec.SinkRef
	if ref == nil {
		return ""
	}
	if ref.KindOrDefault() == notifyv1.SinkKindClusterWatchSink {
		return "ClusterWatchSink//" + ref.Name
	}
	return "WatchSink/" + ws.Namespace + "/" + ref.Name
}

// sinkObjectKey names a WatchSink or ClusterWatchSink: kind/namespace/name.
func sinkObjectKey(obj client.Object) string {
	if _, cluster := obj.(*notifyv1.ClusterWatchSink); cluster {
		return "ClusterWatchSink//" + obj.GetName()
	}
	return "WatchSink/" + obj.GetNamespace() + "/" + obj.GetName()
}

// sinkObjectsUsingSecret lists the sink objects (as sinkObjectKey) whose sinks read sec:
// WatchSinks of its namespace, and ClusterWatchSinks when it is in the operator's.
func sinkObjectsUsingSecret(ctx context.Context, c client.Reader, sec client.Object, operatorNamespace string) []string {
	var keys []string
	sinks := &notifyv1.WatchSinkList{}
	if err := c.List(ctx, sinks, client.InNamespace(sec.GetNamespace()), client.MatchingFields{secretIndex: sec.GetName()}); err != nil {
		logf.FromContext(ctx).Error(err, "Listing WatchSinks", "secret", sec.GetName())
	}
	for i := range sinks.Items {
		keys = append(keys, sinkObjectKey(&sinks.Items[i]))
	}
	if sec.GetNamespace() != operatorNamespace || operatorNamespace == "" {
		return keys
	}
	cluster := &notifyv1.ClusterWatchSinkList{}
	if err := c.List(ctx, cluster, client.MatchingFields{secretIndex: sec.GetName()}); err != nil {
		logf.FromContext(ctx).Error(err, "Listing ClusterWatchSinks", "secret", sec.GetName())
	}
	for i := range cluster.Items {
		keys = append(keys, sinkObjectKey(&cluster.Items[i]))
	}
	return keys
}

// secretRefs lists the Secrets a sink and a dead-letter sink read, for secretIndex: those
// subscription.References names, which are those the sinks are built from.
func secretRefs(s *notifyv1.Sink, d *notifyv1.DeliverySpec) []string {
	var out []string
	add := func(s *notifyv1.Sink) {
		if s == nil {
			return
		}
		for _, ref := range subscription.References(*s, subscription.SecretSource{}, "") {
			if ref.GVR.Resource == "secrets" {
				out = append(out, ref.Name)
			}
		}
	}
	add(s)
	if d != nil {
		add(d.DeadLetterSink)
	}
	return out
}
