package payload

import (
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// planted is the value FuzzShapes puts in Secrets: letters and digits, which JSON never
// escapes, so it shows in any output that carries it.
const planted = "PLANTEDv4lue9"

// FuzzShapes runs every payload shape (mode × includeOldObject × includeChangedPaths ×
// includeSecretData) on arbitrary old/new object pairs as Secrets and as ConfigMaps, with
// a value planted in data, stringData and the last-applied annotation: no panic, valid
// JSON, and the planted value never in the output of a shape that redacts (a Secret
// without includeSecretData, as the controller's shapeFor decides), in whatever form data
// and stringData come; a shape that does not redact sends it in Full mode.
func FuzzShapes(f *testing.F) {
	f.Add(`{"kind":"Secret","data":{"p":"c2VjcmV0"}}`, `{"kind":"Secret","data":{"p":"b3RoZXI="}}`)
	f.Add(`{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"c2VjcmV0"}}}`, `{}`)
	f.Add(`{"a":{"b":[1,2]}}`, `{"a":{"b":[2,1]},"c":null}`)
	f.Add(`{"data":"c2VjcmV0","stringData":["x"]}`, `{"metadata":"m","data":null}`)
	f.Fuzz(func(t *testing.T, oldRaw, newRaw string) {
		if strings.Contains(oldRaw+newRaw, planted) {
			return
		}
		for _, kind := range []string{"Secret", "ConfigMap"} {
			for form := range plantForms {
				oldObj, newObj := map[string]any{}, map[string]any{}
				if json.Unmarshal([]byte(oldRaw), &oldObj) != nil || json.Unmarshal([]byte(newRaw), &newObj) != nil {
					return
				}
				// JSON null decodes to a nil map: an object with nothing in it.
				if oldObj == nil {
					oldObj = map[string]any{}
				}
				if newObj == nil {
					newObj = map[string]any{}
				}
				plant(oldObj, kind, form)
				plant(newObj, kind, form)
				gvr := schema.GroupVersionResource{Version: "v1", Resource: strings.ToLower(kind) + "s"}
				for _, typ := range []event.Type{event.Updated, event.Added} {
					ev := event.New(typ, gvr, &unstructured.Unstructured{Object: newObj})
					if typ == event.Updated {
						ev.OldObject = &unstructured.Unstructured{Object: oldObj}
					}
					for _, shape := range allShapes(kind == "Secret") {
						checkShape(t, ev, shape, form)
					}
				}
			}
		}
	})
}

// shapeOptions is a subscription's payload spec with the resource it watches.
type shapeOptions struct {
	Shape
	secrets, includeSecretData bool
}

// allShapes are the shapes of every payload spec, RedactSecrets set as the controller does
// (shapeFor): for Secrets, unless includeSecretData.
func allShapes(secrets bool) []shapeOptions {
	modes := []Mode{"", Full, Metadata, Reference}
	out := make([]shapeOptions, 0, len(modes)*8)
	for _, mode := range modes {
		for bits := range 8 {
			o := shapeOptions{Shape: Shape{Mode: mode, IncludeOldObject: bits&1 != 0, IncludeChangedPaths: bits&2 != 0},
				secrets: secrets, includeSecretData: bits&4 != 0}
			o.RedactSecrets = secrets && !o.includeSecretData
			out = append(out, o)
		}
	}
	return out
}

func checkShape(t *testing.T, ev *event.Event, o shapeOptions, form int) {
	t.Helper()
	data, err := o.Data(ev)
	if err != nil {
		return
	}
	if !json.Valid(data) {
		t.Fatalf("%+v: invalid JSON: %s", o, data)
	}
	leaked := strings.Contains(string(data), planted)
	switch {
	case o.RedactSecrets && leaked:
		t.Fatalf("%+v, planted as %s: a Secret value leaked: %s", o, plantForms[form], data)
	case !o.RedactSecrets && (o.Mode == "" || o.Mode == Full) && !leaked:
		t.Fatalf("%+v, planted as %s: the value is missing from a shape that does not redact: %s", o, plantForms[form], data)
	}
	if o.RedactSecrets && (o.Mode == "" || o.Mode == Full) {
		assertRedacted(t, data, o.IncludeOldObject || o.IncludeChangedPaths)
	}
}

// plantForms are the ways plant puts the value in an object: as the API serves Secrets, and
// in forms it does not (a field of another type), which redaction must cover all the same.
var plantForms = []string{"map values", "whole fields"}

// plant makes obj of kind, with the planted value in data, stringData and the last-applied
// annotation (metadata and annotations made maps if they are not).
func plant(obj map[string]any, kind string, form int) {
	obj["apiVersion"], obj["kind"] = "v1", kind
	switch form {
	case 0:
		for _, field := range []string{"data", "stringData"} {
			m, _ := obj[field].(map[string]any)
			m = maps.Clone(m)
			if m == nil {
				m = map[string]any{}
			}
			for k := range m {
				m[k] = planted // every value, whatever the fuzzer made it
			}
			m["planted-"+field] = planted
			obj[field] = m
		}
	case 1:
		obj["data"] = planted
		obj["stringData"] = []any{planted, map[string]any{"k": planted}}
	}
	md, _ := obj["metadata"].(map[string]any)
	md = maps.Clone(md)
	if md == nil {
		md = map[string]any{}
	}
	ann, _ := md["annotations"].(map[string]any)
	ann = maps.Clone(ann)
	if ann == nil {
		ann = map[string]any{}
	}
	ann[lastApplied] = fmt.Sprintf(`{"data":{"p":%q}}`, planted)
	md["annotations"] = ann
	obj["metadata"] = md
}

// assertRedacted checks a Full shape's objects: every data and stringData value, and the
// last-applied annotation, are redacted.
func assertRedacted(t *testing.T, data []byte, envelope bool) {
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	objects := map[string]any{"object": doc}
	if envelope {
		objects = map[string]any{"object": doc["object"], "oldObject": doc["oldObject"]}
	}
	for side, o := range objects {
		obj, _ := o.(map[string]any)
		for _, field := range []string{"data", "stringData"} {
			switch v := obj[field].(type) {
			case map[string]any:
				for k, v := range v {
					if v != Redacted {
						t.Fatalf("%s.%s.%s leaked: %s", side, field, k, data)
					}
				}
			case nil:
			default:
				if v != Redacted {
					t.Fatalf("%s.%s leaked: %s", side, field, data)
				}
			}
		}
		md, _ := obj["metadata"].(map[string]any)
		ann, _ := md["annotations"].(map[string]any)
		if v, ok := ann[lastApplied]; ok && v != Redacted {
			t.Fatalf("%s last-applied annotation leaked: %s", side, data)
		}
	}
}
