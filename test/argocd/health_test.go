// Package argocd tests the Argo CD health check in config/argocd against the fixtures next to
// it, in a Lua sandbox set up the way Argo CD sets up its own (util/lua/lua.go).
package argocd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

// configMapKey is the argocd-cm key Argo CD looks the script up under: group_kind.
const configMapKey = "resource.customizations.health.notify.dynamicnotifier.io_WatchSubscription"

// healthStatus is what a health script returns, as Argo CD decodes it.
type healthStatus struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

// healthTests is the layout of Argo CD's health_test.yaml files.
type healthTests struct {
	Tests []struct {
		InputPath    string       `json:"inputPath"`
		HealthStatus healthStatus `json:"healthStatus"`
	} `json:"tests"`
}

// Argo CD replaces any other status with Unknown / "Lua returned an invalid health status".
var validStatuses = []string{"Unknown", "Progressing", "Suspended", "Healthy", "Degraded", "Missing"}

func dir() string { return filepath.Join(testenv.RepoRoot(), "config", "argocd") }

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func script(t *testing.T) string {
	t.Helper()
	return string(readFile(t, filepath.Join(dir(), "health.lua")))
}

// runHealth runs script with obj the way Argo CD runs a health customization from argocd-cm:
// no standard libraries except package, base and table (useOpenLibs is off for argocd-cm
// scripts by default; recent Argo CD versions add a reduced os library, which the script does
// not use), a one-second budget, obj as a global, and the returned table read as
// {status, message}.
func runHealth(obj map[string]any, script string) (healthStatus, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		open := lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}
		if err := l.CallByParam(open, lua.LString(lib.name)); err != nil {
			return healthStatus{}, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return healthStatus{}, err
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return healthStatus{}, fmt.Errorf("expect table output from Lua script, not %s", l.Get(-1).Type())
	}
	var hs healthStatus
	var err error
	ret.ForEach(func(k, v lua.LValue) {
		s, isString := v.(lua.LString)
		switch {
		case k.String() != "status" && k.String() != "message":
			err = fmt.Errorf("unexpected key %q in the returned table", k.String())
		case !isString:
			err = fmt.Errorf("%s is a %s, not a string", k.String(), v.Type())
		case k.String() == "status":
			hs.Status = string(s)
		default:
			hs.Message = string(s)
		}
	})
	if err != nil {
		return healthStatus{}, err
	}
	if !slices.Contains(validStatuses, hs.Status) {
		return healthStatus{}, fmt.Errorf("invalid health status %q", hs.Status)
	}
	return hs, nil
}

// toLua converts a decoded JSON/YAML value as Argo CD's decodeValue does (live objects
// carry int64 numbers, values decoded into any float64).
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(toLua(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetH(lua.LString(key), toLua(l, item))
		}
		return tbl
	}
	return lua.LNil
}

func loadObject(t *testing.T, path string) map[string]any {
	t.Helper()
	data := readFile(t, path)
	// The fixture must be a WatchSubscription as the API defines it, field for field.
	var ws notifyv1.WatchSubscription
	if err := yaml.UnmarshalStrict(data, &ws); err != nil {
		t.Fatalf("%s is not a valid WatchSubscription: %v", path, err)
	}
	if ws.Kind != "WatchSubscription" || ws.APIVersion != notifyv1.GroupVersion.String() {
		t.Fatalf("%s is a %s %s", path, ws.APIVersion, ws.Kind)
	}
	// Decoded as Argo CD holds the live object: unstructured, integers as int64.
	jsonData, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(jsonData); err != nil {
		t.Fatal(err)
	}
	if _, isInt := obj.Object["metadata"].(map[string]any)["generation"].(int64); !isInt {
		t.Fatalf("%s: metadata.generation is not decoded as int64", path)
	}
	return obj.Object
}

func TestHealthScriptCases(t *testing.T) {
	var cases healthTests
	if err := yaml.UnmarshalStrict(readFile(t, filepath.Join(dir(), "health_test.yaml")), &cases); err != nil {
		t.Fatal(err)
	}
	src := script(t)
	covered := map[string]bool{}
	used := map[string]bool{}
	for _, tc := range cases.Tests {
		covered[tc.HealthStatus.Status] = true
		used[filepath.Clean(tc.InputPath)] = true
		t.Run(strings.TrimSuffix(filepath.Base(tc.InputPath), ".yaml"), func(t *testing.T) {
			got, err := runHealth(loadObject(t, filepath.Join(dir(), tc.InputPath)), src)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.HealthStatus {
				t.Errorf("got %+v, want %+v", got, tc.HealthStatus)
			}
		})
	}
	for _, status := range []string{"Healthy", "Progressing", "Degraded", "Suspended"} {
		if !covered[status] {
			t.Errorf("no case in health_test.yaml expects %s", status)
		}
	}
	fixtures, err := filepath.Glob(filepath.Join(dir(), "testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fixtures {
		if rel, _ := filepath.Rel(dir(), f); !used[rel] {
			t.Errorf("%s is not listed in health_test.yaml", rel)
		}
	}
}

// Objects the fixtures do not show: odd shapes must give a status, never a Lua error.
func TestHealthScriptOddObjects(t *testing.T) {
	cases := map[string]struct {
		obj  string
		want healthStatus
	}{
		"empty object": {`{}`, healthStatus{"Progressing", "Waiting for the operator to report status"}},
		"empty status": {`{metadata: {generation: 1}, status: {}}`,
			healthStatus{"Progressing", "Waiting for the operator to observe generation 1"}},
		"other conditions only": {`{metadata: {generation: 1}, status: {observedGeneration: 1, ` +
			`conditions: [{type: Other, status: "True", reason: X}]}}`,
			healthStatus{"Progressing", "Waiting for the Ready condition"}},
		"ready without message": {`{metadata: {generation: 1}, status: {observedGeneration: 1, ` +
			`conditions: [{type: Ready, status: "False", reason: Forbidden}]}}`,
			healthStatus{"Degraded", "Forbidden"}},
		"suspend false": {`{metadata: {generation: 2}, spec: {suspend: false}, status: {observedGeneration: 2, ` +
			`conditions: [{type: Ready, status: "True", reason: Watching, message: ok}]}}`,
			healthStatus{"Healthy", "ok"}},
	}
	src := script(t)
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			obj := map[string]any{}
			if err := yaml.Unmarshal([]byte(tc.obj), &obj); err != nil {
				t.Fatal(err)
			}
			got, err := runHealth(obj, src)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// The argocd-cm snippet and the docs carry the script verbatim.
func TestHealthScriptCopiesAgree(t *testing.T) {
	want := script(t)
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict(readFile(t, filepath.Join(dir(), "argocd-cm.yaml")), &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Name != "argocd-cm" || cm.Kind != "ConfigMap" {
		t.Errorf("argocd-cm.yaml holds %s %s", cm.Kind, cm.Name)
	}
	if got, ok := cm.Data[configMapKey]; !ok {
		t.Errorf("argocd-cm.yaml has no key %s", configMapKey)
	} else if got != want {
		t.Errorf("argocd-cm.yaml differs from health.lua; regenerate it:\n%s", got)
	}

	doc := string(readFile(t, filepath.Join(testenv.RepoRoot(), "docs", "argocd.md")))
	blocks := regexp.MustCompile("(?s)```lua\n(.*?)```").FindAllStringSubmatch(doc, -1)
	if len(blocks) != 1 {
		t.Fatalf("docs/argocd.md has %d lua blocks, want 1", len(blocks))
	}
	if blocks[0][1] != want {
		t.Errorf("the lua block in docs/argocd.md differs from config/argocd/health.lua")
	}
	found := false
	for _, block := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(doc, -1) {
		var docCM corev1.ConfigMap
		if yaml.Unmarshal([]byte(block[1]), &docCM) != nil || docCM.Data[configMapKey] == "" {
			continue
		}
		found = true
		if docCM.Data[configMapKey] != want {
			t.Errorf("the argocd-cm in docs/argocd.md differs from config/argocd/health.lua")
		}
	}
	if !found {
		t.Errorf("docs/argocd.md shows no argocd-cm with the key %s", configMapKey)
	}
}
