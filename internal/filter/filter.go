// Package filter decides, per subscription, which changes it wants: event types, labels and
// fields. Filters run in the informer's fan-out, so they are compiled once per spec and
// never allocate for a non-matching object.
package filter

import (
	"fmt"
	"reflect"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/payload"
)

// Filter is a compiled subscription filter. The zero value matches everything.
type Filter struct {
	types  map[event.Type]bool // nil: all types
	labels labels.Selector     // nil: all labels
	fields fields.Selector     // nil: all fields
	cel    *Expression         // nil: no CEL filter

	ignoreStatusOnly, ignoreMetadataOnly bool
	// metadataPayload: the subscriber sees only metadata, so updates that left it
	// unchanged are invisible to it.
	metadataPayload bool
	// redact: fields and CEL see Secret values redacted (Options.RedactSecrets).
	redact      bool
	onEvalError func(error)
	signature   string
	// celKey names the expression's outcome on an event (see MatchCEL).
	celKey string
}

// Options are the parts of a spec a filter is compiled from.
type Options struct {
	Types              []event.Type
	Selector           *metav1.LabelSelector
	FieldSelector      string
	CEL                string
	IgnoreStatusOnly   bool
	IgnoreMetadataOnly bool
	// MetadataPayload drops updates that left metadata unchanged.
	MetadataPayload bool
	// OnEvalError hears about CEL evaluation errors (the change then does not match).
	OnEvalError func(error)
	// RedactSecrets makes the field selector and CEL see objects as a redacting payload
	// shape sends them (payload.Redact): Secret values replaced, keys kept. Set it when
	// the subscription's payload redacts: its filter then cannot learn a value from which
	// changes match, and no CEL error (which the operator logs) can quote one.
	RedactSecrets bool
}

// Compile builds a filter from event types and selectors only.
func Compile(types []event.Type, selector *metav1.LabelSelector, fieldSelector string) (*Filter, error) {
	return New(Options{Types: types, Selector: selector, FieldSelector: fieldSelector})
}

// New builds a filter. Errors name the offending field of the spec; a CEL error wraps
// ErrInvalidFilter.
func New(o Options) (*Filter, error) {
	f := &Filter{ignoreStatusOnly: o.IgnoreStatusOnly, ignoreMetadataOnly: o.IgnoreMetadataOnly,
		metadataPayload: o.MetadataPayload, onEvalError: o.OnEvalError, redact: o.RedactSecrets}
	if len(o.Types) > 0 {
		f.types = make(map[event.Type]bool, len(o.Types))
		for _, t := range o.Types {
			f.types[t] = true
		}
	}
	if o.Selector != nil {
		sel, err := metav1.LabelSelectorAsSelector(o.Selector)
		if err != nil {
			return nil, fmt.Errorf("spec.selector: %w", err)
		}
		if !sel.Empty() {
			f.labels = sel
		}
	}
	if s := strings.TrimSpace(o.FieldSelector); s != "" {
		sel, err := fields.ParseSelector(s)
		if err != nil {
			return nil, fmt.Errorf("spec.fieldSelector: %w", err)
		}
		f.fields = sel
	}
	if strings.TrimSpace(o.CEL) != "" {
		expr, err := CompileCEL(o.CEL)
		if err != nil {
			return nil, err
		}
		f.cel = expr
		f.celKey = "cel:" + strings.TrimSpace(o.CEL)
		if f.redact {
			f.celKey = "cel-redacted:" + strings.TrimSpace(o.CEL) // another view, another outcome
		}
	}
	f.signature = f.describe()
	return f, nil
}

// Signature is equal for filters whose Prefilter matches exactly the same changes, so a
// fan-out can prefilter once for all of them.
func (f *Filter) Signature() string {
	if f == nil {
		return "*"
	}
	return f.signature
}

func (f *Filter) describe() string {
	var b strings.Builder
	for _, t := range []event.Type{event.Added, event.Updated, event.Deleted} {
		if f.WantsType(t) {
			b.WriteString(string(t))
			b.WriteByte(',')
		}
	}
	b.WriteByte('|')
	if f.labels != nil {
		b.WriteString(f.labels.String())
	}
	b.WriteByte('|')
	if f.fields != nil {
		b.WriteString(f.fields.String())
	}
	fmt.Fprintf(&b, "|%t|%t|%t", f.ignoreStatusOnly, f.ignoreMetadataOnly, f.metadataPayload)
	if f.redact {
		b.WriteString("|redact")
	}
	return b.String()
}

// WantsType tells whether the subscription wants changes of this type at all.
func (f *Filter) WantsType(t event.Type) bool { return f.types == nil || f.types[t] }

// NeedsOldObject tells whether matching needs the object before an update, which the
// informer then keeps.
func (f *Filter) NeedsOldObject() bool {
	return f.ignoreStatusOnly || f.ignoreMetadataOnly || f.cel != nil && f.cel.usesOld
}

// LabelSelector is the label part, for narrowing server-side LISTs; nil when absent.
func (f *Filter) LabelSelector() labels.Selector { return f.labels }

// Labels reads an object's labels once, so a fan-out to many filters does not copy them
// per subscriber.
func Labels(obj *unstructured.Unstructured) labels.Set { return obj.GetLabels() }

// Matches tells whether a change of type t to obj (with no old object) is wanted.
func (f *Filter) Matches(t event.Type, obj *unstructured.Unstructured) bool {
	return f.Match(&event.Event{Type: t, Object: obj}, Labels(obj))
}

// Match tells whether a change is wanted; objLabels come from Labels(ev.Object). Cheap
// checks run first; CEL last.
func (f *Filter) Match(ev *event.Event, objLabels labels.Set) bool {
	return f.Prefilter(ev, objLabels) && f.MatchCEL(ev)
}

// HasCEL tells whether the filter has a CEL expression, which MatchCEL evaluates.
func (f *Filter) HasCEL() bool { return f != nil && f.cel != nil }

// MatchCEL evaluates the CEL expression (true when there is none). It may cost up to
// EvalCostBudget, so it runs off the fan-out, in the subscription's own delivery workers:
// one costly filter delays only its own subscription. The outcome is kept on the event, so
// subscriptions with the same expression evaluate it once; each hears about errors.
func (f *Filter) MatchCEL(ev *event.Event) bool {
	if f == nil || f.cel == nil {
		return true
	}
	ok, err := ev.Decide(f.celKey, func() (bool, error) {
		// A redacting subscriber's expression sees the redacted view: it cannot learn a
		// value it may not receive.
		obj, old := ev.Object, ev.OldObject
		if f.redact {
			obj = payload.Redact(obj)
			if old != nil {
				old = payload.Redact(old)
			}
		}
		// Changed paths name keys, never values: they come from the objects as they are.
		return f.cel.Eval(ev.Type, obj, old, ev.ChangedPaths())
	})
	if err != nil {
		if f.onEvalError != nil {
			f.onEvalError(err)
		}
		return false
	}
	return ok
}

// Prefilter is every part of the filter but the CEL expression: event types, selectors,
// ignore rules. It is cheap and runs in the informer's fan-out.
func (f *Filter) Prefilter(ev *event.Event, objLabels labels.Set) bool {
	if !f.WantsType(ev.Type) {
		return false
	}
	if f.labels != nil && !f.labels.Matches(objLabels) {
		return false
	}
	// What fields see: for a redacting subscriber, the redacted view. Labels hold no
	// Secret values, and the checks of what changed below use the objects as they are:
	// they tell only that something changed, as changedPaths does.
	if f.fields != nil {
		obj := ev.Object
		if f.redact {
			obj = payload.Redact(obj)
		}
		if !f.fields.Matches(objectFields{obj.Object}) {
			return false
		}
	}
	if ev.Type == event.Updated {
		if f.metadataPayload && ev.MetadataUnchanged {
			return false
		}
		if old := ev.OldObject; old != nil {
			if f.ignoreStatusOnly && equalExcept(old.Object, ev.Object.Object, "status") ||
				f.ignoreMetadataOnly && equalExcept(old.Object, ev.Object.Object, "metadata") {
				return false
			}
		}
	}
	return true
}

// equalExcept compares two objects leaving out one top-level field, and the metadata
// every write changes (resourceVersion, managedFields).
func equalExcept(a, b map[string]any, skip string) bool {
	for k, av := range a {
		if k == skip {
			continue
		}
		bv, ok := b[k]
		if !ok {
			return false
		}
		if k == "metadata" && !metadataEqual(av, bv) || k != "metadata" && !reflect.DeepEqual(av, bv) {
			return false
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok && k != skip {
			return false
		}
	}
	return true
}

func metadataEqual(a, b any) bool {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if !aok || !bok {
		return reflect.DeepEqual(a, b)
	}
	return equalExcept(withoutNoise(am), withoutNoise(bm), "")
}

// withoutNoise is metadata without the fields every write changes.
func withoutNoise(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if !event.IsWriteNoise(k) {
			out[k] = v
		}
	}
	return out
}

// objectFields exposes any dotted path of an object to a field selector, so selectors work
// on every field of every resource, not only the few an API server indexes.
type objectFields struct{ obj map[string]any }

func (o objectFields) Has(path string) bool {
	_, ok := o.lookup(path)
	return ok
}

func (o objectFields) Get(path string) string {
	v, _ := o.lookup(path)
	return v
}

func (o objectFields) lookup(path string) (string, bool) {
	var cur any = o.obj
	for part := range strings.SplitSeq(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false
		}
		if cur, ok = m[part]; !ok {
			return "", false
		}
	}
	switch v := cur.(type) {
	case string:
		return v, true
	case nil:
		return "", true
	case map[string]any, []any:
		return "", false
	default:
		return fmt.Sprint(v), true
	}
}
