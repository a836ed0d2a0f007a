// Package subscription compiles a WatchSubscription into what the operator runs for it, so
// that the operator and kubectl-notifier share one reading of a spec: the filter, payload
// shape and delivery settings (Compile, in plan.go); the sink it names, found with the
// defaults a sink object brings (ResolveSink, sinkref.go) and built from its Secrets
// (Sinks.Build, sink.go); and the message a change becomes (Plan.Message). The controller
// runs what this package compiles; `kubectl notifier test` prints it and `kubectl notifier
// send` sends through it.
package subscription

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/authz"
	"github.com/dynamic-notifier/dynamic-notifier/internal/delivery"
	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/filter"
	"github.com/dynamic-notifier/dynamic-notifier/internal/payload"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
	"github.com/dynamic-notifier/dynamic-notifier/internal/template"
	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

// Plan is what a subscription's spec asks the operator to run, with every default applied.
// It is compiled once per reconcile from the spec alone, without the API server, so a spec
// error is found before anything is read or started.
type Plan struct {
	GVR schema.GroupVersionResource
	// Namespaces are the scopes asked for, sorted: "" is all namespaces; see Streams.
	Namespaces []string
	Filter     *filter.Filter
	Shape      payload.Shape
	Delivery   DeliverySettings
	// ServiceAccount is the namespace/name the subscription acts as.
	ServiceAccount    string
	SendInitialEvents bool
	// Checkpoint names the subscription's checkpoints across restarts and spec changes.
	Checkpoint string
}

// DeliverySettings are a pipeline's options that come from the spec.
type DeliverySettings struct {
	QueueSize, Parallelism int
	Timeout                time.Duration
	Retry                  delivery.Retry
	// CoalesceWindow is 0 and RateLimit zero when off.
	CoalesceWindow time.Duration
	RateLimit      delivery.RateLimit
}

// RateLimiter is the pipeline's rate limit (delivery.Options.RateLimit), nil when off.
func (d DeliverySettings) RateLimiter() *delivery.RateLimit {
	if d.RateLimit.PerSecond <= 0 {
		return nil
	}
	return &d.RateLimit
}

// Options are what the operator adds to a spec: its own defaults and hooks.
type Options struct {
	// DeliveryTimeout is the timeout when the spec sets none.
	DeliveryTimeout time.Duration
	// OnFilterError hears about CEL evaluation errors.
	OnFilterError func(error)
}

// Compile compiles ws. Its errors name the field at fault; filter errors wrap
// filter.ErrInvalidFilter, template errors template.ErrInvalidTemplate. A subscription that
// names a sink object is compiled as WithSinkDefaults completes it.
func Compile(ws *notifyv1.WatchSubscription, opts Options) (Plan, error) {
	shape, err := shapeFor(ws)
	if err != nil {
		return Plan{}, err
	}
	p := Plan{
		GVR:               GVR(ws),
		Namespaces:        requestedNamespaces(ws),
		Shape:             shape,
		ServiceAccount:    ws.Namespace + "/" + cmp.Or(ws.Spec.ServiceAccountName, notifyv1.DefaultServiceAccountName),
		SendInitialEvents: ws.Spec.SendInitialEvents,
		Checkpoint:        CheckpointName(types.NamespacedName{Namespace: ws.Namespace, Name: ws.Name}, ws.UID),
	}
	if p.Delivery, err = deliveryFor(ws.Spec.Delivery, cmp.Or(opts.DeliveryTimeout, notifyv1.DefaultTimeout)); err != nil {
		return Plan{}, err
	}
	fo := filter.Options{
		Types:           eventTypes(ws.Spec.EventTypes),
		Selector:        ws.Spec.Selector,
		FieldSelector:   ws.Spec.FieldSelector,
		CEL:             ws.Spec.Filter,
		MetadataPayload: p.Shape.Mode == payload.Metadata,
		OnEvalError:     opts.OnFilterError,
		RedactSecrets:   p.Shape.RedactSecrets,
	}
	if ig := ws.Spec.Ignore; ig != nil {
		fo.IgnoreStatusOnly, fo.IgnoreMetadataOnly = ig.StatusOnly, ig.MetadataOnly
	}
	if p.Filter, err = filter.New(fo); err != nil {
		return Plan{}, err
	}
	return p, nil
}

// Streams are the watch keys of the plan: one per namespace scope, or one for the whole
// cluster when the resource is cluster-scoped. Subscriptions with equal keys share one
// watch.
func (p Plan) Streams(namespaced bool) []watch.Key {
	namespaces := p.Namespaces
	if !namespaced {
		namespaces = []string{""}
	}
	keys := make([]watch.Key, len(namespaces))
	for i, ns := range namespaces {
		keys[i] = watch.Key{GVR: p.GVR, Namespace: ns}
	}
	return keys
}

// Streams are the watch keys of ws (see Plan.Streams), without compiling the rest of it.
func Streams(ws *notifyv1.WatchSubscription, namespaced bool) []watch.Key {
	return Plan{GVR: GVR(ws), Namespaces: requestedNamespaces(ws)}.Streams(namespaced)
}

// requestedNamespaces is the namespaces a subscription watches when its resource is
// namespaced, sorted: "" means all namespaces.
func requestedNamespaces(ws *notifyv1.WatchSubscription) []string {
	switch {
	case len(ws.Spec.Namespaces) == 0:
		return []string{ws.Namespace}
	case slices.Contains(ws.Spec.Namespaces, notifyv1.AllNamespaces):
		return []string{""}
	}
	out := make([]string, 0, len(ws.Spec.Namespaces))
	for _, ns := range ws.Spec.Namespaces {
		out = append(out, string(ns))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// deliveryFor applies the defaults to spec.delivery. A duration that does not parse (an
// object stored under an older, looser schema) is a spec error.
func deliveryFor(d *notifyv1.DeliverySpec, timeout time.Duration) (DeliverySettings, error) {
	out := DeliverySettings{QueueSize: notifyv1.DefaultMaxQueueSize, Parallelism: notifyv1.DefaultParallelism,
		Timeout: timeout, Retry: delivery.Retry{MaxAttempts: notifyv1.DefaultMaxAttempts,
			Backoff: notifyv1.DefaultBackoff, MaxBackoff: notifyv1.DefaultMaxBackoff}}
	if d == nil {
		return out, nil
	}
	if d.MaxQueueSize != nil {
		out.QueueSize = int(*d.MaxQueueSize)
	}
	if d.Parallelism != nil {
		out.Parallelism = int(*d.Parallelism)
	}
	var err error
	if out.Timeout, err = parseDuration(d.Timeout, "spec.delivery.timeout", out.Timeout); err != nil {
		return DeliverySettings{}, err
	}
	if w := d.Coalesce.Window; w != "" {
		if out.CoalesceWindow, err = parseDuration(&w, "spec.delivery.coalesce.window", 0); err != nil {
			return DeliverySettings{}, err
		}
	}
	if r := d.RateLimit; r.EventsPerSecond > 0 {
		out.RateLimit = delivery.RateLimit{PerSecond: float64(r.EventsPerSecond), Burst: int(r.EventsPerSecond)}
		if r.Burst > 0 {
			out.RateLimit.Burst = int(r.Burst)
		}
	}
	rp := d.Retry
	if rp == nil {
		return out, nil
	}
	if rp.MaxAttempts != nil {
		out.Retry.MaxAttempts = int(*rp.MaxAttempts)
	}
	if out.Retry.MaxBackoff, err = parseDuration(rp.MaxBackoff, "spec.delivery.retry.maxBackoff", out.Retry.MaxBackoff); err != nil {
		return DeliverySettings{}, err
	}
	// A cap below the default first wait lowers that wait too, rather than being raised.
	fallback := min(notifyv1.DefaultBackoff, out.Retry.MaxBackoff)
	if out.Retry.Backoff, err = parseDuration(rp.Backoff, "spec.delivery.retry.backoff", fallback); err != nil {
		return DeliverySettings{}, err
	}
	return out, nil
}

func parseDuration(d *notifyv1.Duration, field string, fallback time.Duration) (time.Duration, error) {
	if d == nil {
		return fallback, nil
	}
	v, err := d.Parse()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", field, err)
	}
	if v <= 0 {
		return 0, fmt.Errorf("%s: %q must be positive", field, string(*d))
	}
	return v, nil
}

// shapeFor is the subscription's payload shape, its template compiled. Secret values are
// redacted unless the subscription opted in.
func shapeFor(ws *notifyv1.WatchSubscription) (payload.Shape, error) {
	shape := payload.Shape{Source: event.ResourcePath(notifyv1.GroupVersion.WithResource("watchsubscriptions"),
		ws.Namespace, ws.Name)}
	if p := ws.Spec.Payload; p != nil {
		shape.Mode, shape.IncludeOldObject, shape.IncludeChangedPaths = payload.Mode(p.Mode), p.IncludeOldObject,
			p.IncludeChangedPaths
		if p.Template != "" {
			var err error
			if shape.Template, err = template.Compile(p.Template, p.ContentType); err != nil {
				return payload.Shape{}, err
			}
		}
	}
	isSecrets := ws.Spec.Resource.Group == "" && ws.Spec.Resource.Resource == "secrets"
	shape.RedactSecrets = isSecrets && (ws.Spec.Payload == nil || !ws.Spec.Payload.IncludeSecretData)
	return shape, nil
}

// CheckpointName identifies a subscription's checkpoints across restarts and spec changes;
// the uid keeps a re-created subscription of the same name from inheriting them.
func CheckpointName(nn types.NamespacedName, uid types.UID) string {
	return nn.String() + "/" + string(uid)
}

// GVR is the resource a subscription names.
func GVR(ws *notifyv1.WatchSubscription) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: ws.Spec.Resource.Group, Version: ws.Spec.Resource.Version,
		Resource: ws.Spec.Resource.Resource}
}

func eventTypes(in []notifyv1.EventType) []event.Type {
	out := make([]event.Type, len(in))
	for i, t := range in {
		out[i] = event.Type(t)
	}
	return out
}

// Source is the CloudEvents source of the subscription's events: its API path.
func (p Plan) Source() string { return p.Shape.Source }

// CELFilter is the part of the filter the delivery workers run (delivery.Options.Filter):
// the CEL expression, nil when there is none. The rest runs in the informer's fan-out.
func (p Plan) CELFilter() func(*event.Event) bool {
	if !p.Filter.HasCEL() {
		return nil
	}
	return p.Filter.MatchCEL
}

// DeliveryShape is what delivery shapes each event's data with (delivery.Options.Shape): nil
// for plain payloads, so they keep the encoding shared by all subscribers.
func (p Plan) DeliveryShape() func(*event.Event) ([]byte, string, error) {
	if !p.Shape.Plain() {
		return p.Shape.Body
	}
	return nil
}

// PipelineOptions are the options of a delivery pipeline that come from the plan: source,
// bounds, retries, coalescing, rate limit, shape and the CEL filter. The controller adds the
// sinks, its observer, the budget and the log.
func (p Plan) PipelineOptions() delivery.Options {
	return delivery.Options{
		Source:         p.Source(),
		QueueSize:      p.Delivery.QueueSize,
		Parallelism:    p.Delivery.Parallelism,
		Timeout:        p.Delivery.Timeout,
		Retry:          p.Delivery.Retry,
		CoalesceWindow: p.Delivery.CoalesceWindow,
		RateLimit:      p.Delivery.RateLimiter(),
		Shape:          p.DeliveryShape(),
		Filter:         p.CELFilter(),
	}
}

// Message is the message delivery hands the sink for ev: the subscription's source and its
// shaped data (for a plain payload the event's shared encoding, which Shape.Body returns as
// it is). Sinks encode it (sink.Encode for HTTP).
func (p Plan) Message(ev *event.Event) (sink.Message, error) {
	data, contentType, err := p.Shape.Body(ev)
	if err != nil {
		return sink.Message{}, sink.Unencodable(ev, err)
	}
	return sink.Message{Event: ev, Source: p.Source(), Data: data, ContentType: contentType}, nil
}

// Authorize checks that the subscription's ServiceAccount may list and watch every stream
// it covers: nil, the first *authz.DeniedError, or an error that is no answer.
func (p Plan) Authorize(ctx context.Context, checker *authz.Checker, keys []watch.Key) error {
	saNamespace, saName, _ := strings.Cut(p.ServiceAccount, "/")
	for _, k := range keys {
		if err := checker.Check(ctx, saNamespace, saName, k.GVR, k.Namespace); err != nil {
			return err
		}
	}
	return nil
}
