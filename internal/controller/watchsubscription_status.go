package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/authz"
	"github.com/dynamic-notifier/dynamic-notifier/internal/filter"
	"github.com/dynamic-notifier/dynamic-notifier/internal/metrics"
	"github.com/dynamic-notifier/dynamic-notifier/internal/resolve"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
	"github.com/dynamic-notifier/dynamic-notifier/internal/subscription"
	"github.com/dynamic-notifier/dynamic-notifier/internal/template"
)

// readiness is everything the Ready condition depends on, gathered by a reconcile.
type readiness struct {
	Suspended bool
	// SpecErr is a spec problem only the operator can see (selector syntax, ...).
	SpecErr error
	// Resource is the GVR as users write it, for messages.
	Resource string
	// SinkErr is why the sink could not be found or built (a missing sink object or
	// Secret, a bad CA bundle).
	SinkErr error
	// Sink is what status.sink shows: the kind of sink, or the sink object used.
	Sink string
	// AuthzErr is why the subscription's ServiceAccount may not watch what it names.
	AuthzErr error
	// ResolveErr is why the resource could not be resolved.
	ResolveErr error
	// CheckErr is a check that could not be made (no answer from the API server); what
	// runs, if anything, goes on with the last answer. Scopes are empty when nothing runs.
	CheckErr error
	// Scopes are the informers the subscription uses, one per namespace scope.
	Scopes []scopeState
	// Delivery is the state of the subscription's deliveries.
	Delivery countersSnapshot
	// DroppedRecently is true when the queue overflowed within the last minute.
	DroppedRecently bool
	// OverBudgetRecently is true when the filter exceeded its cost budget within the last
	// minute.
	OverBudgetRecently bool
	// QueueSize is the subscription's queue bound, for messages.
	QueueSize int
	// SyncingFor is how long what runs now has been running.
	SyncingFor time.Duration
}

type scopeState struct {
	// Namespace is the namespace watched, "" for all or cluster-scoped.
	Namespace string
	Synced    bool
	Err       error
}

// readyCondition summarises r into the Ready condition (without observedGeneration).
// The first problem found, in the order a user would fix them, wins.
func readyCondition(r readiness) metav1.Condition {
	cond := func(status metav1.ConditionStatus, reason, msg string) metav1.Condition {
		return metav1.Condition{Type: notifyv1.ConditionReady, Status: status, Reason: reason, Message: msg}
	}
	switch {
	case r.Suspended:
		return cond(metav1.ConditionFalse, notifyv1.ReasonSuspended, "Delivery is suspended by spec.suspend")
	case errors.Is(r.SpecErr, template.ErrInvalidTemplate):
		return cond(metav1.ConditionFalse, notifyv1.ReasonInvalidTemplate, r.SpecErr.Error())
	case errors.Is(r.SpecErr, filter.ErrInvalidFilter):
		return cond(metav1.ConditionFalse, notifyv1.ReasonInvalidFilter, r.SpecErr.Error())
	case r.SpecErr != nil:
		return cond(metav1.ConditionFalse, notifyv1.ReasonInvalidSpec, r.SpecErr.Error())
	case r.SinkErr != nil:
		if re, ok := errors.AsType[*subscription.SinkRefError](r.SinkErr); ok {
			return cond(metav1.ConditionFalse, re.Reason, re.Msg)
		}
		if se, ok := errors.AsType[*subscription.SinkError](r.SinkErr); ok && se.Denied {
			return cond(metav1.ConditionFalse, notifyv1.ReasonForbidden, r.SinkErr.Error())
		}
		return cond(metav1.ConditionFalse, notifyv1.ReasonInvalidSink, r.SinkErr.Error())
	case r.ResolveErr != nil:
		return resolveCondition(r.Resource, r.ResolveErr)
	case r.AuthzErr != nil:
		if denied, ok := errors.AsType[*authz.DeniedError](r.AuthzErr); ok {
			return cond(metav1.ConditionFalse, notifyv1.ReasonForbidden, denied.Error())
		}
		return cond(metav1.ConditionFalse, notifyv1.ReasonWatchFailing, "Checking authorization: "+r.AuthzErr.Error())
	}
	if r.CheckErr != nil && len(r.Scopes) == 0 {
		return cond(metav1.ConditionUnknown, notifyv1.ReasonCheckFailing,
			fmt.Sprintf("Could not check %s, retrying", r.CheckErr.Error()))
	}
	c := runningCondition(r)
	if r.CheckErr != nil {
		c.Message += fmt.Sprintf(" (could not re-check %s; running on the last answer, retrying)", r.CheckErr.Error())
	}
	return c
}

// runningCondition is the Ready condition of a subscription whose watches and delivery run.
func runningCondition(r readiness) metav1.Condition {
	cond := func(status metav1.ConditionStatus, reason, msg string) metav1.Condition {
		return metav1.Condition{Type: notifyv1.ConditionReady, Status: status, Reason: reason, Message: msg}
	}
	for _, s := range r.Scopes {
		if s.Err != nil {
			return watchErrorCondition(r.Resource, s)
		}
	}
	for _, s := range r.Scopes {
		if !s.Synced {
			return cond(metav1.ConditionUnknown, notifyv1.ReasonStarting,
				fmt.Sprintf("Listing %s %s", r.Resource, scopeText(s.Namespace)))
		}
	}
	if r.Delivery.Failing {
		// Sinks mask their errors; masked again here whatever made the text (see sink.MaskURLsIn).
		return cond(metav1.ConditionFalse, notifyv1.ReasonDeliveryFailing, sink.MaskURLsIn(r.Delivery.LastError))
	}
	if r.OverBudgetRecently {
		return cond(metav1.ConditionFalse, notifyv1.ReasonFilterOverBudget, fmt.Sprintf(
			"spec.filter cost more than its budget for %d changes so far, the last within a minute; those changes "+
				"were not delivered. Make the expression cheaper (fewer nested loops over lists)", r.Delivery.FilterOverBudget))
	}
	if r.DroppedRecently {
		msg := fmt.Sprintf("%d events dropped so far: the delivery queue of %d was full", r.Delivery.Dropped, r.QueueSize)
		if e := r.Delivery.Evicted; e > 0 {
			msg = fmt.Sprintf("%d events dropped so far, %d of them (oldest first) because this subscription held "+
				"more than its share of the operator's delivery memory budget", r.Delivery.Dropped, e)
		}
		return cond(metav1.ConditionFalse, notifyv1.ReasonEventsDropped, msg+
			". The sink is slower than the changes; raise spec.delivery.maxQueueSize or spec.delivery.parallelism, "+
			"or make the sink faster")
	}
	scopes := make([]string, 0, len(r.Scopes))
	for _, s := range r.Scopes {
		scopes = append(scopes, scopeText(s.Namespace))
	}
	return cond(metav1.ConditionTrue, notifyv1.ReasonWatching,
		fmt.Sprintf("Watching %s %s", r.Resource, strings.Join(scopes, ", ")))
}

func resolveCondition(resource string, err error) metav1.Condition {
	c := metav1.Condition{Type: notifyv1.ConditionReady, Status: metav1.ConditionFalse}
	switch {
	case meta.IsNoMatchError(err):
		c.Reason = notifyv1.ReasonResourceNotFound
		c.Message = fmt.Sprintf("Resource %s is not served by the API server; "+
			"waiting for it (a CRD may be installed later)", resource)
	case resolve.IsNotWatchable(err):
		c.Reason = notifyv1.ReasonNotWatchable
		c.Message = capitalize(err.Error())
	case apierrors.IsForbidden(err):
		c.Reason = notifyv1.ReasonForbidden
		c.Message = "The operator may not discover " + resource + ": " + err.Error()
	default:
		c.Reason = notifyv1.ReasonWatchFailing
		c.Message = "Resolving " + resource + ": " + err.Error()
	}
	return c
}

func watchErrorCondition(resource string, s scopeState) metav1.Condition {
	c := metav1.Condition{Type: notifyv1.ConditionReady, Status: metav1.ConditionFalse}
	var status apierrors.APIStatus
	detail := s.Err.Error()
	if errors.As(s.Err, &status) && status.Status().Message != "" {
		detail = status.Status().Message
	}
	switch {
	case apierrors.IsForbidden(s.Err):
		c.Reason = notifyv1.ReasonForbidden
		c.Message = fmt.Sprintf("The operator may not list and watch %s %s: %s", resource, scopeText(s.Namespace), detail)
	case apierrors.IsNotFound(s.Err):
		c.Reason = notifyv1.ReasonResourceNotFound
		c.Message = fmt.Sprintf("Resource %s is no longer served by the API server", resource)
	default:
		c.Reason = notifyv1.ReasonWatchFailing
		c.Message = fmt.Sprintf("Watching %s %s fails, retrying: %s", resource, scopeText(s.Namespace), detail)
	}
	return c
}

func scopeText(namespace string) string {
	if namespace == "" {
		return "cluster-wide"
	}
	return "in namespace " + namespace
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// readyChanged tells whether Ready changed status or reason.
func readyChanged(old *metav1.Condition, updated metav1.Condition) bool {
	return old == nil || old.Status != updated.Status || old.Reason != updated.Reason
}

// readyEvent is the Kubernetes Event type a Ready transition deserves: Warning when it turns
// False or changes reason while False, Normal when it recovers from False; none for starting
// up and first becoming Ready, which would double the API writes of every new subscription
// for nothing a user acts on.
func readyEvent(old *metav1.Condition, updated metav1.Condition) (string, bool) {
	if !readyChanged(old, updated) {
		return "", false
	}
	switch {
	case updated.Status == metav1.ConditionFalse:
		return "Warning", true
	case updated.Status == metav1.ConditionTrue && old != nil && old.Status == metav1.ConditionFalse:
		return "Normal", true
	}
	return "", false
}

// restartGrace is how long a subscription that was Watching keeps saying so while its
// informer syncs again after an operator restart or a spec-neutral restart of its watches. Without it
// every restart would flip every subscription to Starting and back: two status writes and
// two Events each, for a watch that is usually back within a second.
const restartGrace = 10 * time.Second

// keepWatching decides whether a Starting condition should leave an existing Watching one
// in place, and for how long at most.
func keepWatching(old *metav1.Condition, updated metav1.Condition, generation int64, syncingFor time.Duration) (bool, time.Duration) {
	if updated.Reason != notifyv1.ReasonStarting || old == nil || old.Reason != notifyv1.ReasonWatching ||
		old.ObservedGeneration != generation || syncingFor >= restartGrace {
		return false, 0
	}
	return true, restartGrace - syncingFor
}

// maxMessage bounds condition and Event messages: an error can be as long as a sink makes
// it, and a message over the API's limit would fail every status write.
const maxMessage = 1024

// boundMessage cuts msg to maxMessage bytes, on a rune boundary, ending with an ellipsis.
func boundMessage(msg string) string {
	if len(msg) <= maxMessage {
		return msg
	}
	const ellipsis = "…"
	cut := maxMessage - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + ellipsis
}

// writeStatus patches the status once, only when something in it changed, and records an
// Event when Ready changes. It returns when to look again if a restart grace is running.
func (r *WatchSubscriptionReconciler) writeStatus(ctx context.Context, ws *notifyv1.WatchSubscription, in readiness, res *resolve.Resource) (time.Duration, error) {
	r.written.freshen(ws, &ws.Status)
	before := ws.DeepCopy()
	st := &ws.Status
	st.ObservedGeneration = ws.Generation
	st.Resource = in.Resource
	if in.Sink != "" {
		st.Sink = in.Sink
	}
	if res != nil {
		st.Kind = res.Kind
		st.Namespaced = &res.Namespaced
	}
	if r.Shards != nil {
		st.Replica = r.Shards.Name()
	}
	nn := types.NamespacedName{Namespace: ws.Namespace, Name: ws.Name}
	if c, ok := r.running.peekCounters(nn, ws.UID); ok {
		s := c.snapshot()
		st.EventsObserved, st.EventsDelivered, st.EventsFailed, st.EventsDropped = s.Observed, s.Delivered, s.Failed, s.Dropped
		st.EventsCoalesced, st.EventsQueued = s.Coalesced, s.Queued
		st.LastEventTime = optionalTime(s.LastEventTime, st.LastEventTime)
		st.LastDeliveryTime = optionalTime(s.LastDeliveryTime, st.LastDeliveryTime)
		st.LastResyncTime = optionalTime(s.LastResyncTime, st.LastResyncTime)
	}
	oldReady := meta.FindStatusCondition(before.Status.Conditions, notifyv1.ConditionReady)
	cond := readyCondition(in)
	cond.ObservedGeneration = ws.Generation
	cond.Message = boundMessage(cond.Message)
	keep, recheck := keepWatching(oldReady, cond, ws.Generation, in.SyncingFor)
	if keep {
		cond = *oldReady
	}
	meta.SetStatusCondition(&st.Conditions, cond)
	metrics.Ready(ws.Namespace, ws.Name, cond.Status == metav1.ConditionTrue, cond.Reason)

	if equality.Semantic.DeepEqual(before.Status, ws.Status) {
		return recheck, nil
	}
	if err := r.Status().Patch(ctx, ws, client.MergeFrom(before)); err != nil {
		if apierrors.IsNotFound(err) {
			return 0, nil
		}
		return 0, err
	}
	r.written.record(ws, &ws.Status)
	if from := before.Status.Replica; from != "" && from != st.Replica {
		r.Recorder.Eventf(ws, nil, "Normal", notifyv1.EventReasonMoved, "Serve",
			"Served by replica %s now (was %s)", st.Replica, from)
	}
	if kind, ok := readyEvent(oldReady, cond); ok {
		r.Recorder.Eventf(ws, nil, kind, cond.Reason, "Reconcile", "%s", cond.Message)
	}
	logf.FromContext(ctx).V(1).Info("Status updated", "ready", cond.Status, "reason", cond.Reason)
	return recheck, nil
}

// optionalTime keeps the status time when nothing newer is known in this process.
func optionalTime(t time.Time, current *metav1.Time) *metav1.Time {
	if t.IsZero() {
		return current
	}
	mt := metav1.NewTime(t.Truncate(time.Second))
	return &mt
}
