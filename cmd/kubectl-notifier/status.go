package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/resolve"
	"github.com/dynamic-notifier/dynamic-notifier/internal/subscription"
	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

// queueDepthMetric is where the operator reports a subscription's queue depth; status
// does not hold it.
const queueDepthMetric = "dynamicnotifier_delivery_queue_depth"

// statusOptions are the flags of `status`.
type statusOptions struct {
	allNamespaces bool
	output        string
}

func newStatusCommand(o *options) *cobra.Command {
	so := &statusOptions{}
	cmd := &cobra.Command{
		Use:   "status [NAME]",
		Short: "Sum up subscriptions: what they watch, with whom, their sink and deliveries",
		Long: `Sum up one subscription, or those of the namespace (-A: of every namespace).

For each: Ready, what it watches (resource and namespaces) and with which other
subscriptions it shares those watches (the operator opens one watch per resource and
namespace, whoever asks: found by listing every subscription, which needs list on
watchsubscriptions cluster-wide, else only the namespace's are compared), what it selects,
its sink, its counters, last event and delivery, the last error (Ready's message while it
is not True, else the last Warning Event), and its resync history (status.lastResyncTime
and the Resynced Events the API server still keeps, an hour by default).

The queue's depth is status.eventsQueued, as of the operator's last status write (every
few seconds while events flow); the operator's metric ` + queueDepthMetric + ` has it live.`,
		Example: `  kubectl notifier status -n shop
  kubectl notifier status rollouts -n shop -o yaml
  kubectl notifier status -A`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := outputFormat(so.output); err != nil {
				return err
			}
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			return runStatus(cmd.Context(), o, so, name)
		},
	}
	cmd.Flags().BoolVarP(&so.allNamespaces, "all-namespaces", "A", false, "the subscriptions of every namespace")
	cmd.Flags().StringVarP(&so.output, "output", "o", "", "output format: text, json or yaml")
	return cmd
}

// statusReport sums up one subscription.
type statusReport struct {
	Subscription string `json:"subscription"`
	Suspended    bool   `json:"suspended,omitempty"`
	Ready        string `json:"ready"`
	Reason       string `json:"reason,omitempty"`
	Message      string `json:"message,omitempty"`
	Resource     string `json:"resource"`
	Kind         string `json:"kind,omitempty"`
	// Watches are the streams: a namespace each, or cluster-wide.
	Watches []string `json:"watches,omitempty"`
	// SharedWith are the other subscriptions on each stream.
	SharedWith []sharedStream `json:"sharedWith,omitempty"`
	Selects    string         `json:"selects,omitempty"`
	Sink       string         `json:"sink,omitempty"`
	Observed   int64          `json:"eventsObserved"`
	Delivered  int64          `json:"eventsDelivered"`
	Failed     int64          `json:"eventsFailed"`
	Dropped    int64          `json:"eventsDropped"`
	// Queued are the events waiting for delivery or in flight (status.eventsQueued).
	Queued int64 `json:"eventsQueued"`
	// QueueSize bounds them; 0 when it could not be worked out.
	QueueSize    int        `json:"queueSize,omitempty"`
	LastEvent    *time.Time `json:"lastEventTime,omitempty"`
	LastDelivery *time.Time `json:"lastDeliveryTime,omitempty"`
	// LastError is Ready's message while it is not True, else the last Warning Event.
	LastError     string     `json:"lastError,omitempty"`
	LastErrorTime *time.Time `json:"lastErrorTime,omitempty"`
	LastResync    *time.Time `json:"lastResyncTime,omitempty"`
	// Resyncs are the times of the Resynced Events still kept.
	Resyncs []time.Time `json:"resyncs,omitempty"`
	Notes   []string    `json:"notes,omitempty"`
}

// sharedStream is one watch and the other subscriptions on it.
type sharedStream struct {
	Stream        string   `json:"stream"`
	Subscriptions []string `json:"subscriptions"`
}

func runStatus(ctx context.Context, o *options, so *statusOptions, name string) error {
	cl, err := o.clients()
	if err != nil {
		return err
	}
	ns, _, err := o.namespace()
	if err != nil {
		return err
	}
	var targets []notifyv1.WatchSubscription
	switch {
	case name != "":
		ws := &notifyv1.WatchSubscription{}
		if err := cl.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ws); err != nil {
			return err
		}
		targets = []notifyv1.WatchSubscription{*ws}
	default:
		list := &notifyv1.WatchSubscriptionList{}
		var opts []client.ListOption
		if !so.allNamespaces {
			opts = append(opts, client.InNamespace(ns))
		}
		if err := cl.client.List(ctx, list, opts...); err != nil {
			return err
		}
		targets = list.Items
	}
	if len(targets) == 0 {
		where := "in namespace " + ns
		if so.allNamespaces {
			where = "in any namespace"
		}
		_, _ = fmt.Fprintf(o.streams.Out, "No WatchSubscriptions %s.\n", where)
		return nil
	}

	// Every subscription, to find who shares a watch: cluster-wide if the user may list them.
	var note string
	all := &notifyv1.WatchSubscriptionList{}
	if err := cl.client.List(ctx, all); apierrors.IsForbidden(err) {
		note = "you may not list WatchSubscriptions cluster-wide: only those of namespace " + ns +
			" were compared for shared watches"
		if err := cl.client.List(ctx, all, client.InNamespace(ns)); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	streams := map[watch.Key][]string{}
	keysOf := map[string][]watch.Key{}
	for i := range all.Items {
		ws := &all.Items[i]
		keys, ok := streamsOf(cl, ws)
		if !ok || ws.Spec.Suspend {
			continue
		}
		id := ws.Namespace + "/" + ws.Name
		keysOf[id] = keys
		for _, k := range keys {
			streams[k] = append(streams[k], id)
		}
	}

	events := map[string][]corev1.Event{} // namespace: the Events about its subscriptions
	eventsForbidden := map[string]bool{}
	reports := make([]*statusReport, 0, len(targets))
	for i := range targets {
		ws := &targets[i]
		if _, done := events[ws.Namespace]; !done && !eventsForbidden[ws.Namespace] {
			list, err := cl.kube.CoreV1().Events(ws.Namespace).List(ctx, metav1.ListOptions{
				FieldSelector: "involvedObject.kind=WatchSubscription"})
			switch {
			case apierrors.IsForbidden(err):
				eventsForbidden[ws.Namespace] = true
			case err != nil:
				return err
			default:
				events[ws.Namespace] = list.Items
			}
		}
		r := statusOf(ctx, o, cl, ws, keysOf, streams, events[ws.Namespace])
		if note != "" {
			r.Notes = append(r.Notes, note)
		}
		if eventsForbidden[ws.Namespace] {
			r.Notes = append(r.Notes, "you may not list Events in namespace "+ws.Namespace+
				": the last warning and the resync history are incomplete")
		}
		reports = append(reports, r)
	}
	if structured(so.output) {
		var v any = reports
		if name != "" {
			v = reports[0]
		}
		return printStructured(o.streams.Out, so.output, v)
	}
	for _, r := range reports {
		printStatusReport(o.streams.Out, r, time.Now())
	}
	return nil
}

// streamsOf are the watches a subscription opens, as the operator keys them; false when its
// scope is not known (not resolved yet, and discovery does not know the resource).
func streamsOf(cl *clients, ws *notifyv1.WatchSubscription) ([]watch.Key, bool) {
	if ws.Status.Namespaced != nil {
		return subscription.Streams(ws, *ws.Status.Namespaced), true
	}
	res, err := cl.resolver.Resolve(subscription.GVR(ws))
	if err != nil {
		return nil, false
	}
	return subscription.Streams(ws, res.Namespaced), true
}

func statusOf(ctx context.Context, o *options, cl *clients, ws *notifyv1.WatchSubscription,
	keysOf map[string][]watch.Key, streams map[watch.Key][]string, events []corev1.Event) *statusReport {
	id := ws.Namespace + "/" + ws.Name
	st := ws.Status
	r := &statusReport{Subscription: id, Suspended: ws.Spec.Suspend, Ready: "Unknown",
		Resource: resolve.Describe(subscription.GVR(ws)), Kind: st.Kind, Sink: st.Sink,
		Selects: describeSelection(ws), Observed: st.EventsObserved, Delivered: st.EventsDelivered,
		Failed: st.EventsFailed, Dropped: st.EventsDropped, Queued: st.EventsQueued,
		LastEvent: timeOf(st.LastEventTime), LastDelivery: timeOf(st.LastDeliveryTime), LastResync: timeOf(st.LastResyncTime)}
	if cond := meta.FindStatusCondition(st.Conditions, notifyv1.ConditionReady); cond != nil {
		r.Ready, r.Reason, r.Message = string(cond.Status), cond.Reason, cond.Message
		if cond.Status != metav1.ConditionTrue {
			r.LastError, r.LastErrorTime = cond.Message, timeOf(&cond.LastTransitionTime)
		}
	} else {
		r.Message = "the operator has not reported on this subscription yet"
	}
	keys, known := keysOf[id]
	if !known && !ws.Spec.Suspend {
		keys, _ = streamsOf(cl, ws)
	}
	for _, k := range keys {
		r.Watches = append(r.Watches, scopeText(k.Namespace))
		var others []string
		for _, other := range streams[k] {
			if other != id {
				others = append(others, other)
			}
		}
		if len(others) > 0 {
			r.SharedWith = append(r.SharedWith, sharedStream{Stream: scopeText(k.Namespace), Subscriptions: others})
		}
	}
	if r.Sink == "" {
		switch {
		case ws.Spec.SinkRef != nil:
			r.Sink = string(ws.Spec.SinkRef.KindOrDefault()) + "/" + ws.Spec.SinkRef.Name
		case ws.Spec.Sink != nil:
			r.Sink = subscription.SinkKind(*ws.Spec.Sink)
		}
	}
	// The queue's bound, as the operator plans it (a sink object's defaults included).
	if target, err := subscription.ResolveSink(ctx, cl.client, ws, o.operatorNamespace); err == nil {
		effective, _ := subscription.WithSinkDefaults(ws, target)
		if p, err := subscription.Compile(effective, subscription.Options{}); err == nil {
			r.QueueSize = p.Delivery.QueueSize
		}
	}
	var lastWarning *corev1.Event
	for i := range events {
		e := &events[i]
		if e.InvolvedObject.Name != ws.Name || e.InvolvedObject.UID != ws.UID {
			continue
		}
		t := eventLine(e).Time
		if e.Reason == notifyv1.EventReasonResynced {
			r.Resyncs = append(r.Resyncs, t)
		}
		if e.Type == corev1.EventTypeWarning && (lastWarning == nil || eventLine(lastWarning).Time.Before(t)) {
			lastWarning = e
		}
	}
	slices.SortFunc(r.Resyncs, func(a, b time.Time) int { return a.Compare(b) })
	if r.LastError == "" && lastWarning != nil {
		t := eventLine(lastWarning).Time
		r.LastError, r.LastErrorTime = "Warning Event "+lastWarning.Reason+": "+lastWarning.Message, &t
	}
	return r
}

func timeOf(t *metav1.Time) *time.Time {
	if t == nil || t.IsZero() {
		return nil
	}
	return &t.Time
}

func printStatusReport(w io.Writer, r *statusReport, now time.Time) {
	p := func(format string, args ...any) { _, _ = fmt.Fprintf(w, format, args...) }
	field := func(name, value string) { p("  %-13s %s\n", name, value) }
	ago := func(t *time.Time) string {
		if t == nil {
			return "never"
		}
		return duration.HumanDuration(now.Sub(*t)) + " ago (" + t.Local().Format(time.RFC3339) + ")"
	}
	p("WatchSubscription %s\n", r.Subscription)
	ready := r.Ready
	if r.Reason != "" {
		ready += " " + r.Reason
	}
	if r.Message != "" {
		ready += ": " + r.Message
	}
	field("ready", ready)
	what := r.Resource
	if r.Kind != "" {
		what += " (" + r.Kind + ")"
	}
	switch {
	case r.Suspended:
		what += ", suspended: watching nothing"
	case len(r.Watches) > 0:
		what += " " + strings.Join(r.Watches, ", ")
	}
	field("watches", what)
	switch {
	case r.Suspended || len(r.Watches) == 0:
	case len(r.SharedWith) == 0:
		field("shared with", "no other subscription: its watches are its own")
	default:
		for _, s := range r.SharedWith {
			field("shared with", strings.Join(s.Subscriptions, ", ")+" ("+s.Stream+")")
		}
	}
	field("selects", r.Selects)
	field("sink", r.Sink)
	field("deliveries", fmt.Sprintf("observed %d, delivered %d, failed %d, dropped %d", r.Observed, r.Delivered,
		r.Failed, r.Dropped))
	queue := fmt.Sprintf("%d events waiting or in flight", r.Queued)
	if r.QueueSize > 0 {
		queue += fmt.Sprintf(", up to %d", r.QueueSize)
	}
	field("queue", queue)
	field("last event", ago(r.LastEvent))
	field("last delivery", ago(r.LastDelivery))
	if r.LastError == "" {
		field("last error", "none")
	} else {
		field("last error", r.LastError)
		if r.LastErrorTime != nil {
			field("", ago(r.LastErrorTime))
		}
	}
	resyncs := "none"
	if r.LastResync != nil {
		resyncs = "last " + ago(r.LastResync)
	}
	if n := len(r.Resyncs); n > 0 {
		resyncs += fmt.Sprintf("; %d Resynced Event(s) kept, the last %s", n, ago(&r.Resyncs[n-1]))
	}
	field("resyncs", resyncs)
	for _, n := range r.Notes {
		field("note", n)
	}
	p("\n")
}
