// Package template renders the body of a request from a change with a CEL expression, so a
// sink gets the shape its service documents (a Slack message, a Teams card) without a
// translating service in between.
package template

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"google.golang.org/protobuf/types/known/structpb"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/dynamic-notifier/dynamic-notifier/internal/celenv"
)

// ErrInvalidTemplate marks a template that does not compile; its message carries CEL's,
// with the position.
var ErrInvalidTemplate = errors.New("invalid template")

// Template is a compiled payload template.
type Template struct {
	program     cel.Program
	contentType string
	usesOld     bool
}

// Attributes are the CloudEvent attributes of the event a template renders, as the
// variable event: {id, type, source, subject, time}.
type Attributes struct {
	ID, Type, Source, Subject string
	Time                      time.Time
}

// Compile compiles expr. The value it yields is the body: a string is sent as it is
// (contentType, by default text/plain), anything else as JSON (contentType, by default
// application/json).
func Compile(expr, contentType string) (*Template, error) {
	env, err := environment()
	if err != nil {
		return nil, fmt.Errorf("CEL environment: %w", err)
	}
	prg, ast, err := celenv.Program(env, expr)
	if err != nil {
		return nil, fmt.Errorf("%w: spec.payload.template: %s", ErrInvalidTemplate, err.Error())
	}
	switch out := ast.OutputType(); {
	case out.IsExactType(cel.BoolType), out.IsExactType(cel.BytesType), out.IsExactType(cel.NullType):
		return nil, fmt.Errorf("%w: spec.payload.template must yield a string, a map or a list, it yields %s",
			ErrInvalidTemplate, out)
	}
	return &Template{program: prg, contentType: contentType, usesOld: celenv.UsesOld(expr)}, nil
}

// environment is the filters' environment and the event's attributes. Built once: it is
// costly and immutable.
var environment = sync.OnceValues(func() (*cel.Env, error) {
	return celenv.New(append(slices.Clone(celenv.Change), cel.Variable("event", cel.MapType(cel.StringType, cel.StringType)))...)
})

// NeedsOldObject tells whether the template reads oldObject.
func (t *Template) NeedsOldObject() bool { return t.usesOld }

// Render evaluates the template for a change: the body and its content type. An error (a
// missing field, the cost budget) fails the event's delivery, which is not retried.
func (t *Template) Render(eventType string, obj, old *unstructured.Unstructured, attrs Attributes) ([]byte, string, error) {
	vars := celenv.ChangeVars(eventType, obj, old)
	vars["event"] = map[string]any{"id": attrs.ID, "type": attrs.Type, "source": attrs.Source,
		"subject": attrs.Subject, "time": attrs.Time.UTC().Format(time.RFC3339Nano)}
	out, _, err := t.program.Eval(vars)
	if err != nil {
		return nil, "", fmt.Errorf("spec.payload.template: %w", err)
	}
	return encode(out, t.contentType)
}

// encode turns the template's value into a body: a string as it is, the rest as JSON.
func encode(v ref.Val, contentType string) ([]byte, string, error) {
	if s, ok := v.(types.String); ok {
		if contentType == "" {
			contentType = "text/plain; charset=utf-8"
		}
		return []byte(string(s)), contentType, nil
	}
	native, err := v.ConvertToNative(reflect.TypeFor[*structpb.Value]())
	if err != nil {
		return nil, "", fmt.Errorf("spec.payload.template yielded a %s, which cannot be written as JSON: %w", v.Type(), err)
	}
	// Through encoding/json, not protojson, whose output varies on purpose from run to run.
	data, err := json.Marshal(native.(*structpb.Value).AsInterface())
	if err != nil {
		return nil, "", err
	}
	if contentType == "" {
		contentType = "application/json"
	}
	return data, contentType, nil
}
