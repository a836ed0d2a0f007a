package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

// tailOptions are the flags of `tail`.
type tailOptions struct {
	output string
}

func newTailCommand(o *options) *cobra.Command {
	to := &tailOptions{}
	cmd := &cobra.Command{
		Use:   "tail NAME",
		Short: "Follow what a subscription delivers, from its status and Events",
		Long: `Follow what a subscription delivers: one line per change of its status and per Kubernetes Event about it.

tail watches the WatchSubscription and the Events that regard it; it needs nothing beyond
get, list and watch on watchsubscriptions and on events in its namespace, and reads no
Secret and no event payload. It shows what the operator reports:

  ready   the Ready condition changed (DeliveryFailing carries the last delivery error)
  counts  events observed, delivered, failed and dropped since the last line, with totals,
          the events queued and the last delivery time
  resync  the operator could not resume from its checkpoint (status.lastResyncTime)
  event   an Event about the subscription (Ready transitions, Resynced)
  spec    the spec changed

The operator writes counters at most every status interval (2s by default), so one counts
line may sum up several deliveries; it does not show each event (use test to see what a
change becomes, or a log sink). Ctrl-C stops.`,
		Example: `  kubectl notifier tail configmaps-to-webhook -n default`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := outputFormat(to.output); err != nil {
				return err
			}
			return runTail(cmd.Context(), o, to, args[0])
		},
	}
	cmd.Flags().StringVarP(&to.output, "output", "o", "", "output format: text, or json (one object per line)")
	return cmd
}

// tailLine is one line of tail's output.
type tailLine struct {
	Time time.Time `json:"time"`
	// Kind is ready, counts, resync, event, spec or deleted.
	Kind    string  `json:"kind"`
	Message string  `json:"message"`
	Status  string  `json:"status,omitempty"`
	Reason  string  `json:"reason,omitempty"`
	Counts  *counts `json:"counts,omitempty"`
}

// counts are a subscription's counters: since the last line, and in total.
type counts struct {
	Observed, Delivered, Failed, Dropped                     int64
	TotalObserved, TotalDelivered, TotalFailed, TotalDropped int64
	LastDelivery                                             *time.Time `json:",omitempty"`
	// Queued are the events waiting for delivery or in flight.
	Queued int64
}

// statusChanges are the lines that tell what changed from prev (nil: nothing seen yet) to
// cur. Pure: table-tested.
func statusChanges(prev, cur *notifyv1.WatchSubscription, now time.Time) []tailLine {
	var out []tailLine
	if prev != nil && cur.Generation != prev.Generation {
		out = append(out, tailLine{Time: now, Kind: "spec", Message: fmt.Sprintf("the spec changed (generation %d)",
			cur.Generation)})
	}
	var before *metav1.Condition
	if prev != nil {
		before = meta.FindStatusCondition(prev.Status.Conditions, notifyv1.ConditionReady)
	}
	after := meta.FindStatusCondition(cur.Status.Conditions, notifyv1.ConditionReady)
	switch {
	case after == nil && prev == nil:
		out = append(out, tailLine{Time: now, Kind: "ready", Message: "no Ready condition yet: the operator has not " +
			"reported on this subscription (is it running?)"})
	case after != nil && (before == nil || before.Status != after.Status || before.Reason != after.Reason ||
		before.Message != after.Message):
		out = append(out, tailLine{Time: now, Kind: "ready", Status: string(after.Status), Reason: after.Reason,
			Message: fmt.Sprintf("Ready %s %s: %s", after.Status, after.Reason, after.Message)})
	}
	var p notifyv1.WatchSubscriptionStatus
	if prev != nil {
		p = prev.Status
	}
	s := cur.Status
	c := counts{Observed: s.EventsObserved - p.EventsObserved, Delivered: s.EventsDelivered - p.EventsDelivered,
		Failed: s.EventsFailed - p.EventsFailed, Dropped: s.EventsDropped - p.EventsDropped,
		TotalObserved: s.EventsObserved, TotalDelivered: s.EventsDelivered, TotalFailed: s.EventsFailed,
		TotalDropped: s.EventsDropped, Queued: s.EventsQueued}
	if t := s.LastDeliveryTime; t != nil {
		c.LastDelivery = &t.Time
	}
	if prev == nil || c.Observed != 0 || c.Delivered != 0 || c.Failed != 0 || c.Dropped != 0 ||
		s.EventsQueued != p.EventsQueued || !timesEqual(s.LastDeliveryTime, p.LastDeliveryTime) {
		out = append(out, tailLine{Time: now, Kind: "counts", Counts: &c, Message: describeCounts(c, prev == nil)})
	}
	if t := s.LastResyncTime; t != nil && (prev == nil || !timesEqual(t, p.LastResyncTime)) {
		msg := "the operator could not resume from its checkpoint at " + t.Format(time.RFC3339) +
			": changes in the gap were re-listed and deletions may be missing"
		if prev == nil {
			msg = "last resync at " + t.Format(time.RFC3339)
		}
		out = append(out, tailLine{Time: now, Kind: "resync", Message: msg})
	}
	return out
}

func timesEqual(a, b *metav1.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(b)
}

func describeCounts(c counts, initial bool) string {
	if initial {
		msg := fmt.Sprintf("so far: observed %d, delivered %d, failed %d, dropped %d; queued %d", c.TotalObserved,
			c.TotalDelivered, c.TotalFailed, c.TotalDropped, c.Queued)
		if c.LastDelivery != nil {
			msg += "; last delivery " + c.LastDelivery.Format(time.RFC3339)
		}
		return msg
	}
	var parts []string
	for _, n := range []struct {
		name         string
		delta, total int64
	}{{"observed", c.Observed, c.TotalObserved}, {"delivered", c.Delivered, c.TotalDelivered},
		{"failed", c.Failed, c.TotalFailed}, {"dropped", c.Dropped, c.TotalDropped}} {
		if n.delta != 0 {
			parts = append(parts, fmt.Sprintf("%s %+d (%d)", n.name, n.delta, n.total))
		}
	}
	parts = append(parts, fmt.Sprintf("queued %d", c.Queued))
	msg := strings.Join(parts, ", ")
	if c.LastDelivery != nil {
		if msg != "" {
			msg += "; "
		}
		msg += "last delivery " + c.LastDelivery.Format(time.RFC3339)
	}
	return msg
}

// eventLine is the line of a Kubernetes Event about the subscription.
func eventLine(e *corev1.Event) tailLine {
	t := e.EventTime.Time
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		t = e.Series.LastObservedTime.Time
	case !e.LastTimestamp.IsZero():
		t = e.LastTimestamp.Time
	case t.IsZero():
		t = e.CreationTimestamp.Time
	}
	msg := fmt.Sprintf("%s %s: %s", e.Type, e.Reason, e.Message)
	if n := eventCount(e); n > 1 {
		msg += fmt.Sprintf(" (%d times)", n)
	}
	return tailLine{Time: t, Kind: "event", Status: e.Type, Reason: e.Reason, Message: msg}
}

func eventCount(e *corev1.Event) int32 {
	if e.Series != nil {
		return e.Series.Count
	}
	return e.Count
}

// tailPrinter writes lines from both watches, one at a time.
type tailPrinter struct {
	mu     sync.Mutex
	out    io.Writer
	format string
}

func (p *tailPrinter) print(lines ...tailLine) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range lines {
		if p.format == formatJSON {
			_ = printStructuredLine(p.out, l)
			continue
		}
		_, _ = fmt.Fprintf(p.out, "%s %-7s %s\n", l.Time.Local().Format("15:04:05"), l.Kind, l.Message)
	}
}

func runTail(ctx context.Context, o *options, to *tailOptions, name string) error {
	cl, err := o.clients()
	if err != nil {
		return err
	}
	ns, _, err := o.namespace()
	if err != nil {
		return err
	}
	subs := cl.dynamic.Resource(notifyv1.GroupVersion.WithResource("watchsubscriptions")).Namespace(ns)
	first, err := subs.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	printer := &tailPrinter{out: o.streams.Out, format: to.output}
	if to.output != formatJSON {
		_, _ = fmt.Fprintf(o.streams.Out, "following WatchSubscription %s/%s (Ctrl-C stops)\n", ns, name)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Each watch ends the other: the subscription's when it is deleted, either on an error.
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	finish := func(err error) {
		if ctx.Err() != nil {
			err = nil // stopped (Ctrl-C, or the other watch ended): not an error of its own
		}
		errs <- err
		cancel()
	}

	// The Events that regard this subscription (this uid: not a deleted namesake's).
	selector := fields.Set{"involvedObject.kind": "WatchSubscription", "involvedObject.name": name,
		"involvedObject.uid": string(first.GetUID())}.AsSelector().String()
	events := cl.kube.CoreV1().Events(ns)
	if _, err := events.List(ctx, metav1.ListOptions{FieldSelector: selector, Limit: 1}); err != nil {
		if !apierrors.IsForbidden(err) {
			return err
		}
		printer.print(tailLine{Time: time.Now(), Kind: "event", Message: "you may not list Events in namespace " + ns +
			": following the status only"})
	} else {
		wg.Go(func() {
			seen := map[string]int32{} // event uid: the count last printed
			lw := &cache.ListWatch{
				ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
					opts.FieldSelector = selector
					return events.List(ctx, opts)
				},
				WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
					opts.FieldSelector = selector
					return events.Watch(ctx, opts)
				},
			}
			_, err := watchtools.UntilWithSync(ctx, lw, &corev1.Event{}, nil, func(ev watch.Event) (bool, error) {
				e, ok := ev.Object.(*corev1.Event)
				if !ok || ev.Type == watch.Deleted {
					return false, nil
				}
				if n := eventCount(e); seen[string(e.UID)] != n || n == 0 {
					seen[string(e.UID)] = n
					printer.print(eventLine(e))
				}
				return false, nil
			})
			finish(err)
		})
	}

	wg.Go(func() {
		var prev *notifyv1.WatchSubscription
		lw := &cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
				opts.FieldSelector = "metadata.name=" + name
				return subs.List(ctx, opts)
			},
			WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
				opts.FieldSelector = "metadata.name=" + name
				return subs.Watch(ctx, opts)
			},
		}
		_, err := watchtools.UntilWithSync(ctx, lw, &unstructured.Unstructured{}, nil, func(ev watch.Event) (bool, error) {
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok {
				return false, nil
			}
			if ev.Type == watch.Deleted {
				printer.print(tailLine{Time: time.Now(), Kind: "deleted", Message: "the subscription was deleted"})
				return true, nil
			}
			cur := &notifyv1.WatchSubscription{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, cur); err != nil {
				return false, err
			}
			if cur.UID != first.GetUID() {
				printer.print(tailLine{Time: time.Now(), Kind: "deleted",
					Message: "the subscription was deleted and created again"})
				return true, nil
			}
			printer.print(statusChanges(prev, cur, time.Now())...)
			prev = cur
			return false, nil
		})
		finish(err)
	})

	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}
