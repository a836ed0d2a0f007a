package argocd

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

// stringConstants are the string constants of a Go file whose names start with prefix, in
// order, as name and value.
func stringConstants(t *testing.T, path, prefix string) [][2]string {
	t.Helper()
	file, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var constants [][2]string
	for _, decl := range file.Decls {
		gen, ok := decl.(*ast.GenDecl)
		if !ok || gen.Tok != token.CONST {
			continue
		}
		for _, spec := range gen.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, prefix) || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Fatalf("%s is not a string literal", name.Name)
				}
				value, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				constants = append(constants, [2]string{name.Name, value})
			}
		}
	}
	return constants
}

func apiFile(name string) string { return filepath.Join(testenv.RepoRoot(), "api", "v1alpha1", name) }

// readyReasons are the Reason* constants of api/v1alpha1/conditions.go, read from the source
// so that a new reason cannot be missed.
func readyReasons(t *testing.T) []string {
	t.Helper()
	constants := stringConstants(t, apiFile("conditions.go"), "Reason")
	reasons := make([]string, 0, len(constants))
	for _, c := range constants {
		reasons = append(reasons, c[1])
	}
	if !slices.Contains(reasons, notifyv1.ReasonWatching) || !slices.Contains(reasons, notifyv1.ReasonStarting) {
		t.Fatalf("reading conditions.go found only %q", reasons)
	}
	return reasons
}

// sinkReasons are the reasons of sink objects' conditions, read from the source so that a
// new one cannot be missed: the SinkReason* constants of api/v1alpha1/watchsink_types.go, and
// every notifyv1 constant internal/controller/watchsink_controller.go writes into a
// condition's Reason (it borrows InvalidSink from the subscriptions' reasons).
func sinkReasons(t *testing.T) []string {
	t.Helper()
	values := map[string]string{}
	var reasons []string
	for _, c := range stringConstants(t, apiFile("watchsink_types.go"), "SinkReason") {
		values[c[0]] = c[1]
		reasons = append(reasons, c[1])
	}
	for _, c := range stringConstants(t, apiFile("conditions.go"), "Reason") {
		values[c[0]] = c[1]
	}
	path := filepath.Join(testenv.RepoRoot(), "internal", "controller", "watchsink_controller.go")
	file, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var written []string
	add := func(expr ast.Expr) {
		sel, ok := expr.(*ast.SelectorExpr)
		if ok {
			pkg, isIdent := sel.X.(*ast.Ident)
			ok = isIdent && pkg.Name == "notifyv1"
		}
		if !ok {
			t.Errorf("%s writes a condition reason that is not a notifyv1 constant", path)
			return
		}
		value, ok := values[sel.Sel.Name]
		if !ok {
			t.Errorf("%s writes the reason notifyv1.%s, which is neither a Reason* nor a SinkReason* constant",
				path, sel.Sel.Name)
			return
		}
		written = append(written, value)
	}
	ast.Inspect(file, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.KeyValueExpr: // metav1.Condition{Reason: ...}
			if key, ok := n.Key.(*ast.Ident); ok && key.Name == "Reason" {
				add(n.Value)
			}
		case *ast.AssignStmt: // cond.Status, cond.Reason = ..., ...
			for i, lhs := range n.Lhs {
				if sel, ok := lhs.(*ast.SelectorExpr); ok && sel.Sel.Name == "Reason" && len(n.Rhs) == len(n.Lhs) {
					add(n.Rhs[i])
				}
			}
		}
		return true
	})
	if !slices.Contains(written, notifyv1.ReasonInvalidSink) || !slices.Contains(written, notifyv1.SinkReasonValid) {
		t.Fatalf("reading %s found only the reasons %q", path, written)
	}
	for _, reason := range written {
		if !slices.Contains(reasons, reason) {
			reasons = append(reasons, reason)
		}
	}
	return reasons
}

// readyStatus is the status the operator reports with a reason: True with Watching, Unknown
// with Starting, False with the rest (api/v1alpha1/conditions.go).
func readyStatus(reason string) string {
	switch reason {
	case notifyv1.ReasonWatching:
		return "True"
	case notifyv1.ReasonStarting, notifyv1.ReasonCheckFailing:
		return "Unknown"
	}
	return "False"
}

// Every Ready reason the operator reports maps to the health the docs promise.
func TestHealthForEveryReason(t *testing.T) {
	src := script(t)
	for _, reason := range readyReasons(t) {
		t.Run(reason, func(t *testing.T) {
			want := healthStatus{Status: "Degraded", Message: "the message of " + reason}
			switch reason {
			case notifyv1.ReasonWatching:
				want.Status = "Healthy"
			case notifyv1.ReasonStarting, notifyv1.ReasonCheckFailing:
				want.Status = "Progressing"
			case notifyv1.ReasonSuspended:
				want.Status = "Suspended"
			}
			obj := map[string]any{}
			doc := fmt.Sprintf(`{metadata: {generation: 4}, status: {observedGeneration: 4, conditions: `+
				`[{type: Ready, status: "%s", reason: %s, message: "%s", observedGeneration: 4}]}}`,
				readyStatus(reason), reason, want.Message)
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
				t.Fatal(err)
			}
			got, err := runHealth(obj, src)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
}

// docs/troubleshooting.md has a table row for every Ready reason, and docs/argocd.md names each.
func TestDocsCoverEveryReason(t *testing.T) {
	docs := filepath.Join(testenv.RepoRoot(), "docs")
	troubleshooting := string(readFile(t, filepath.Join(docs, "troubleshooting.md")))
	argocd := string(readFile(t, filepath.Join(docs, "argocd.md")))
	for _, reason := range readyReasons(t) {
		row := fmt.Sprintf("\n| `%s` | `%s` |", reason, readyStatus(reason))
		if !strings.Contains(troubleshooting, row) {
			t.Errorf("docs/troubleshooting.md has no row starting %q", strings.TrimSpace(row))
		}
		if !strings.Contains(argocd, "`"+reason+"`") {
			t.Errorf("docs/argocd.md does not say which health %s gives", reason)
		}
	}
}

// sinkReasonHealth is, for each reason of a sink object's conditions, the condition and status
// the operator reports it with (internal/controller/watchsink_controller.go) and the health
// docs/argocd.md promises. A new reason needs a row here.
var sinkReasonHealth = map[string]struct{ condition, status, health string }{
	notifyv1.SinkReasonValid:      {notifyv1.ConditionReady, "True", "Healthy"},
	notifyv1.ReasonInvalidSink:    {notifyv1.ConditionReady, "False", "Degraded"},
	notifyv1.ReasonCheckFailing:   {notifyv1.ConditionReady, "Unknown", "Progressing"},
	notifyv1.SinkReasonDelivering: {notifyv1.ConditionDelivering, "True", "Healthy"},
	notifyv1.SinkReasonUnused:     {notifyv1.ConditionDelivering, "Unknown", "Healthy"},
	notifyv1.SinkReasonFailing:    {notifyv1.ConditionDelivering, "False", "Degraded"},
}

// Every reason of a sink object's conditions maps to the health the docs promise, the other
// condition being at its best (Ready=True, Delivering=True). Degraded says the reason and the
// message; Healthy says Delivering's message.
func TestSinkHealthForEveryReason(t *testing.T) {
	src := sinkScript(t)
	argocd := string(readFile(t, filepath.Join(testenv.RepoRoot(), "docs", "argocd.md")))
	for _, reason := range sinkReasons(t) {
		t.Run(reason, func(t *testing.T) {
			row, ok := sinkReasonHealth[reason]
			if !ok {
				t.Fatalf("no health decided for the sink reason %s: add it to sinkReasonHealth and docs/argocd.md", reason)
			}
			if !strings.Contains(argocd, "`"+reason+"`") {
				t.Errorf("docs/argocd.md does not say which health %s gives", reason)
			}
			message := "the message of " + reason
			conditions := map[string]string{
				notifyv1.ConditionReady: `{type: Ready, status: "True", reason: Valid, message: "valid", ` +
					`observedGeneration: 4}`,
				notifyv1.ConditionDelivering: `{type: Delivering, status: "True", reason: Delivering, ` +
					`message: "delivering", observedGeneration: 4}`,
			}
			conditions[row.condition] = fmt.Sprintf(`{type: %s, status: "%s", reason: %s, message: "%s", `+
				`observedGeneration: 4}`, row.condition, row.status, reason, message)
			want := healthStatus{Status: row.health}
			switch {
			case row.health == "Degraded", row.health == "Progressing":
				want.Message = reason + ": " + message
			case row.condition == notifyv1.ConditionDelivering:
				want.Message = message
			default:
				want.Message = "delivering"
			}
			obj := map[string]any{}
			doc := fmt.Sprintf(`{metadata: {generation: 4}, status: {observedGeneration: 4, conditions: [%s, %s]}}`,
				conditions[notifyv1.ConditionReady], conditions[notifyv1.ConditionDelivering])
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
				t.Fatal(err)
			}
			got, err := runHealth(obj, src)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
}

// The CRD schemas set no defaults: the API server stores the spec as applied, so Argo CD sees
// no difference between Git and the live object. A default added to the API must be a
// decision: list it here and in docs/argocd.md ("No perpetual diff").
func TestCRDHasNoSchemaDefaults(t *testing.T) {
	for _, plural := range []string{"watchsubscriptions", "watchsinks", "clusterwatchsinks"} {
		t.Run(plural, func(t *testing.T) { testCRDHasNoSchemaDefaults(t, plural) })
	}
}

func testCRDHasNoSchemaDefaults(t *testing.T, plural string) {
	allowed := []string{}
	path := filepath.Join(testenv.RepoRoot(), "config", "crd", "bases",
		notifyv1.GroupVersion.Group+"_"+plural+".yaml")
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(readFile(t, path), &crd); err != nil {
		t.Fatal(err)
	}
	var defaulted []string
	var walk func(at string, s *apiextensionsv1.JSONSchemaProps)
	walk = func(at string, s *apiextensionsv1.JSONSchemaProps) {
		if s == nil {
			return
		}
		if s.Default != nil {
			defaulted = append(defaulted, at)
		}
		for name, p := range s.Properties {
			walk(at+"."+name, &p)
		}
		if s.Items != nil {
			walk(at+"[]", s.Items.Schema)
			for i := range s.Items.JSONSchemas {
				walk(at+"[]", &s.Items.JSONSchemas[i])
			}
		}
		if s.AdditionalProperties != nil {
			walk(at+".*", s.AdditionalProperties.Schema)
		}
		for _, group := range [][]apiextensionsv1.JSONSchemaProps{s.AllOf, s.AnyOf, s.OneOf} {
			for i := range group {
				walk(at, &group[i])
			}
		}
	}
	for _, v := range crd.Spec.Versions {
		if v.Schema != nil {
			walk(v.Name, v.Schema.OpenAPIV3Schema)
		}
	}
	slices.Sort(defaulted)
	if !slices.Equal(defaulted, allowed) {
		t.Errorf("schema defaults at %q, want %q: the API server would add them to every applied "+
			"object; document them in docs/argocd.md and list them here", defaulted, allowed)
	}
}
