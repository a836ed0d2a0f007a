package install

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// The monitoring assets under config/ (ServiceMonitor, PrometheusRule, Grafana dashboard) as
// the chart and the bundle install them. test/monitoring checks their PromQL against the
// operator's metrics; this checks that what is installed is them, and that the ServiceMonitor
// scrapes the metrics Service under the job the alerts select.

const dashboardLabel = "grafana_dashboard"

func TestHelmChartMonitoring(t *testing.T) {
	cases := []struct{ name, values string }{
		{"secure", `{metrics: {serviceMonitor: {enabled: true}, prometheusRule: {enabled: true, labels: {release: prom}},
  grafanaDashboard: {enabled: true, annotations: {grafana_folder: Operators}}}}`},
		{"plain HTTP", `{metrics: {secure: false, port: 8080, serviceMonitor: {enabled: true},
  prometheusRule: {enabled: true}, grafanaDashboard: {enabled: true, namespace: grafana}}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := renderChart(t, tc.values)
			if err != nil {
				t.Fatal(err)
			}
			applyAll(t, objs)
			checkMonitoring(t, objs)
			secure := tc.name == "secure"
			ep := endpoint(t, objs)
			scheme := map[bool]string{true: "https", false: "http"}[secure]
			if _, hasTLS := ep["tlsConfig"]; hasTLS != secure || ep["scheme"] != scheme {
				t.Errorf("secure=%v, but the ServiceMonitor's endpoint is %v", secure, ep)
			}
			if _, hasToken := ep["bearerTokenFile"]; hasToken != secure {
				t.Errorf("secure=%v, but the ServiceMonitor's endpoint is %v", secure, ep)
			}
			cm := dashboardConfigMap(t, objs)
			if secure {
				if cm.GetNamespace() != chartNamespace || cm.GetAnnotations()["grafana_folder"] != "Operators" {
					t.Errorf("dashboard ConfigMap %s: annotations %v", describe(cm), cm.GetAnnotations())
				}
				if only(objs, "PrometheusRule")[0].GetLabels()["release"] != "prom" {
					t.Errorf("metrics.prometheusRule.labels not on the PrometheusRule")
				}
			} else if cm.GetNamespace() != "grafana" {
				t.Errorf("dashboard ConfigMap %s, want it in metrics.grafanaDashboard.namespace grafana", describe(cm))
			}
		})
	}
	t.Run("off by default", func(t *testing.T) {
		objs, err := renderChart(t, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, kind := range []string{"ServiceMonitor", "PrometheusRule", "ConfigMap"} {
			if n := len(only(objs, kind)); n != 0 {
				t.Errorf("the chart's defaults render %d %s", n, kind)
			}
		}
	})
}

// TestKustomizeMonitoring builds config/default with the [PROMETHEUS] and [GRAFANA] lines
// uncommented, as docs/install.md tells users to.
func TestKustomizeMonitoring(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(repo("config"))); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "default", "kustomization.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, line := range []string{"#- ../prometheus\n", "#- ../grafana\n"} {
		if !strings.Contains(text, line) {
			t.Fatalf("config/default/kustomization.yaml has no line %q to uncomment", line)
		}
		text = strings.Replace(text, line, line[1:], 1)
	}
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	objs := kustomizeBuild(t, filepath.Join(dir, "default"))
	applyAll(t, objs)
	checkMonitoring(t, objs)
	for _, o := range objs {
		if k := o.GetKind(); (k == "ServiceMonitor" || k == "PrometheusRule" || k == "ConfigMap") &&
			o.GetNamespace() != "dynamic-notifier-system" {
			t.Errorf("%s is not in the operator's namespace", describe(o))
		}
	}
}

// checkMonitoring: one ServiceMonitor, scraping the metrics Service under the job the alerts
// select and keeping the metrics' namespace label; the PrometheusRule is
// config/prometheus/alerts.yaml's; the dashboard ConfigMap holds config/grafana/dashboard.json.
func checkMonitoring(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	monitors := only(objs, "ServiceMonitor")
	if len(monitors) != 1 {
		t.Fatalf("%d ServiceMonitors, want 1", len(monitors))
	}
	source := readYAML(t, repo("config", "prometheus", "monitor.yaml"))
	jobLabel, _, _ := unstructured.NestedString(monitors[0].Object, "spec", "jobLabel")
	if want, _, _ := unstructured.NestedString(source, "spec", "jobLabel"); jobLabel == "" || jobLabel != want {
		t.Errorf("ServiceMonitor jobLabel %q, want config/prometheus/monitor.yaml's %q", jobLabel, want)
	}
	ep := endpoint(t, objs)
	if ep["honorLabels"] != true || ep["path"] != "/metrics" {
		t.Errorf("ServiceMonitor endpoint %v: want honorLabels (the series' own namespace label) and /metrics", ep)
	}

	selector, _, _ := unstructured.NestedStringMap(monitors[0].Object, "spec", "selector", "matchLabels")
	var services []*unstructured.Unstructured
	for _, svc := range only(objs, "Service") {
		if svc.GetNamespace() == monitors[0].GetNamespace() && matches(selector, svc.GetLabels()) {
			services = append(services, svc)
		}
	}
	if len(services) != 1 {
		t.Fatalf("the ServiceMonitor's selector %v picks %d Services, want the metrics Service", selector, len(services))
	}
	ports, _, _ := unstructured.NestedSlice(services[0].Object, "spec", "ports")
	if !slices.ContainsFunc(ports, func(p any) bool { return p.(map[string]any)["name"] == ep["port"] }) {
		t.Errorf("the ServiceMonitor scrapes port %v, which %s does not have", ep["port"], describe(services[0]))
	}

	rules := only(objs, "PrometheusRule")
	if len(rules) != 1 {
		t.Fatalf("%d PrometheusRules, want 1", len(rules))
	}
	alerts := readYAML(t, repo("config", "prometheus", "alerts.yaml"))
	if !equality.Semantic.DeepEqual(rules[0].Object["spec"], alerts["spec"]) {
		t.Errorf("the PrometheusRule's spec is not config/prometheus/alerts.yaml's")
	}
	// The job the alerts select is the one the ServiceMonitor gives the scrape.
	raw, err := os.ReadFile(repo("config", "prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	jobs := regexp.MustCompile(`job="([^"]*)"`).FindAllStringSubmatch(string(raw), -1)
	if len(jobs) == 0 {
		t.Fatal("config/prometheus/alerts.yaml selects no job")
	}
	for _, j := range jobs {
		if got := services[0].GetLabels()[jobLabel]; got != j[1] {
			t.Errorf("alerts select job %q, the ServiceMonitor names the job %q (label %s of %s)",
				j[1], got, jobLabel, describe(services[0]))
		}
	}

	cm := dashboardConfigMap(t, objs)
	want, err := os.ReadFile(repo("config", "grafana", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got, wantJSON any
	data, _, _ := unstructured.NestedString(cm.Object, "data", "dynamic-notifier.json")
	if err := json.Unmarshal([]byte(data), &got); err != nil {
		t.Fatalf("%s: dynamic-notifier.json: %v", describe(cm), err)
	}
	if err := json.Unmarshal(want, &wantJSON); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(got, wantJSON) {
		t.Errorf("%s does not hold config/grafana/dashboard.json", describe(cm))
	}
}

func endpoint(t *testing.T, objs []*unstructured.Unstructured) map[string]any {
	t.Helper()
	eps, _, _ := unstructured.NestedSlice(only(objs, "ServiceMonitor")[0].Object, "spec", "endpoints")
	if len(eps) != 1 {
		t.Fatalf("ServiceMonitor has %d endpoints, want 1", len(eps))
	}
	return eps[0].(map[string]any)
}

func dashboardConfigMap(t *testing.T, objs []*unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	var found []*unstructured.Unstructured
	for _, cm := range only(objs, "ConfigMap") {
		if cm.GetLabels()[dashboardLabel] == "1" {
			found = append(found, cm)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d ConfigMaps labelled %s: \"1\", want 1", len(found), dashboardLabel)
	}
	return found[0]
}

func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func readYAML(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return out
}
