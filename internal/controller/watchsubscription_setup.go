package controller

import (
	"context"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
	"github.com/dynamic-notifier/dynamic-notifier/internal/subscription"
	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

// crdIndex indexes subscriptions by the CRD name their resource would have (plural.group).
const crdIndex = "spec.resource.crdName"

// SetupWithManager registers the controller, its CRD watch, the coalescing wakeups and the
// registry with mgr.
func (r *WatchSubscriptionReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.StatusInterval <= 0 {
		r.StatusInterval = 2 * time.Second
	}
	if r.Brokers == nil {
		r.Brokers = sink.NewBrokers(sink.ClientOptions{})
	}
	r.running = newRunningSubscriptions()
	r.wakeups = newWakeups(r.StatusInterval, r.StatusCounterRate)
	if err := indexSinkUsers(mgr); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &notifyv1.WatchSubscription{}, crdIndex,
		func(o client.Object) []string {
			return []string{crdName(subscription.GVR(o.(*notifyv1.WatchSubscription)))}
		}); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &notifyv1.WatchSubscription{}, shardIndex,
		func(o client.Object) []string {
			return []string{shardKeyOf(subscription.GVR(o.(*notifyv1.WatchSubscription)))}
		}); err != nil {
		return err
	}
	if r.Shards != nil {
		r.Shards.r = r
		if err := mgr.Add(r.Shards); err != nil {
			return err
		}
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&notifyv1.WatchSubscription{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesMetadata(&apiextensionsv1.CustomResourceDefinition{},
			handler.EnqueueRequestsFromMapFunc(r.subscriptionsForCRD)).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.subscriptionsForSecret)).
		Watches(&notifyv1.WatchSink{}, handler.EnqueueRequestsFromMapFunc(r.subscriptionsForSinkObject),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&notifyv1.ClusterWatchSink{}, handler.EnqueueRequestsFromMapFunc(r.subscriptionsForSinkObject),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// A namespace's labels decide which ClusterWatchSinks admit its subscriptions.
		WatchesMetadata(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.subscriptionsForNamespace),
			builder.WithPredicates(predicate.LabelChangedPredicate{})).
		WatchesRawSource(r.wakeups.source()).
		Named("watchsubscription").
		// Subscriptions are independent; several workers let a burst of them (and one
		// tenant's flood) converge without queueing behind each other's API writes.
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Workers}).
		Complete(r)
}

// InformerChanged is the registry's callback: the subscriptions on that informer need a
// fresh look at once.
func (r *WatchSubscriptionReconciler) InformerChanged(key watch.Key) {
	if r.running == nil {
		return
	}
	for _, nn := range r.running.subscribersOf(key) {
		r.wakeups.Now(nn)
	}
}

func (r *WatchSubscriptionReconciler) subscriptionsForCRD(ctx context.Context, crd client.Object) []reconcile.Request {
	name := crd.GetName()
	if _, group, ok := strings.Cut(name, "."); ok {
		r.Resolver.Invalidate(group)
	}
	return r.subscriptionsBy(ctx, crdIndex, name)
}

// subscriptionsForSecret finds the subscriptions whose sinks read a Secret that changed:
// written in them, or in the sink objects they name.
func (r *WatchSubscriptionReconciler) subscriptionsForSecret(ctx context.Context, sec client.Object) []reconcile.Request {
	reqs := r.subscriptionsBy(ctx, secretIndex, sec.GetName(), client.InNamespace(sec.GetNamespace()))
	for _, key := range sinkObjectsUsingSecret(ctx, r.Client, sec, r.OperatorNamespace) {
		reqs = append(reqs, r.subscriptionsBy(ctx, sinkRefIndex, key)...)
	}
	return reqs
}

// subscriptionsForSinkObject finds the subscriptions that name a WatchSink or
// ClusterWatchSink that changed.
func (r *WatchSubscriptionReconciler) subscriptionsForSinkObject(ctx context.Context, obj client.Object) []reconcile.Request {
	return r.subscriptionsBy(ctx, sinkRefIndex, sinkObjectKey(obj))
}

// subscriptionsForNamespace finds the subscriptions of a namespace whose labels changed
// that name a ClusterWatchSink: whether it admits them may have changed.
func (r *WatchSubscriptionReconciler) subscriptionsForNamespace(ctx context.Context, ns client.Object) []reconcile.Request {
	return r.subscriptionsBy(ctx, sinkRefKindIndex, string(notifyv1.SinkKindClusterWatchSink), client.InNamespace(ns.GetName()))
}

func (r *WatchSubscriptionReconciler) subscriptionsBy(ctx context.Context, index, value string, opts ...client.ListOption) []reconcile.Request {
	list := &notifyv1.WatchSubscriptionList{}
	if err := r.List(ctx, list, append(opts, client.MatchingFields{index: value})...); err != nil {
		logf.FromContext(ctx).Error(err, "Listing subscriptions", "index", index, "value", value)
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, ws := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ws.Namespace, Name: ws.Name}})
	}
	return reqs
}

// crdName is the name a CRD serving gvr has: plural.group.
func crdName(gvr schema.GroupVersionResource) string {
	plural, _, _ := strings.Cut(gvr.Resource, "/")
	return plural + "." + gvr.Group
}
