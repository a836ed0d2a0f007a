package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/authz"
	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/filter"
	"github.com/dynamic-notifier/dynamic-notifier/internal/payload"
	"github.com/dynamic-notifier/dynamic-notifier/internal/resolve"
	"github.com/dynamic-notifier/dynamic-notifier/internal/subscription"
	"github.com/dynamic-notifier/dynamic-notifier/internal/template"
	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

// testOptions are the flags of `test`.
type testOptions struct {
	files                                []string
	object, eventType, oldObject, output string
	limit                                int
}

func newTestCommand(o *options) *cobra.Command {
	to := &testOptions{}
	cmd := &cobra.Command{
		Use:   "test -f FILE... [--object [NAMESPACE/]NAME]",
		Short: "Show what a subscription would send for the objects that exist now; nothing is sent",
		Long: `Show what a WatchSubscription would send, without applying it and without sending anything.

For each WatchSubscription in the files, it finds the sink (a sinkRef names a WatchSink or
ClusterWatchSink of the files, as if they were applied, or else of the cluster), resolves
the resource as the operator does, asks the API server (SubjectAccessReviews) whether the
subscription's ServiceAccount may list and watch it and get the Secrets its sink reads,
compiles the filter and the payload template, and lists the objects that exist now. For
each it says whether it matches and prints the exact CloudEvent the operator would send:
the request's headers and body (binary, structured or batched mode) or the log sink's line.

Objects that exist are shown as Added events: that is how the operator sends them with
spec.sendInitialEvents, or when they are created. --event-type Updated with --old-object
shows the update from an older version of the object (a file) to the live one.

The Secrets a sink reads are not read: headers from a headersFrom Secret, a URL from a
Secret and the signature are named, not shown. Exits 1 when the subscription would not
become Ready (a spec, sink or resource error, a denied ServiceAccount).`,
		Example: `  kubectl notifier test -f config/samples/configmaps-to-webhook.yaml
  kubectl notifier test -f config/samples/slack-sink.yaml -f config/samples/slack-deployment-rollouts.yaml
  kubectl notifier test -n shop -f rollouts.yaml --object shop/web --event-type Updated --old-object web-before.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runTest(cmd.Context(), o, to) },
	}
	cmd.Flags().StringArrayVarP(&to.files, "filename", "f", nil, "a file with WatchSubscriptions and the sink objects "+
		"they name (- for stdin); repeat for more files")
	cmd.Flags().StringVar(&to.object, "object", "", "test one object, [NAMESPACE/]NAME, instead of listing them")
	cmd.Flags().StringVar(&to.eventType, "event-type", string(event.Added), "Added, or Updated with --old-object")
	cmd.Flags().StringVar(&to.oldObject, "old-object", "",
		"with --event-type Updated: a file with the object before the update")
	cmd.Flags().IntVar(&to.limit, "limit", 50, "show at most this many objects per subscription (0: all)")
	cmd.Flags().StringVarP(&to.output, "output", "o", "", "output format: text, json or yaml")
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}

// testReport is what `test` found for one subscription.
type testReport struct {
	Subscription string `json:"subscription"`
	From         string `json:"from,omitempty"`
	Resource     string `json:"resource"`
	Kind         string `json:"kind,omitempty"`
	// Streams are the watches the subscription opens: a namespace each, or cluster-wide.
	Streams  []string   `json:"streams,omitempty"`
	Sink     sinkReport `json:"sink"`
	Payload  string     `json:"payload,omitempty"`
	Selects  string     `json:"selects,omitempty"`
	Checks   []check    `json:"checks,omitempty"`
	Problems []string   `json:"problems,omitempty"`
	// EventType is the type of the events shown.
	EventType string         `json:"eventType,omitempty"`
	Objects   []objectReport `json:"objects,omitempty"`
	// Listed counts the objects listed; Matched those that match.
	Listed  int `json:"listed"`
	Matched int `json:"matched"`
}

// check is one question asked about the ServiceAccount's rights.
type check struct {
	What string `json:"what"`
	// Result is allowed, denied or unknown (the API server gave no answer, or the user may
	// not ask).
	Result string `json:"result"`
	Detail string `json:"detail,omitempty"`
}

const (
	checkAllowed = "allowed"
	checkDenied  = "denied"
	checkUnknown = "unknown"
)

// objectReport is one object: whether it matches, and what would be sent.
type objectReport struct {
	Object    string `json:"object"`
	EventType string `json:"eventType"`
	// Existing: an object that exists, shown as the Added event it would make.
	Existing   bool        `json:"existing,omitempty"`
	Matched    bool        `json:"matched"`
	Reason     string      `json:"reason,omitempty"`
	CloudEvent *cloudEvent `json:"cloudEvent,omitempty"`
	// Error says why a matching change could not be shaped or encoded.
	Error string `json:"error,omitempty"`
}

func runTest(ctx context.Context, o *options, to *testOptions) error {
	if err := outputFormat(to.output); err != nil {
		return err
	}
	switch event.Type(to.eventType) {
	case event.Added:
		if to.oldObject != "" {
			return errors.New("--old-object goes with --event-type Updated")
		}
	case event.Updated:
		if to.oldObject == "" || to.object == "" {
			return errors.New("--event-type Updated needs --object (the object after the update) and --old-object (a file " +
				"with the object before it)")
		}
	default:
		return fmt.Errorf("--event-type %q: want Added, or Updated with --old-object", to.eventType)
	}
	in, err := o.load(to.files)
	if err != nil {
		return err
	}
	out := o.streams.Out
	if len(in.subs) == 0 {
		if len(in.sinks) > 0 {
			printSinkObjects(out, in, o.operatorNamespace)
			return nil
		}
		return fmt.Errorf("%s holds no WatchSubscription (it holds %s)", strings.Join(to.files, ", "),
			cmp.Or(strings.Join(in.skipped, ", "), "nothing"))
	}
	cl, err := o.clients()
	if err != nil {
		return err
	}
	var reports []*testReport
	problems := 0
	for _, l := range in.subs {
		r, err := testSubscription(ctx, o, cl, in.reader(cl.client), to, l)
		if err != nil {
			return err
		}
		reports = append(reports, r)
		problems += len(r.Problems)
	}
	if structured(to.output) {
		var v any = reports
		if len(reports) == 1 {
			v = reports[0]
		}
		if err := printStructured(out, to.output, v); err != nil {
			return err
		}
	} else {
		for _, s := range in.skipped {
			_, _ = fmt.Fprintf(out, "skipped %s: test applies to WatchSubscriptions\n", s)
		}
		for _, r := range reports {
			printTestReport(out, r)
		}
	}
	if problems > 0 {
		return fmt.Errorf("%d problem(s) found: the subscription would not become Ready", problems)
	}
	return nil
}

// testSubscription tests one subscription. Its error is a failure of the plugin itself (the
// API server unreachable); what is wrong with the subscription goes in the report.
func testSubscription(ctx context.Context, o *options, cl *clients, sinks client.Reader, to *testOptions,
	l loaded) (*testReport, error) {
	ws := l.sub
	r := &testReport{Subscription: ws.Namespace + "/" + ws.Name, From: l.from,
		Resource: resolve.Describe(subscription.GVR(ws)), EventType: to.eventType}

	// The sink, as the operator finds it.
	target, err := subscription.ResolveSink(ctx, sinks, ws, o.operatorNamespace)
	if err != nil {
		var refErr *subscription.SinkRefError
		if !errors.As(err, &refErr) {
			return nil, fmt.Errorf("WatchSubscription %s: finding its sink: %w", r.Subscription, err)
		}
		problem := refErr.Reason + ": " + refErr.Msg
		if refErr.Reason == notifyv1.ReasonSinkNotFound {
			problem += " (nor in the files: pass the sink object's file with another -f)"
		}
		r.Problems = append(r.Problems, problem)
		return r, nil
	}
	r.Sink = describeSink(target)
	effective, deadLetterSource := subscription.WithSinkDefaults(ws, target)
	r.Payload = describePayload(ws, effective, target)

	// The spec, compiled as the operator compiles it; filter errors are caught per object.
	var evalErr error
	p, err := subscription.Compile(effective, subscription.Options{OnFilterError: func(err error) { evalErr = err }})
	if err != nil {
		r.Problems = append(r.Problems, specReason(err)+": "+err.Error())
		return r, nil
	}
	r.Selects = describeSelection(effective)

	res, err := cl.resolver.Resolve(p.GVR)
	switch {
	case meta.IsNoMatchError(err):
		r.Problems = append(r.Problems, fmt.Sprintf("%s: resource %s is not served by the API server (a CRD not "+
			"installed yet?); the operator would wait for it", notifyv1.ReasonResourceNotFound, r.Resource))
		return r, nil
	case resolve.IsNotWatchable(err):
		r.Problems = append(r.Problems, notifyv1.ReasonNotWatchable+": "+err.Error())
		return r, nil
	case err != nil:
		return nil, fmt.Errorf("resolving %s: %w", r.Resource, err)
	}
	r.Kind = res.Kind
	keys := p.Streams(res.Namespaced)
	for _, k := range keys {
		r.Streams = append(r.Streams, scopeText(k.Namespace))
	}

	checkRights(ctx, cl, r, p, keys, target, effective, deadLetterSource)

	objects, err := objectsToTest(ctx, cl, to, p, res, keys)
	if err != nil {
		if apierrors.IsForbidden(err) {
			return nil, fmt.Errorf("listing %s as you (test lists the objects with your own credentials): %w",
				r.Resource, err)
		}
		return nil, err
	}
	var old *unstructured.Unstructured
	if to.oldObject != "" {
		if old, err = readObject(to.oldObject); err != nil {
			return nil, err
		}
	}
	for _, u := range objects {
		r.Listed++
		or := testObject(ctx, p, target, res.GVR, u, old, &evalErr)
		if or.Matched {
			r.Matched++
		}
		if to.limit <= 0 || len(r.Objects) < to.limit {
			r.Objects = append(r.Objects, or)
		}
	}
	return r, nil
}

// specReason is the Ready reason a compile error gives.
func specReason(err error) string {
	switch {
	case errors.Is(err, filter.ErrInvalidFilter):
		return notifyv1.ReasonInvalidFilter
	case errors.Is(err, template.ErrInvalidTemplate):
		return notifyv1.ReasonInvalidTemplate
	}
	return notifyv1.ReasonInvalidSpec
}

// checkRights asks, as the operator does (authz), whether the subscription's ServiceAccount
// may list and watch each stream and get what its sinks read. The questions are
// SubjectAccessReviews the user creates: a user who may not gets "unknown".
func checkRights(ctx context.Context, cl *clients, r *testReport, p subscription.Plan, keys []watch.Key,
	target subscription.Target, effective *notifyv1.WatchSubscription, deadLetterSource subscription.SecretSource) {
	checker := &authz.Checker{Client: cl.client}
	record := func(what string, err error) {
		c := check{What: what, Result: checkAllowed}
		var denied *authz.DeniedError
		var sinkErr *subscription.SinkError
		switch {
		case err == nil:
		case errors.As(err, &denied), errors.As(err, &sinkErr) && sinkErr.Denied:
			c.Result, c.Detail = checkDenied, err.Error()
			r.Problems = append(r.Problems, notifyv1.ReasonForbidden+": "+err.Error())
		case apierrors.IsForbidden(err):
			c.Result, c.Detail = checkUnknown, "you may not create SubjectAccessReviews to ask: "+err.Error()
		default:
			c.Result, c.Detail = checkUnknown, err.Error()
		}
		r.Checks = append(r.Checks, c)
	}
	for _, k := range keys {
		what := fmt.Sprintf("ServiceAccount %s may list and watch %s %s", p.ServiceAccount, k.GVR.Resource,
			scopeText(k.Namespace))
		record(what, p.Authorize(ctx, checker, []watch.Key{k}))
	}
	sinks := &subscription.Sinks{Authorizer: checker}
	refs := func(s notifyv1.Sink, src subscription.SecretSource, field string) {
		for _, ref := range subscription.References(s, src, field) {
			if src.Account == nil {
				r.Checks = append(r.Checks, check{What: fmt.Sprintf("%s: %s %s/%s", ref.Field, ref.GVR.Resource,
					ref.Namespace, ref.Name), Result: checkAllowed,
					Detail: "a ClusterWatchSink's Secrets are read with the operator's own rights"})
				continue
			}
			what := fmt.Sprintf("ServiceAccount %s may get %s %s in namespace %s (%s)", src.Account, ref.GVR.Resource,
				ref.Name, ref.Namespace, ref.Field)
			record(what, sinks.MayGet(ctx, src, ref))
		}
	}
	refs(target.Sink, target.Source, target.Field)
	if d := effective.Spec.Delivery; d != nil && d.DeadLetterSink != nil {
		refs(*d.DeadLetterSink, deadLetterSource, "spec.delivery.deadLetterSink")
	}
}

// objectsToTest lists the objects in the subscription's streams as its initial events are
// listed (its label selector sent to the server), or gets the one --object names.
func objectsToTest(ctx context.Context, cl *clients, to *testOptions, p subscription.Plan, res resolve.Resource,
	keys []watch.Key) ([]*unstructured.Unstructured, error) {
	if to.object != "" {
		ns := ""
		if len(keys) > 0 {
			ns = keys[0].Namespace // the first namespace watched
		}
		u, err := liveObject(ctx, cl, res, to.object, ns)
		if err != nil {
			return nil, err
		}
		return []*unstructured.Unstructured{u}, nil
	}
	var out []*unstructured.Unstructured
	for _, k := range keys {
		opts := metav1.ListOptions{Limit: 500}
		if sel := p.Filter.LabelSelector(); sel != nil {
			opts.LabelSelector = sel.String()
		}
		for {
			list, err := cl.dynamic.Resource(k.GVR).Namespace(k.Namespace).List(ctx, opts)
			if err != nil {
				return nil, err
			}
			for i := range list.Items {
				u := &list.Items[i]
				u.SetManagedFields(nil) // as the operator strips them before anything sees the object
				out = append(out, u)
			}
			if opts.Continue = list.GetContinue(); opts.Continue == "" {
				break
			}
		}
	}
	slices.SortStableFunc(out, func(a, b *unstructured.Unstructured) int {
		return strings.Compare(event.KeyOf(a), event.KeyOf(b))
	})
	return out, nil
}

// testObject matches one object as the operator would and, when it matches, renders what
// would be sent. old, when set, makes the event an update from it.
func testObject(ctx context.Context, p subscription.Plan, target subscription.Target, gvr schema.GroupVersionResource,
	u, old *unstructured.Unstructured, evalErr *error) objectReport {
	ev := event.New(event.Added, gvr, u)
	or := objectReport{Object: event.KeyOf(u), EventType: string(event.Added), Existing: true}
	if old != nil {
		old = old.DeepCopy()
		old.SetManagedFields(nil)
		ev.Type, ev.OldObject, or.EventType, or.Existing = event.Updated, old, string(event.Updated), false
		changed := payload.ChangedPaths(old.Object, u.Object)
		if len(changed) == 0 {
			or.Reason = "nothing but resourceVersion or managedFields changed: the operator sends no update"
			return or
		}
		ev.MetadataUnchanged = !slices.ContainsFunc(changed, func(path string) bool {
			return strings.HasPrefix(path, "metadata.")
		})
	}
	*evalErr = nil
	if or.Matched, or.Reason = explainMatch(p.Filter, ev, evalErr); !or.Matched {
		return or
	}
	msg, err := p.Message(ev)
	if err != nil {
		or.Error = "the payload could not be shaped: " + err.Error() + " (the operator sends such a change to the " +
			"dead-letter sink with a reference to the object, or drops it)"
		return or
	}
	ce, err := renderCloudEvent(ctx, target, msg)
	if err != nil {
		or.Error = err.Error()
		return or
	}
	or.CloudEvent = ce
	return or
}

// explainMatch runs the subscription's filter on ev, part by part in the order the
// operator runs them (the fan-out's prefilter, then the CEL expression in delivery), to say
// which part refuses it.
func explainMatch(f *filter.Filter, ev *event.Event, evalErr *error) (bool, string) {
	labels := filter.Labels(ev.Object)
	switch {
	case !f.WantsType(ev.Type):
		return false, fmt.Sprintf("spec.eventTypes does not include %s", ev.Type)
	case f.LabelSelector() != nil && !f.LabelSelector().Matches(labels):
		return false, fmt.Sprintf("its labels do not match spec.selector (%s)", f.LabelSelector())
	case !f.Prefilter(ev, labels) && ev.Type == event.Added:
		return false, "spec.fieldSelector does not match it"
	case !f.Prefilter(ev, labels):
		return false, "spec.fieldSelector, spec.ignore or payload mode Metadata (an update that left metadata alone) " +
			"drops it"
	case !f.MatchCEL(ev):
		if *evalErr != nil {
			return false, "spec.filter failed on it (the operator counts that as not matched): " + (*evalErr).Error()
		}
		return false, "spec.filter is false for it"
	}
	return true, ""
}

// scopeText is how a stream is named: a namespace, or cluster-wide.
func scopeText(namespace string) string {
	if namespace == "" {
		return "cluster-wide"
	}
	return "in namespace " + namespace
}

// describeSelection sums up what a subscription selects.
func describeSelection(ws *notifyv1.WatchSubscription) string {
	var parts []string
	if len(ws.Spec.EventTypes) == 0 {
		parts = append(parts, "every event type")
	} else {
		types := make([]string, len(ws.Spec.EventTypes))
		for i, t := range ws.Spec.EventTypes {
			types[i] = string(t)
		}
		parts = append(parts, "event types "+strings.Join(types, ", "))
	}
	if ws.Spec.Selector != nil {
		if sel, err := metav1.LabelSelectorAsSelector(ws.Spec.Selector); err == nil && !sel.Empty() {
			parts = append(parts, "labels "+sel.String())
		}
	}
	if ws.Spec.FieldSelector != "" {
		parts = append(parts, "fields "+ws.Spec.FieldSelector)
	}
	if ig := ws.Spec.Ignore; ig != nil {
		if ig.StatusOnly {
			parts = append(parts, "ignoring status-only updates")
		}
		if ig.MetadataOnly {
			parts = append(parts, "ignoring metadata-only updates")
		}
	}
	if f := strings.TrimSpace(ws.Spec.Filter); f != "" {
		parts = append(parts, "filter "+f)
	}
	return strings.Join(parts, "; ")
}

// describePayload says what the data is and where its settings come from.
func describePayload(own, effective *notifyv1.WatchSubscription, target subscription.Target) string {
	from := "the subscription's spec.payload"
	switch {
	case own.Spec.Payload == nil && target.Payload != nil:
		from = "spec.payload of " + target.Described + " (the subscription sets none)"
	case own.Spec.Payload != nil && target.Payload != nil:
		from = "the subscription's spec.payload (" + target.Described + "'s is not used)"
	case effective.Spec.Payload == nil:
		return "Full: the object (the default)"
	}
	pl := effective.Spec.Payload
	what := string(cmp.Or(pl.Mode, notifyv1.PayloadFull))
	if pl.Template != "" {
		what = "template"
		if pl.ContentType != "" {
			what += " (" + pl.ContentType + ")"
		}
	}
	var extras []string
	if pl.IncludeOldObject {
		extras = append(extras, "old object")
	}
	if pl.IncludeChangedPaths {
		extras = append(extras, "changed paths")
	}
	if pl.IncludeSecretData {
		extras = append(extras, "Secret values")
	}
	if len(extras) > 0 && pl.Template == "" {
		what += " with " + strings.Join(extras, ", ")
	}
	return what + ", from " + from
}
