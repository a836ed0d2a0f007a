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
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	exprpb "google.golang.org/genproto/googleapis/api/expr/v1alpha1"
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
// application/json). Unlike filters, its map and list literals may mix types, as JSON does:
// {"text": "...", "blocks": [...]}.
func Compile(expr, contentType string) (*Template, error) {
	env, err := environment()
	if err != nil {
		return nil, fmt.Errorf("CEL environment: %w", err)
	}
	parsed, issues := env.Parse(expr)
	if issues.Err() != nil {
		return nil, fmt.Errorf("%w: spec.payload.template: %s", ErrInvalidTemplate, issues.Err().Error())
	}
	checked, issues := env.Check(asBody(parsed))
	if issues.Err() != nil {
		return nil, fmt.Errorf("%w: spec.payload.template: %s", ErrInvalidTemplate, issues.Err().Error())
	}
	switch out := checked.NativeRep().GetType(parsed.NativeRep().Expr().ID()); {
	case out.IsExactType(cel.BoolType), out.IsExactType(cel.BytesType), out.IsExactType(cel.NullType):
		return nil, fmt.Errorf("%w: spec.payload.template must yield a string, a map or a list, it yields %s",
			ErrInvalidTemplate, out)
	}
	prg, err := celenv.ProgramOf(env, checked)
	if err != nil {
		return nil, fmt.Errorf("%w: spec.payload.template: %s", ErrInvalidTemplate, err.Error())
	}
	return &Template{program: prg, contentType: contentType, usesOld: celenv.UsesOld(expr)}, nil
}

// bodyFunction wraps every template, so the literals inside are exempt from the Kubernetes
// environment's rule that a literal's elements share one type (a JSON body mixes them). It
// returns its argument, so an expression naming it gains nothing.
const bodyFunction = "dynamicnotifier.template.body"

// asBody wraps a parsed expression in bodyFunction, keeping its source positions, so errors
// point into what the user wrote.
func asBody(parsed *cel.Ast) *cel.Ast {
	native := parsed.NativeRep()
	call := celast.NewExprFactory().NewCall(celast.MaxID(native), bodyFunction, native.Expr())
	proto, err := celast.ToProto(celast.NewAST(call, native.SourceInfo()))
	if err != nil {
		// Only an expression kind the parser never produces fails to convert; Check then
		// reports the unwrapped expression's problems.
		return parsed
	}
	return cel.ParsedExprToAstWithSource(&exprpb.ParsedExpr{Expr: proto.GetExpr(), SourceInfo: proto.GetSourceInfo()},
		parsed.Source())
}

// exemptBody tells the homogeneous-literal validator to skip what bodyFunction wraps.
type exemptBody struct{}

func (exemptBody) Name() string { return bodyFunction }

func (exemptBody) Validate(*cel.Env, cel.ValidatorConfig, *celast.AST, *cel.Issues) {}

func (exemptBody) Configure(c cel.MutableValidatorConfig) error {
	exempt, _ := c.GetOrDefault(cel.HomogeneousAggregateLiteralExemptFunctions, []string{}).([]string)
	return c.Set(cel.HomogeneousAggregateLiteralExemptFunctions, append(slices.Clone(exempt), bodyFunction))
}

// environment is the filters' environment, the event's attributes and bodyFunction. Built
// once: it is costly and immutable.
var environment = sync.OnceValues(func() (*cel.Env, error) {
	return celenv.New(append(slices.Clone(celenv.Change),
		cel.Variable("event", cel.MapType(cel.StringType, cel.StringType)),
		cel.Function(bodyFunction, cel.Overload("dynamicnotifier_template_body", []*cel.Type{cel.DynType}, cel.DynType,
			cel.UnaryBinding(func(v ref.Val) ref.Val { return v }))),
		cel.ASTValidators(exemptBody{}),
	)...)
})

// NeedsOldObject tells whether the template reads oldObject or changes.
func (t *Template) NeedsOldObject() bool { return t.usesOld }

// Render evaluates the template for a change: the body and its content type. An error (a
// missing field, the cost budget) fails the event's delivery, which is not retried.
func (t *Template) Render(eventType string, obj, old *unstructured.Unstructured, changes []string, attrs Attributes) ([]byte, string, error) {
	vars := celenv.ChangeVars(eventType, obj, old, changes)
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
