// Package argocd tests the Argo CD health checks in config/argocd (WatchSubscription) and
// config/argocd/sinks (WatchSink and ClusterWatchSink) against the fixtures next to them, in a
// Lua sandbox set up the way Argo CD sets up its own (util/lua/lua.go).
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

// configMapKey is the argocd-cm key Argo CD looks a kind's script up under: group_kind.
func configMapKey(kind string) string {
	return "resource.customizations.health." + notifyv1.GroupVersion.Group + "_" + kind
}

// healthCheck is one script, the kinds it is registered for, and its cases.
type healthCheck struct {
	name string
	// dir holds health.lua, health_test.yaml and testdata/, as a directory of Argo CD's
	// resource_customizations does.
	dir string
	// kinds: argocd-cm holds the script under each one's key, and the fixtures are of these.
	kinds []string
	// statuses: health_test.yaml must have a case expecting each.
	statuses []string
}

// healthChecks are the scripts in config/argocd, in the order docs/argocd.md shows them.
func healthChecks() []healthCheck {
	return []healthCheck{
		{name: "WatchSubscription", dir: dir(), kinds: []string{"WatchSubscription"},
			statuses: []string{"Healthy", "Progressing", "Degraded", "Suspended"}},
		{name: "sinks", dir: filepath.Join(dir(), "sinks"), kinds: []string{"WatchSink", "ClusterWatchSink"},
			statuses: []string{"Healthy", "Progressing", "Degraded"}},
	}
}

// apiKinds makes an empty object of each kind a fixture may be, and says whether the kind
// is namespaced.
var apiKinds = map[string]struct {
	object     func() metav1.Object
	namespaced bool
}{
	"WatchSubscription": {func() metav1.Object { return &notifyv1.WatchSubscription{} }, true},
	"WatchSink":         {func() metav1.Object { return &notifyv1.WatchSink{} }, true},
	"ClusterWatchSink":  {func() metav1.Object { return &notifyv1.ClusterWatchSink{} }, false},
}

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

// scriptIn is the health.lua in folder.
func scriptIn(t *testing.T, folder string) string {
	t.Helper()
	return string(readFile(t, filepath.Join(folder, "health.lua")))
}

// script is the WatchSubscription check, sinkScript the WatchSink and ClusterWatchSink one.
func script(t *testing.T) string     { t.Helper(); return scriptIn(t, dir()) }
func sinkScript(t *testing.T) string { t.Helper(); return scriptIn(t, filepath.Join(dir(), "sinks")) }

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

// loadObject reads a fixture, which must be one of kinds, and returns its kind and the
// object as Argo CD holds it.
func loadObject(t *testing.T, path string, kinds []string) (string, map[string]any) {
	t.Helper()
	data := readFile(t, path)
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(data, &tm); err != nil {
		t.Fatal(err)
	}
	if tm.APIVersion != notifyv1.GroupVersion.String() || !slices.Contains(kinds, tm.Kind) {
		t.Fatalf("%s is a %s %s, want a %s one of %q", path, tm.APIVersion, tm.Kind, notifyv1.GroupVersion, kinds)
	}
	// The fixture must be an object of its kind as the API defines it, field for field.
	kind := apiKinds[tm.Kind]
	typed := kind.object()
	if err := yaml.UnmarshalStrict(data, typed); err != nil {
		t.Fatalf("%s is not a valid %s: %v", path, tm.Kind, err)
	}
	if namespaced := typed.GetNamespace() != ""; namespaced != kind.namespaced {
		t.Fatalf("%s: a %s with namespace %q", path, tm.Kind, typed.GetNamespace())
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
	return tm.Kind, obj.Object
}

func TestHealthScriptCases(t *testing.T) {
	for _, check := range healthChecks() {
		t.Run(check.name, func(t *testing.T) { testHealthScriptCases(t, check) })
	}
}

func testHealthScriptCases(t *testing.T, check healthCheck) {
	var cases healthTests
	if err := yaml.UnmarshalStrict(readFile(t, filepath.Join(check.dir, "health_test.yaml")), &cases); err != nil {
		t.Fatal(err)
	}
	src := scriptIn(t, check.dir)
	covered := map[string]bool{}
	kinds := map[string]bool{}
	used := map[string]bool{}
	for _, tc := range cases.Tests {
		covered[tc.HealthStatus.Status] = true
		used[filepath.Clean(tc.InputPath)] = true
		t.Run(strings.TrimSuffix(filepath.Base(tc.InputPath), ".yaml"), func(t *testing.T) {
			kind, obj := loadObject(t, filepath.Join(check.dir, tc.InputPath), check.kinds)
			kinds[kind] = true
			got, err := runHealth(obj, src)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.HealthStatus {
				t.Errorf("got %+v, want %+v", got, tc.HealthStatus)
			}
		})
	}
	for _, status := range check.statuses {
		if !covered[status] {
			t.Errorf("no case in health_test.yaml expects %s", status)
		}
	}
	for _, kind := range check.kinds {
		if !kinds[kind] {
			t.Errorf("no case in health_test.yaml is a %s", kind)
		}
	}
	fixtures, err := filepath.Glob(filepath.Join(check.dir, "testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fixtures {
		if rel, _ := filepath.Rel(check.dir, f); !used[rel] {
			t.Errorf("%s is not listed in health_test.yaml", rel)
		}
	}
}

// oddCase is an object, in YAML, and the health the script must give it.
type oddCase struct {
	obj  string
	want healthStatus
}

// runOddCases runs objects the fixtures do not show: odd shapes must give a status, never a
// Lua error.
func runOddCases(t *testing.T, src string, cases map[string]oddCase) {
	t.Helper()
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

func TestHealthScriptOddObjects(t *testing.T) {
	runOddCases(t, script(t), map[string]oddCase{
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
	})
}

// Sink objects the operator does not write (Ready=Unknown, Ready without Delivering, a stale
// Delivering condition, conditions without reason or message) still get a health.
func TestSinkHealthScriptOddObjects(t *testing.T) {
	const ready = `{type: Ready, status: "True", reason: Valid, message: valid, observedGeneration: 2}`
	status := func(conditions ...string) string {
		return `{metadata: {generation: 2}, status: {observedGeneration: 2, conditions: [` +
			strings.Join(conditions, ", ") + `]}}`
	}
	runOddCases(t, sinkScript(t), map[string]oddCase{
		"empty object": {`{}`, healthStatus{"Progressing", "Waiting for the operator to report status"}},
		"empty status": {`{metadata: {generation: 1}, status: {}}`,
			healthStatus{"Progressing", "Waiting for the operator to observe generation 1"}},
		"delivering only": {status(`{type: Delivering, status: "True", reason: Delivering, message: m}`),
			healthStatus{"Progressing", "Waiting for the Ready condition"}},
		"ready unknown": {status(`{type: Ready, status: Unknown, reason: Checking, message: m}`),
			healthStatus{"Progressing", "Checking: m"}},
		"ready without delivering": {status(ready), healthStatus{"Healthy", "valid"}},
		"stale delivering": {status(ready, `{type: Delivering, status: "True", reason: Delivering, message: m, `+
			`observedGeneration: 1}`), healthStatus{"Progressing", "Waiting for the operator to observe generation 2"}},
		"delivering without message": {status(ready, `{type: Delivering, status: Unknown, reason: Unused}`),
			healthStatus{"Healthy", "valid"}},
		"ready false without message": {status(`{type: Ready, status: "False", reason: InvalidSink}`),
			healthStatus{"Degraded", "InvalidSink"}},
		"ready false without reason": {status(`{type: Ready, status: "False", message: m}`),
			healthStatus{"Degraded", "m"}},
		"ready false before delivering false": {status(`{type: Ready, status: "False", reason: InvalidSink, message: a}`,
			`{type: Delivering, status: "False", reason: DeliveryFailing, message: b}`),
			healthStatus{"Degraded", "InvalidSink: a"}},
		"no observedGeneration in conditions": {`{metadata: {generation: 2}, status: {observedGeneration: 2, ` +
			`conditions: [{type: Ready, status: "True", reason: Valid}, {type: Delivering, status: "True", message: m}]}}`,
			healthStatus{"Healthy", "m"}},
		"suspend is not a sink field": {`{metadata: {generation: 1}, spec: {suspend: true}, status: {}}`,
			healthStatus{"Progressing", "Waiting for the operator to observe generation 1"}},
	})
}

// The argocd-cm snippet and the docs carry the scripts verbatim, each under the key of every
// kind it checks, and nothing else.
func TestHealthScriptCopiesAgree(t *testing.T) {
	checks := healthChecks()
	want := map[string]string{}
	scripts := make([]string, 0, len(checks))
	for _, check := range checks {
		src := scriptIn(t, check.dir)
		scripts = append(scripts, src)
		for _, kind := range check.kinds {
			want[configMapKey(kind)] = src
		}
	}
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict(readFile(t, filepath.Join(dir(), "argocd-cm.yaml")), &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Name != "argocd-cm" || cm.Kind != "ConfigMap" {
		t.Errorf("argocd-cm.yaml holds %s %s", cm.Kind, cm.Name)
	}
	for _, problem := range compareScripts(cm.Data, want) {
		t.Errorf("argocd-cm.yaml: %s", problem)
	}

	doc := string(readFile(t, filepath.Join(testenv.RepoRoot(), "docs", "argocd.md")))
	blocks := regexp.MustCompile("(?s)```lua\n(.*?)```").FindAllStringSubmatch(doc, -1)
	if len(blocks) != len(scripts) {
		t.Fatalf("docs/argocd.md has %d lua blocks, want %d", len(blocks), len(scripts))
	}
	for i, check := range checks {
		if blocks[i][1] != scripts[i] {
			t.Errorf("lua block %d in docs/argocd.md differs from %s", i+1, filepath.Join(check.dir, "health.lua"))
		}
	}
	found := false
	for _, block := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(doc, -1) {
		var docCM corev1.ConfigMap
		if yaml.Unmarshal([]byte(block[1]), &docCM) != nil || docCM.Kind != "ConfigMap" || docCM.Name != "argocd-cm" {
			continue
		}
		found = true
		for _, problem := range compareScripts(docCM.Data, want) {
			t.Errorf("the argocd-cm in docs/argocd.md: %s", problem)
		}
	}
	if !found {
		t.Errorf("docs/argocd.md shows no argocd-cm")
	}
}

// compareScripts says how data differs from want, key by key.
func compareScripts(data, want map[string]string) []string {
	var problems []string
	for key, src := range want {
		got, ok := data[key]
		switch {
		case !ok:
			problems = append(problems, "no key "+key)
		case got != src:
			problems = append(problems, key+" differs from the script")
		}
	}
	for key := range data {
		if _, ok := want[key]; !ok {
			problems = append(problems, "unexpected key "+key)
		}
	}
	slices.Sort(problems)
	return problems
}
