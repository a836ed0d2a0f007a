// Package filter decides, per subscription, which changes it wants: event types, labels and
// fields. Filters run in the informer's fan-out, so they are compiled once per spec and
// never allocate for a non-matching object.
package filter

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// Filter is a compiled subscription filter. The zero value matches everything.
type Filter struct {
	types  map[event.Type]bool // nil: all types
	labels labels.Selector     // nil: all labels
	fields fields.Selector     // nil: all fields
}

// Compile builds a filter. Errors name the offending field of the spec.
func Compile(types []event.Type, selector *metav1.LabelSelector, fieldSelector string) (*Filter, error) {
	f := &Filter{}
	if len(types) > 0 {
		f.types = make(map[event.Type]bool, len(types))
		for _, t := range types {
			f.types[t] = true
		}
	}
	if selector != nil {
		sel, err := metav1.LabelSelectorAsSelector(selector)
		if err != nil {
			return nil, fmt.Errorf("spec.selector: %w", err)
		}
		if !sel.Empty() {
			f.labels = sel
		}
	}
	if s := strings.TrimSpace(fieldSelector); s != "" {
		sel, err := fields.ParseSelector(s)
		if err != nil {
			return nil, fmt.Errorf("spec.fieldSelector: %w", err)
		}
		f.fields = sel
	}
	return f, nil
}

// WantsType tells whether the subscription wants changes of this type at all.
func (f *Filter) WantsType(t event.Type) bool { return f.types == nil || f.types[t] }

// LabelSelector is the label part, for narrowing server-side LISTs; nil when absent.
func (f *Filter) LabelSelector() labels.Selector { return f.labels }

// Matches tells whether a change of type t to obj is wanted.
func (f *Filter) Matches(t event.Type, obj *unstructured.Unstructured) bool {
	return f.MatchesLabels(t, obj, Labels(obj))
}

// Labels reads an object's labels once, so a fan-out to many filters does not copy them
// per subscriber.
func Labels(obj *unstructured.Unstructured) labels.Set { return obj.GetLabels() }

// MatchesLabels is Matches with the object's labels already read by Labels.
func (f *Filter) MatchesLabels(t event.Type, obj *unstructured.Unstructured, objLabels labels.Set) bool {
	if !f.WantsType(t) {
		return false
	}
	if f.labels != nil && !f.labels.Matches(objLabels) {
		return false
	}
	if f.fields != nil && !f.fields.Matches(objectFields{obj.Object}) {
		return false
	}
	return true
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
