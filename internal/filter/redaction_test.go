package filter

import (
	"encoding/base64"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// secretValue is the password of testSecret, as the API serves it (base64) and decoded.
var secretValue, secretPlain = base64.StdEncoding.EncodeToString([]byte("hunter2")), "hunter2"

func testSecret(rv string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Secret",
		"metadata": map[string]any{"name": "db", "namespace": "team-a", "resourceVersion": rv,
			"annotations": map[string]any{lastApplied: `{"data":{"password":"` + secretValue + `"}}`}},
		"type":       "Opaque",
		"data":       map[string]any{"password": secretValue},
		"stringData": map[string]any{"token": secretPlain}}}
}

func secretUpdate() *event.Event {
	return &event.Event{Type: event.Updated, Object: testSecret("2"), OldObject: testSecret("1")}
}

// TestCELErrorsOnRedactedSecretsCarryNoValues: for a subscription that redacts, filters
// see the Secret as its sink does, so no evaluation error (which the controller logs) can
// quote a value, however the expression uses it.
func TestCELErrorsOnRedactedSecretsCarryNoValues(t *testing.T) {
	for _, expr := range []string{
		`object.data.password`, // not a bool
		`object.metadata.annotations["` + lastApplied + `"]`,
		`{"x": 1}[object.data.password] == 1`, // no such key: <value>
		`{"x": 1}[oldObject.data.password] == 1`,
		`{"x": 1}[object.stringData.token] == 1`,
		`ip(object.data.password).family() == 4`,
		`url(object.stringData.token + "%").getHost() == ""`,
		`object.data.password.matches(object.data.password + "(")`,
		`int(object.data.password) > 0`,
	} {
		t.Run(expr, func(t *testing.T) {
			var errs []error
			f, err := New(Options{CEL: expr, RedactSecrets: true, OnEvalError: func(err error) { errs = append(errs, err) }})
			if err != nil {
				t.Fatal(err)
			}
			if f.Match(secretUpdate(), Labels(testSecret("2"))) {
				t.Fatal("matched")
			}
			if len(errs) != 1 {
				t.Fatalf("want one evaluation error, got %v", errs)
			}
			if msg := errs[0].Error(); strings.Contains(msg, secretValue) || strings.Contains(msg, secretPlain) {
				t.Fatalf("the error quotes a Secret value: %s", msg)
			}
		})
	}
}

// TestNonBoolResultsAreNotQuoted: a filter that returns something else than a bool is
// reported by the type it returned, never its value, whatever the resource.
func TestNonBoolResultsAreNotQuoted(t *testing.T) {
	var errs []error
	f, err := New(Options{CEL: `object.stringData.token`, OnEvalError: func(err error) { errs = append(errs, err) }})
	if err != nil {
		t.Fatal(err)
	}
	f.Match(secretUpdate(), nil)
	if len(errs) != 1 || strings.Contains(errs[0].Error(), secretPlain) || !strings.Contains(errs[0].Error(), "string") {
		t.Fatalf("want one error naming the type and not the value, got %v", errs)
	}
}

// TestRedactingFiltersCannotProbeSecretValues: whether a change matches never depends on a
// redacted value, so a subscription cannot learn one from which events arrive (a CEL
// prefix test or a field selector per guess). Keys and other fields still filter.
func TestRedactingFiltersCannotProbeSecretValues(t *testing.T) {
	cases := []struct {
		name, cel, fields  string
		redacted, revealed bool // the outcome when redacting, and with includeSecretData
	}{
		{"CEL equality", `object.data.password == "` + secretValue + `"`, "", false, true},
		{"CEL prefix", `object.data.password.startsWith("aHV")`, "", false, true},
		{"CEL on the old object", `oldObject.stringData.token == "` + secretPlain + `"`, "", false, true},
		{"CEL on the annotation", `object.metadata.annotations["` + lastApplied + `"].contains("aHV")`, "", false, true},
		{"field selector", "", "stringData.token=" + secretPlain, false, true},
		{"field selector on stringData", "", "stringData.token!=" + secretPlain, true, false},
		{"CEL on keys", `has(object.data.password) && "token" in object.stringData`, "", true, true},
		{"field selector on the type", "", "type=Opaque", true, true},
		{"CEL on the redacted view", `object.data.password == "<redacted>"`, "", true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, redact := range []bool{true, false} {
				f, err := New(Options{CEL: tc.cel, FieldSelector: tc.fields, RedactSecrets: redact,
					OnEvalError: func(err error) { t.Errorf("evaluation error: %v", err) }})
				if err != nil {
					t.Fatal(err)
				}
				want := tc.revealed
				if redact {
					want = tc.redacted
				}
				if got := f.Match(secretUpdate(), Labels(testSecret("2"))); got != want {
					t.Errorf("redact=%t: matched %t, want %t", redact, got, want)
				}
			}
		})
	}
}

// TestRedactingFiltersHaveTheirOwnSignature: a fan-out matches once per signature, so a
// field selector that redacts must not share the outcome of the same one that does not.
func TestRedactingFiltersHaveTheirOwnSignature(t *testing.T) {
	plain, err := New(Options{FieldSelector: "stringData.token=" + secretPlain})
	if err != nil {
		t.Fatal(err)
	}
	redacting, err := New(Options{FieldSelector: "stringData.token=" + secretPlain, RedactSecrets: true})
	if err != nil {
		t.Fatal(err)
	}
	if plain.Signature() == redacting.Signature() {
		t.Fatalf("both filters have the signature %q", plain.Signature())
	}
}
