package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/authz"
	"github.com/dynamic-notifier/dynamic-notifier/internal/delivery"
	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/filter"
	"github.com/dynamic-notifier/dynamic-notifier/internal/metrics"
	"github.com/dynamic-notifier/dynamic-notifier/internal/resolve"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
	"github.com/dynamic-notifier/dynamic-notifier/internal/subscription"
	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

// discoveryLagRetry is how soon a subscription whose CRD is Established but not yet in
// discovery looks again. Only then: a missing resource otherwise waits for CRD events.
const discoveryLagRetry = 250 * time.Millisecond

// WatchSubscriptionReconciler wires each WatchSubscription to the shared watches and to its
// delivery, and reports what happens in its status.
type WatchSubscriptionReconciler struct {
	client.Client
	// APIReader reads CRDs uncached; only the CRDs' metadata is cached.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Resolver  *resolve.Resolver
	Registry  *watch.Registry
	// Authorizer checks each subscription's ServiceAccount; nil trusts every subscription.
	Authorizer *authz.Checker
	// HTTPClients hands out pooled HTTP clients per TLS setting.
	HTTPClients *sink.Clients
	// Brokers hands out Kafka and NATS sinks, sharing their clients; one per operator, with
	// the deny list of HTTPClients.
	Brokers *sink.Brokers
	// OperatorNamespace holds the Secrets of ClusterWatchSinks.
	OperatorNamespace string
	// Budget bounds the bytes all pipelines hold; nil for none.
	Budget *delivery.MemoryBudget
	// StatusInterval bounds how often counters alone cause a status write.
	StatusInterval time.Duration
	// StatusCounterRate bounds the status writes that counters alone cause, per second over
	// all subscriptions; 0 does not bound them.
	StatusCounterRate float64
	// DeliveryTimeout bounds one delivery attempt.
	DeliveryTimeout time.Duration
	// Workers is how many subscriptions are reconciled at once; 0 means one.
	Workers int
	// Shards, when set, limits this replica to the subscriptions it serves (scale-out).
	Shards *Shards
	Log    logr.Logger

	running *runningSubscriptions
	wakeups *wakeups
	retries checkRetry
	written writtenStatuses[notifyv1.WatchSubscriptionStatus, *notifyv1.WatchSubscriptionStatus]
}

// +kubebuilder:rbac:groups=notify.dynamicnotifier.io,resources=watchsubscriptions,verbs=get;list;watch
// +kubebuilder:rbac:groups=notify.dynamicnotifier.io,resources=watchsubscriptions/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=apiextensions.k8s.io,resources=customresourcedefinitions,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
// +kubebuilder:rbac:groups=*,resources=*,verbs=list;watch
// +kubebuilder:rbac:groups="",namespace=system,resources=configmaps,verbs=get;list;create;update;delete
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=system,resources=leases,verbs=get;list;create;update;delete

// Reconcile brings what runs for one subscription in line with its spec and reports it.
func (r *WatchSubscriptionReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	r.wakeups.reconciling(req.NamespacedName)
	ws := &notifyv1.WatchSubscription{}
	if err := r.Get(ctx, req.NamespacedName, ws); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if !ws.DeletionTimestamp.IsZero() {
		r.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	if r.Shards != nil {
		served, done := r.Shards.enter(shardKeyOf(subscription.GVR(ws)))
		defer done()
		if !served {
			r.notServed(req.NamespacedName)
			return ctrl.Result{}, nil // its replica reconciles it
		}
	}
	in, res, result := r.wire(ctx, ws)
	recheck, err := r.writeStatus(ctx, ws, in, res)
	if err != nil && ctx.Err() != nil {
		return ctrl.Result{}, nil // shutting down: not an error worth logging
	}
	if err != nil && apiServerUnavailable(err) {
		// Expected while the API server is away: no error storm with stack traces, and a
		// prompt retry (not the growing per-item backoff) so the status tells about the
		// outage as soon as it can be written.
		logf.FromContext(ctx).V(1).Info("API server unavailable; retrying the status write", "error", err.Error())
		return ctrl.Result{RequeueAfter: unavailableRetry}, nil
	}
	if err != nil && apierrors.IsInvalid(err) {
		// Not worth a hot retry with stack traces: the object itself is refused (a spec
		// stored under an older schema, say). Look again later, as a user fixes it.
		logf.FromContext(ctx).Info("The API server refuses this subscription's status; retrying in a minute",
			"error", boundMessage(err.Error()))
		return ctrl.Result{RequeueAfter: time.Minute}, nil
	}
	if recheck > 0 && (result.RequeueAfter == 0 || recheck < result.RequeueAfter) {
		result.RequeueAfter = recheck
	}
	return result, err
}

// unavailableRetry is how soon a status write that found no API server is tried again.
const unavailableRetry = 2 * time.Second

// apiServerUnavailable tells errors that mean the API server could not be reached or is
// overloaded, as opposed to a refused request.
func apiServerUnavailable(err error) bool {
	return utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		apierrors.IsTooManyRequests(err) || errors.Is(err, context.DeadlineExceeded)
}

// forget stops a deleted subscription and drops its counters and metrics.
func (r *WatchSubscriptionReconciler) forget(nn types.NamespacedName) {
	if uid, ok := r.running.uidOf(nn); ok {
		r.Registry.Forget(subscription.CheckpointName(nn, uid))
	}
	r.running.teardown(nn, true)
	r.retries.reset(nn)
	r.wakeups.forget(nn)
	r.written.forget(nn)
	metrics.Forget(nn.Namespace, nn.Name)
}

// wire starts, changes or stops the subscription's informers and delivery, and gathers
// what its Ready condition depends on.
//
// A definite answer (the spec is wrong, a Secret or the resource does not exist, the
// ServiceAccount may not) stops the subscription. Failing to get an answer (the API server
// unreachable or overloaded, the reconcile cancelled by a shutdown) never does: what runs
// keeps running on the last answer, and the check is retried with backoff.
func (r *WatchSubscriptionReconciler) wire(ctx context.Context, ws *notifyv1.WatchSubscription) (readiness, *resolve.Resource, ctrl.Result) {
	nn := types.NamespacedName{Namespace: ws.Namespace, Name: ws.Name}
	gvr := subscription.GVR(ws)
	in := readiness{Resource: resolve.Describe(gvr), Suspended: ws.Spec.Suspend}
	if in.Suspended {
		r.running.teardown(nn, false)
		return in, nil, ctrl.Result{}
	}
	target, err := subscription.ResolveSink(ctx, r.Client, ws, r.OperatorNamespace)
	if err != nil {
		if _, definite := errors.AsType[*subscription.SinkRefError](err); !definite {
			return r.keepRunning(&in, ws, metrics.CheckSinks, err, nil)
		}
		in.SinkErr = err
		r.running.teardown(nn, false)
		return in, nil, ctrl.Result{} // waits for the sink object or the namespace to change
	}
	in.Sink = target.Described
	effective, deadLetterSource := subscription.WithSinkDefaults(ws, target)
	p, err := subscription.Compile(effective, subscription.Options{DeliveryTimeout: r.DeliveryTimeout,
		OnFilterError: r.filterErrorHook(nn, ws.UID)})
	if err != nil {
		in.SpecErr = err
		r.running.teardown(nn, false)
		return in, nil, ctrl.Result{} // terminal until the spec changes
	}
	keepRunning := func(check string, err error, res *resolve.Resource) (readiness, *resolve.Resource, ctrl.Result) {
		return r.keepRunning(&in, ws, check, err, res)
	}
	var deadLetter *notifyv1.Sink
	if d := effective.Spec.Delivery; d != nil {
		deadLetter = d.DeadLetterSink
	}
	sinks, err := r.buildSinks(ctx, target, deadLetter, deadLetterSource)
	if err != nil {
		return r.sinksFailed(&in, ws, err)
	}
	res, err := r.Resolver.Resolve(gvr)
	if err != nil {
		return r.unresolved(ctx, &in, ws, err)
	}

	keys := p.Streams(res.Namespaced)
	var result ctrl.Result
	if r.Authorizer != nil {
		if err := p.Authorize(ctx, r.Authorizer, keys); err != nil {
			if _, denied := errors.AsType[*authz.DeniedError](err); !denied {
				return keepRunning(metrics.CheckAuthorization, err, &res)
			}
			in.AuthzErr = err
			r.running.teardown(nn, false)
			return in, &res, ctrl.Result{RequeueAfter: r.authzInterval()}
		}
		// Look again within the interval: a revoked grant stops the subscription.
		result.RequeueAfter = r.authzInterval()
	}
	c, same := r.running.current(nn, ws.UID, ws.Generation, keys, sinks.fingerprint)
	var opened openedSinks
	if !same {
		// Broker sinks connect here, for the pipeline about to start (a NATS connection may
		// take seconds): no lock is held, only this subscription waits.
		if opened, err = sinks.open(); err != nil {
			in.SinkErr = err
			r.running.teardown(nn, false)
			return in, &res, ctrl.Result{RequeueAfter: r.retries.next(nn)}
		}
	}
	r.retries.reset(nn)
	if !same {
		c = r.start(ws, p, keys, opened, sinks.fingerprint, c)
	}
	r.observe(&in, ws, c)
	return in, &res, r.lookAgain(in, gvr, result)
}

// sinksFailed answers sinks that could not be built: a Secret that could not be read keeps
// what runs; a definite answer stops the subscription until a grant, the spec or the Secret
// changes.
func (r *WatchSubscriptionReconciler) sinksFailed(in *readiness, ws *notifyv1.WatchSubscription,
	err error) (readiness, *resolve.Resource, ctrl.Result) {
	if sinkCouldNotAsk(err) {
		return r.keepRunning(in, ws, metrics.CheckSecrets, err, nil)
	}
	in.SinkErr = err
	r.running.teardown(types.NamespacedName{Namespace: ws.Namespace, Name: ws.Name}, false)
	if se, ok := errors.AsType[*subscription.SinkError](err); ok && se.Denied {
		return *in, nil, ctrl.Result{RequeueAfter: r.authzInterval()} // a grant takes effect within it
	}
	return *in, nil, ctrl.Result{} // waits for the spec or the Secret to change
}

// unresolved answers a resource discovery does not give: a CRD not installed yet is waited
// for, a resource that cannot be watched is terminal, discovery not answering keeps what runs.
func (r *WatchSubscriptionReconciler) unresolved(ctx context.Context, in *readiness, ws *notifyv1.WatchSubscription,
	err error) (readiness, *resolve.Resource, ctrl.Result) {
	nn := types.NamespacedName{Namespace: ws.Namespace, Name: ws.Name}
	switch {
	case meta.IsNoMatchError(err):
		in.ResolveErr = err
		r.running.teardown(nn, false)
		return *in, nil, r.waitForCRD(ctx, subscription.GVR(ws), in)
	case resolve.IsNotWatchable(err), !couldNotAsk(err):
		in.ResolveErr = err
		r.running.teardown(nn, false)
		return *in, nil, ctrl.Result{}
	default:
		return r.keepRunning(in, ws, metrics.CheckDiscovery, err, nil)
	}
}

// lookAgain shortens result's requeue for what will change by itself: a resource gone under
// a running watch, and drops or filters over budget that stop being recent (which clears
// their condition).
func (r *WatchSubscriptionReconciler) lookAgain(in readiness, gvr schema.GroupVersionResource,
	result ctrl.Result) ctrl.Result {
	for _, s := range in.Scopes {
		if apierrors.IsNotFound(s.Err) {
			// The resource went away under a running watch: look again rather than retry it.
			r.Resolver.Invalidate(gvr.Group)
			result.RequeueAfter = min(nonZero(result.RequeueAfter), time.Second)
		}
	}
	for _, recent := range []func(time.Time) (bool, time.Duration){in.Delivery.DroppedRecently, in.Delivery.OverBudgetRecently} {
		if yes, left := recent(time.Now()); yes {
			result.RequeueAfter = min(nonZero(result.RequeueAfter), left+100*time.Millisecond)
		}
	}
	return result
}

// keepRunning is the answer to a check that could not be made: what runs keeps running on
// the last answer, and the check is retried with backoff.
func (r *WatchSubscriptionReconciler) keepRunning(in *readiness, ws *notifyv1.WatchSubscription, check string, err error,
	res *resolve.Resource) (readiness, *resolve.Resource, ctrl.Result) {
	nn := types.NamespacedName{Namespace: ws.Namespace, Name: ws.Name}
	metrics.CheckFailed(nn.Namespace, nn.Name, check)
	in.CheckErr = fmt.Errorf("%s: %w", check, err)
	if c := r.running.get(nn, ws.UID); c != nil {
		r.observe(in, ws, c)
	}
	return *in, res, ctrl.Result{RequeueAfter: r.retries.next(nn)}
}

// observe adds what runs for the subscription to in: its informers and its deliveries.
func (r *WatchSubscriptionReconciler) observe(in *readiness, ws *notifyv1.WatchSubscription, c *runningSubscription) {
	in.SyncingFor = time.Since(c.started)
	in.QueueSize = c.queueSize
	for _, k := range c.keys {
		st, _ := r.Registry.State(k)
		in.Scopes = append(in.Scopes, scopeState{Namespace: k.Namespace, Synced: st.Synced, Err: st.Err})
	}
	if c, ok := r.running.peekCounters(types.NamespacedName{Namespace: ws.Namespace, Name: ws.Name}, ws.UID); ok {
		in.Delivery = c.snapshot()
		in.DroppedRecently, _ = in.Delivery.DroppedRecently(time.Now())
		in.OverBudgetRecently, _ = in.Delivery.OverBudgetRecently(time.Now())
	}
}

// start builds a delivery pipeline and puts it in the place of what ran before: in the
// streams both watch, the new subscriber takes the old one's place in one step, so no
// change goes to both or to neither, and the new pipeline takes over what the old one had
// not delivered yet, ahead of its own events. Streams what ran before already watched
// get no initial events again.
func (r *WatchSubscriptionReconciler) start(ws *notifyv1.WatchSubscription, p subscription.Plan, keys []watch.Key,
	sinks openedSinks, fingerprint string, old *runningSubscription) *runningSubscription {
	nn := types.NamespacedName{Namespace: ws.Namespace, Name: ws.Name}
	if old != nil && old.uid != ws.UID {
		r.running.teardown(nn, false) // another subscription of the same name: nothing to take over
		old = nil
	}
	progress := watch.NewProgress()
	if old != nil {
		progress = old.progress
	}
	counts := r.running.countersFor(ws)
	regarding := ws.DeepCopy()
	onResync := func(info event.ResyncInfo) {
		counts.resynced()
		metrics.Resynced(ws.Namespace, ws.Name, info.Reason)
		r.Recorder.Eventf(regarding, nil, "Warning", notifyv1.EventReasonResynced, "Resume",
			"Could not resume from checkpoint %s (%s): changes since were re-listed and deletions may be missing",
			info.Checkpoint, info.Reason)
		r.wakeups.Now(nn)
	}
	opts := p.PipelineOptions()
	opts.Sink, opts.DeadLetter = sinks.sink, sinks.deadLetter
	m := metrics.For(ws.Namespace, ws.Name)
	m.QueueCapacity(p.Delivery.QueueSize)
	// One logger for both: each WithValues clones an encoder with a buffer of its own.
	log := r.Log.WithValues("watchsubscription", nn)
	opts.Observer = &observer{nn: nn, counters: counts, metrics: m, progress: progress, wakeups: r.wakeups, log: log}
	opts.Held = old != nil // until the old pipeline's events are handed over
	opts.Log = log
	opts.Budget = r.Budget
	pipeline := delivery.Start(opts)
	c := &runningSubscription{uid: ws.UID, generation: ws.Generation, keys: keys, sinkFingerprint: fingerprint,
		pipeline: pipeline, sinks: sinks, progress: progress, started: time.Now(), queueSize: p.Delivery.QueueSize,
		handles: make(map[watch.Key]*watch.Handle, len(keys))}
	for _, k := range keys {
		sub := watch.Subscriber{
			ID:                fmt.Sprintf("%s#%d", nn, ws.Generation),
			Filter:            p.Filter,
			SendInitialEvents: p.SendInitialEvents,
			NeedsOldObject:    p.Shape.NeedsOldObject(),
			Receiver:          pipeline,
			Checkpoint:        p.Checkpoint,
			Progress:          progress,
			OnResync:          onResync,
		}
		if prev := old.handle(k); prev != nil {
			// Initial events went out before the spec changed, unless it was still sending them.
			sub.SendInitialEvents = sub.SendInitialEvents && !prev.CaughtUp()
			c.handles[k] = r.Registry.Resubscribe(prev, sub)
		} else {
			c.handles[k] = r.Registry.Subscribe(k, sub)
		}
	}
	r.running.replace(nn, c, old)
	return c
}

// filterErrorHook counts CEL evaluation errors (the change then does not match), notes those
// over the cost budget for status, and logs them at most once a minute.
func (r *WatchSubscriptionReconciler) filterErrorHook(nn types.NamespacedName, uid types.UID) func(error) {
	errs := metrics.FilterErrors(nn.Namespace, nn.Name)
	overBudget := metrics.FilterOverBudget(nn.Namespace, nn.Name)
	log := r.Log.WithValues("watchsubscription", nn)
	var lastLog atomic.Int64
	return func(err error) {
		errs.Inc()
		if filter.IsOverBudget(err) {
			overBudget.Inc()
			if c, ok := r.running.peekCounters(nn, uid); ok {
				// At once the first time in a while, to turn Ready False; after that the
				// count in the message waits for the next status interval.
				if c.filterOverBudget() {
					r.wakeups.Now(nn)
				} else {
					r.wakeups.Soon(nn)
				}
			}
		}
		now := time.Now().UnixNano()
		if last := lastLog.Load(); now-last > int64(time.Minute) && lastLog.CompareAndSwap(last, now) {
			log.Info("Filter evaluation failed; the change does not match (logged at most once a minute)",
				"error", err.Error())
		}
	}
}

func (r *WatchSubscriptionReconciler) authzInterval() time.Duration {
	if r.Authorizer.Interval > 0 {
		return r.Authorizer.Interval
	}
	return authz.DefaultInterval
}

// nonZero turns "no requeue" into "as late as possible", for min().
func nonZero(d time.Duration) time.Duration {
	if d == 0 {
		return time.Duration(1<<63 - 1)
	}
	return d
}

// waitForCRD explains a missing resource when a CRD for it exists, and looks again soon
// when that CRD is Established but discovery has not caught up yet. Without a CRD the
// subscription waits for CRD events: no polling.
func (r *WatchSubscriptionReconciler) waitForCRD(ctx context.Context, gvr schema.GroupVersionResource, in *readiness) ctrl.Result {
	if !strings.Contains(gvr.Group, ".") {
		return ctrl.Result{}
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Name: crdName(gvr)}, crd); err != nil {
		return ctrl.Result{}
	}
	var served []string
	for _, v := range crd.Spec.Versions {
		if v.Served {
			served = append(served, v.Name)
		}
	}
	if !slices.Contains(served, gvr.Version) {
		in.ResolveErr = fmt.Errorf("%w (CRD %s serves versions [%s])", in.ResolveErr, crd.Name, strings.Join(served, ", "))
		return ctrl.Result{}
	}
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
			return ctrl.Result{RequeueAfter: discoveryLagRetry}
		}
	}
	return ctrl.Result{}
}

// Drain waits until every running pipeline has finished with what it holds, or ctx ends.
// Stop the watches first, or new events keep arriving.
func (r *WatchSubscriptionReconciler) Drain(ctx context.Context) (pipelines, drained int) {
	if r.running == nil {
		return 0, 0
	}
	return r.running.drain(ctx)
}
