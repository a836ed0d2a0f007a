// Package celenv builds the CEL environments of filters and templates: the libraries the
// Kubernetes API server offers in validation rules, the variables of a change, and the cost
// budget of one evaluation.
package celenv

import (
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/version"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/cel/environment"
)

// CostBudget bounds what one evaluation may cost, in CEL's cost units. The API server's own
// limit per validation call (celconfig.PerCallLimit, 1,000,000) lets an expression run for
// about 100 ms per change; a hundredth of it stops one at about 4 ms on the 2-core machines
// we measure on, which is far more than an expression about one object needs: a loop over a
// hundred list items costs a few hundred units.
const CostBudget = celconfig.PerCallLimit / 100

// Change declares the variables every expression about a change sees: object (after the
// change, the last state for Deleted), oldObject (before an update, null otherwise),
// eventType ("Added", "Updated" or "Deleted") and changes (the dotted paths an update
// changed, sorted, lists compared whole: "spec.replicas" in changes; empty otherwise).
var Change = []cel.EnvOption{
	cel.Variable("object", cel.DynType),
	cel.Variable("oldObject", cel.DynType),
	cel.Variable("eventType", cel.StringType),
	cel.Variable("changes", cel.ListType(cel.StringType)),
}

// New returns the Kubernetes CEL environment with the variables declared.
func New(variables ...cel.EnvOption) (*cel.Env, error) {
	set, err := environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()).Extend(
		environment.VersionedOptions{IntroducedVersion: version.MajorMinor(1, 0), EnvOptions: variables})
	if err != nil {
		return nil, err
	}
	return set.Env(environment.NewExpressions)
}

// Program compiles expr in env within CostBudget; the error is CEL's, with the position.
func Program(env *cel.Env, expr string) (cel.Program, *cel.Ast, error) {
	ast, issues := env.Compile(expr)
	if issues != nil && issues.Err() != nil {
		return nil, nil, issues.Err()
	}
	prg, err := ProgramOf(env, ast)
	if err != nil {
		return nil, nil, err
	}
	return prg, ast, nil
}

// ProgramOf plans a checked expression within CostBudget.
func ProgramOf(env *cel.Env, ast *cel.Ast) (cel.Program, error) {
	return env.Program(ast, cel.CostLimit(CostBudget), cel.InterruptCheckFrequency(100))
}

// ChangeVars are the values of Change's variables for one change.
func ChangeVars(eventType string, obj, old *unstructured.Unstructured, changes []string) map[string]any {
	if changes == nil {
		changes = []string{}
	}
	vars := map[string]any{"object": obj.Object, "oldObject": types.NullValue, "eventType": eventType, "changes": changes}
	if old != nil {
		vars["oldObject"] = old.Object
	}
	return vars
}

// IsOverBudget tells whether an evaluation failed for costing more than CostBudget.
func IsOverBudget(err error) bool {
	return err != nil && strings.Contains(err.Error(), "operation cancelled: actual cost limit exceeded")
}

// UsesOld tells whether an expression reads oldObject or changes, which need the object
// before each update: the informer keeps old objects for it. A field that happens to be
// named so only keeps them needlessly.
func UsesOld(expr string) bool {
	return strings.Contains(expr, "oldObject") || strings.Contains(expr, "changes")
}
