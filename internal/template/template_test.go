package template

import (
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func deployment(replicas int64) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": "web", "namespace": "shop"}, "spec": map[string]any{"replicas": replicas}}}
}

var attrs = Attributes{ID: "u:7:Updated", Type: "io.dynamicnotifier.resource.updated", Source: "/apis/x/w",
	Subject: "/apis/apps/v1/namespaces/shop/deployments/web", Time: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}

func TestRender(t *testing.T) {
	cases := []struct {
		name, expr, contentType string
		wantBody, wantType      string
	}{
		{"a map is JSON", `{"text": object.metadata.name + " now has " + string(object.spec.replicas) + " replicas (was " + string(oldObject.spec.replicas) + ")"}`, "",
			`{"text":"web now has 3 replicas (was 2)"}`, "application/json"},
		{"a list is JSON", `[eventType, event.id]`, "", `["Updated","u:7:Updated"]`, "application/json"},
		{"a string as it is", `"deployment " + object.metadata.namespace + "/" + object.metadata.name + " " + eventType`, "",
			"deployment shop/web Updated", "text/plain; charset=utf-8"},
		{"a content type chosen", `{"subject": event.subject, "at": event.time}`, "application/vnd.example+json",
			`{"at":"2026-12-01T09:00:00Z","subject":"/apis/apps/v1/namespaces/shop/deployments/web"}`, "application/vnd.example+json"},
		{"a number is JSON", `object.spec.replicas * 2`, "", `6`, "application/json"},
		{"what changed", `{"changed": changes}`, "", `{"changed":["spec.replicas"]}`, "application/json"},
		{"literals mix types, as JSON does", `{"text": object.metadata.name, "blocks": [{"type": "section", "count": object.spec.replicas}, "divider", true]}`, "",
			`{"blocks":[{"count":3,"type":"section"},"divider",true],"text":"web"}`, "application/json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tpl, err := Compile(tc.expr, tc.contentType)
			if err != nil {
				t.Fatal(err)
			}
			body, ct, err := tpl.Render("Updated", deployment(3), deployment(2), []string{"spec.replicas"}, attrs)
			if err != nil {
				t.Fatal(err)
			}
			if string(body) != tc.wantBody || ct != tc.wantType {
				t.Errorf("got %s (%s), want %s (%s)", body, ct, tc.wantBody, tc.wantType)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	for expr, want := range map[string]string{
		`object.`:                "Syntax error",
		`true`:                   "must yield a string, a map or a list",
		`object.metadata.name +`: "Syntax error",
		// Positions point into what was written, not into the wrapping that lets literals mix.
		`{"text": "x",` + "\n" + ` "n": nosuch}`: "<input>:2:7: undeclared reference to 'nosuch'",
		`{"a": 1}.a == 1`:                        "must yield a string, a map or a list, it yields bool",
	} {
		_, err := Compile(expr, "")
		if !errors.Is(err, ErrInvalidTemplate) || !strings.Contains(err.Error(), want) {
			t.Errorf("Compile(%q) = %v, want ErrInvalidTemplate with %q", expr, err, want)
		}
	}
}

func TestRenderErrorsAndBudget(t *testing.T) {
	missing, _ := Compile(`{"x": object.spec.missing}`, "")
	if _, _, err := missing.Render("Added", deployment(1), nil, nil, attrs); err == nil {
		t.Errorf("a missing field renders: want an error")
	}
	costly, _ := Compile(`[0,1,2,3,4,5,6,7,8,9].map(a, [0,1,2,3,4,5,6,7,8,9].map(b, [0,1,2,3,4,5,6,7,8,9].map(c, [0,1,2,3,4,5,6,7,8,9].map(d, a+b+c+d))))`, "")
	if _, _, err := costly.Render("Added", deployment(1), nil, nil, attrs); err == nil || !strings.Contains(err.Error(), "cost limit") {
		t.Errorf("an expression over the budget: err = %v, want the cost limit", err)
	}
	if missing.NeedsOldObject() {
		t.Errorf("NeedsOldObject for a template without oldObject")
	}
	if old, _ := Compile(`{"was": oldObject.spec.replicas}`, ""); !old.NeedsOldObject() {
		t.Errorf("NeedsOldObject is false for a template reading oldObject")
	}
}
