package controller

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/subscription"
)

// +kubebuilder:rbac:groups=notify.dynamicnotifier.io,resources=watchsinks;clusterwatchsinks,verbs=get;list;watch
// +kubebuilder:rbac:groups=notify.dynamicnotifier.io,resources=watchsinks/status;clusterwatchsinks/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=list;watch

// sinkStatusDelay gathers the status changes of a sink's subscriptions into one write.
const sinkStatusDelay = 2 * time.Second

// maxListedSubscriptions bounds status.subscriptions.
const maxListedSubscriptions = 20

// SinkStatusReconciler reports on the WatchSinks or the ClusterWatchSinks (one reconciler
// per kind): whether each can be used, which subscriptions use it, and whether their
// deliveries go through.
type SinkStatusReconciler struct {
	client.Client
	// Kind is the kind this reconciler reports on.
	Kind notifyv1.SinkKind
	// Subscriptions builds sinks as the subscriptions do, to check one can be built.
	Subscriptions *WatchSubscriptionReconciler

	retries checkRetry
	written writtenStatuses[notifyv1.WatchSinkStatus, *notifyv1.WatchSinkStatus]
}

// sinkObject is a WatchSink or a ClusterWatchSink, seen the same way.
type sinkObject struct {
	obj    client.Object
	spec   *notifyv1.WatchSinkSpec
	status *notifyv1.WatchSinkStatus
}

func (r *SinkStatusReconciler) newObject() sinkObject {
	if r.Kind == notifyv1.SinkKindClusterWatchSink {
		o := &notifyv1.ClusterWatchSink{}
		return sinkObject{obj: o, spec: &o.Spec.WatchSinkSpec, status: &o.Status}
	}
	o := &notifyv1.WatchSink{}
	return sinkObject{obj: o, spec: &o.Spec, status: &o.Status}
}

// Reconcile writes one sink object's status.
func (r *SinkStatusReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	s := r.newObject()
	if err := r.Get(ctx, req.NamespacedName, s.obj); err != nil {
		if apierrors.IsNotFound(err) {
			r.written.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	r.written.freshen(s.obj, s.status)
	before := s.obj.DeepCopyObject().(client.Object)
	s.status.ObservedGeneration = s.obj.GetGeneration()
	ready := r.readyCondition(ctx, s)
	meta.SetStatusCondition(&s.status.Conditions, ready)
	// A Secret that could not be read is no verdict on the sink: look again soon.
	var result ctrl.Result
	if ready.Reason == notifyv1.ReasonCheckFailing {
		result.RequeueAfter = r.retries.next(req.NamespacedName)
	} else {
		r.retries.reset(req.NamespacedName)
	}
	users, err := r.users(ctx, s.obj)
	if err != nil {
		return ctrl.Result{}, err
	}
	summarizeUsers(s.status, users)
	cond := deliveringCondition(users)
	cond.ObservedGeneration = s.obj.GetGeneration()
	meta.SetStatusCondition(&s.status.Conditions, cond)
	for i := range s.status.Conditions {
		s.status.Conditions[i].ObservedGeneration = s.obj.GetGeneration()
		s.status.Conditions[i].Message = boundMessage(s.status.Conditions[i].Message)
	}
	if equality.Semantic.DeepEqual(before, s.obj) {
		return result, nil
	}
	if err := r.Status().Patch(ctx, s.obj, client.MergeFrom(before)); err != nil {
		if apierrors.IsNotFound(err) {
			return result, nil
		}
		return ctrl.Result{}, err
	}
	r.written.record(s.obj, s.status)
	return result, nil
}

// readyCondition says whether the sink can be built: its Secrets exist and hold what it
// needs. They are read with the operator's rights, where the sink's Secrets live; whether
// a subscription's ServiceAccount may read them is for that subscription to say.
func (r *SinkStatusReconciler) readyCondition(ctx context.Context, s sinkObject) metav1.Condition {
	src := subscription.SecretSource{Namespace: s.obj.GetNamespace(),
		Owner: types.NamespacedName{Namespace: s.obj.GetNamespace(), Name: s.obj.GetName()}}
	if r.Kind == notifyv1.SinkKindClusterWatchSink {
		src.Namespace = r.Subscriptions.OperatorNamespace
	}
	b := r.Subscriptions.sinkBuilder()
	_, err := b.Build(ctx, s.spec.Sink, src, "spec", io.Discard)
	if d := s.spec.Delivery; err == nil && d != nil && d.DeadLetterSink != nil {
		_, err = b.Build(ctx, *d.DeadLetterSink, src, "spec.delivery.deadLetterSink", io.Discard)
	}
	return sinkReadyCondition(err)
}

// sinkReadyCondition is the Ready condition of a sink object whose build ended in err. Pure:
// table-tested.
func sinkReadyCondition(err error) metav1.Condition {
	cond := metav1.Condition{Type: notifyv1.ConditionReady}
	switch {
	case err == nil:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, notifyv1.SinkReasonValid,
			"The sink's settings and Secrets are complete"
	case sinkCouldNotAsk(err):
		cond.Status, cond.Reason, cond.Message = metav1.ConditionUnknown, notifyv1.ReasonCheckFailing,
			"Could not read what the sink needs; retrying: "+err.Error()
	default:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, notifyv1.ReasonInvalidSink, err.Error()
	}
	return cond
}

// users lists the subscriptions that name the sink object, sorted.
func (r *SinkStatusReconciler) users(ctx context.Context, obj client.Object) ([]notifyv1.WatchSubscription, error) {
	list := &notifyv1.WatchSubscriptionList{}
	if err := r.List(ctx, list, client.MatchingFields{sinkRefIndex: sinkObjectKey(obj)}); err != nil {
		return nil, err
	}
	slices.SortFunc(list.Items, func(a, b notifyv1.WatchSubscription) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return list.Items, nil
}

// summarizeUsers adds up what the subscriptions using a sink report.
func summarizeUsers(st *notifyv1.WatchSinkStatus, users []notifyv1.WatchSubscription) {
	st.SubscriptionCount = int32(len(users)) //nolint:gosec // a list from the API server
	st.Subscriptions = nil
	st.EventsDelivered, st.EventsFailed = 0, 0
	for i, ws := range users {
		if i < maxListedSubscriptions {
			st.Subscriptions = append(st.Subscriptions, ws.Namespace+"/"+ws.Name)
		}
		st.EventsDelivered += ws.Status.EventsDelivered
		st.EventsFailed += ws.Status.EventsFailed
		if t := ws.Status.LastDeliveryTime; t != nil && (st.LastDeliveryTime == nil || t.After(st.LastDeliveryTime.Time)) {
			st.LastDeliveryTime = t.DeepCopy()
		}
	}
}

// deliveringCondition says whether the subscriptions using a sink get their events through.
// Pure: table-tested.
func deliveringCondition(users []notifyv1.WatchSubscription) metav1.Condition {
	cond := metav1.Condition{Type: notifyv1.ConditionDelivering}
	if len(users) == 0 {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionUnknown, notifyv1.SinkReasonUnused, "No subscription uses the sink"
		return cond
	}
	var failing []string
	for _, ws := range users {
		if c := meta.FindStatusCondition(ws.Status.Conditions, notifyv1.ConditionReady); c != nil &&
			c.Reason == notifyv1.ReasonDeliveryFailing {
			failing = append(failing, fmt.Sprintf("%s/%s (%s)", ws.Namespace, ws.Name, c.Message))
		}
	}
	if len(failing) == 0 {
		cond.Status, cond.Reason = metav1.ConditionTrue, notifyv1.SinkReasonDelivering
		cond.Message = fmt.Sprintf("%d subscriptions use the sink; none fails to deliver", len(users))
		if len(users) == 1 {
			cond.Message = "1 subscription uses the sink; it does not fail to deliver"
		}
		return cond
	}
	cond.Status, cond.Reason = metav1.ConditionFalse, notifyv1.SinkReasonFailing
	cond.Message = fmt.Sprintf("%d of %d subscriptions using the sink fail to deliver: %s", len(failing), len(users),
		strings.Join(failing, "; "))
	return cond
}

// SetupWithManager registers the reconciler for its kind. The subscriptions' status
// changes reach their sink after sinkStatusDelay, gathered.
func (r *SinkStatusReconciler) SetupWithManager(mgr ctrl.Manager) error {
	s := r.newObject()
	name := "watchsink"
	if r.Kind == notifyv1.SinkKindClusterWatchSink {
		name = "clusterwatchsink"
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(s.obj, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&notifyv1.WatchSubscription{}, r.enqueueSinkOf()).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.sinksForSecret)).
		Named(name).
		Complete(r)
}

// enqueueSinkOf queues the sink object a subscription names, of this reconciler's kind,
// a little later, so many subscriptions' status writes make one status write of the sink.
func (r *SinkStatusReconciler) enqueueSinkOf() handler.TypedEventHandler[client.Object, reconcile.Request] {
	add := func(obj client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		ws, ok := obj.(*notifyv1.WatchSubscription)
		if !ok || ws.Spec.SinkRef == nil || ws.Spec.SinkRef.KindOrDefault() != r.Kind {
			return
		}
		nn := types.NamespacedName{Name: ws.Spec.SinkRef.Name}
		if r.Kind == notifyv1.SinkKindWatchSink {
			nn.Namespace = ws.Namespace
		}
		q.AddAfter(reconcile.Request{NamespacedName: nn}, sinkStatusDelay)
	}
	return handler.TypedFuncs[client.Object, reconcile.Request]{
		CreateFunc: func(_ context.Context, e event.TypedCreateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(e.Object, q)
		},
		UpdateFunc: func(_ context.Context, e event.TypedUpdateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(e.ObjectOld, q) // a subscription that changed sinks leaves the old one
			add(e.ObjectNew, q)
		},
		DeleteFunc: func(_ context.Context, e event.TypedDeleteEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(e.Object, q)
		},
	}
}

func (r *SinkStatusReconciler) sinksForSecret(ctx context.Context, sec client.Object) []reconcile.Request {
	var reqs []reconcile.Request
	for _, key := range sinkObjectsUsingSecret(ctx, r.Client, sec, r.Subscriptions.OperatorNamespace) {
		kind, rest, _ := strings.Cut(key, "/")
		ns, name, _ := strings.Cut(rest, "/")
		if notifyv1.SinkKind(kind) == r.Kind {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}})
		}
	}
	return reqs
}
