package monitoring

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"

	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

func repo(parts ...string) string {
	return filepath.Join(append([]string{testenv.RepoRoot()}, parts...)...)
}

// query is one PromQL expression of an asset, and where it is.
type query struct {
	where, expr string
}

// alertRule is a rule of config/prometheus/alerts.yaml, as the Prometheus Operator reads it.
type alertRule struct {
	Alert       string            `json:"alert"`
	Record      string            `json:"record"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

func alertRules(t *testing.T) []alertRule {
	t.Helper()
	data, err := os.ReadFile(repo("config", "prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		APIVersion string         `json:"apiVersion"`
		Kind       string         `json:"kind"`
		Metadata   map[string]any `json:"metadata"`
		Spec       struct {
			Groups []struct {
				Name  string      `json:"name"`
				Rules []alertRule `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.UnmarshalStrict(data, &doc); err != nil {
		t.Fatalf("config/prometheus/alerts.yaml: %v", err)
	}
	if doc.Kind != "PrometheusRule" || len(doc.Spec.Groups) == 0 {
		t.Fatalf("config/prometheus/alerts.yaml is not a PrometheusRule with groups")
	}
	var rules []alertRule
	for _, g := range doc.Spec.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

// queries are every PromQL expression of the rules and the dashboard (panel targets and
// the expressions inside its label_values variables), Grafana's variables replaced by
// values of their kind.
func queries(t *testing.T) []query {
	t.Helper()
	var out []query
	for _, r := range alertRules(t) {
		out = append(out, query{"alert " + r.Alert, r.Expr})
	}
	data, err := os.ReadFile(repo("config", "grafana", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("config/grafana/dashboard.json: %v", err)
	}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out = append(out, query{fmt.Sprintf("panel %q target %s", p.Title, tg.RefID), grafanaToPromQL(tg.Expr)})
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		inner := labelValues.FindStringSubmatch(q)
		if inner == nil {
			t.Errorf("dashboard variable %s: query %q is not label_values(<selector>, <label>)", v.Name, q)
			continue
		}
		out = append(out, query{"variable " + v.Name, grafanaToPromQL(inner[1])})
	}
	return out
}

type panel struct {
	Title   string `json:"title"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

var (
	labelValues = regexp.MustCompile(`^label_values\((.+),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$`)
	grafanaVar  = regexp.MustCompile(`\$\{?(\w+)\}?`)
)

// grafanaToPromQL replaces Grafana's variables: its intervals by a duration, the
// dashboard's (used in label matchers) by a value.
func grafanaToPromQL(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		if strings.HasPrefix(strings.Trim(v, "${}"), "__") {
			return "5m"
		}
		return "x"
	})
}

var promql = parser.NewParser(parser.Options{})

// metricNames are the metric names a parsed expression selects.
func metricNames(expr parser.Expr) []string {
	var names []string
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		if vs, ok := node.(*parser.VectorSelector); ok {
			name := vs.Name
			for _, m := range vs.LabelMatchers {
				if m.Name == model.MetricNameLabel {
					name = m.Value
				}
			}
			names = append(names, name)
		}
		return nil
	})
	return names
}

// TestRulesAndDashboardParse parses every expression with Prometheus' own parser.
func TestRulesAndDashboardParse(t *testing.T) {
	qs := queries(t)
	if len(qs) < 10 {
		t.Fatalf("only %d expressions found in the rules and the dashboard", len(qs))
	}
	for _, q := range qs {
		expr, err := promql.ParseExpr(q.expr)
		if err != nil {
			t.Errorf("%s: %v\n%s", q.where, err, q.expr)
			continue
		}
		if len(metricNames(expr)) == 0 {
			t.Errorf("%s selects no metric: %s", q.where, q.expr)
		}
	}
}

// TestAlertRules: each alert has a valid for, a severity, a summary and description whose
// templates parse, and a runbook that is a section of docs/troubleshooting.md.
func TestAlertRules(t *testing.T) {
	doc, err := os.ReadFile(repo("docs", "troubleshooting.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := markdownAnchors(string(doc))
	const runbooks = "https://github.com/dynamic-notifier/dynamic-notifier/blob/main/docs/troubleshooting.md#"
	// The template functions the annotations use, as Prometheus defines them.
	funcs := template.FuncMap{"humanize": fmt.Sprint, "humanizePercentage": fmt.Sprint}
	seen := map[string]bool{}
	for _, r := range alertRules(t) {
		if r.Alert == "" {
			t.Errorf("rule %q is not an alert", r.Record)
			continue
		}
		if seen[r.Alert] {
			t.Errorf("alert %s is defined twice", r.Alert)
		}
		seen[r.Alert] = true
		if r.For != "" {
			if _, err := model.ParseDuration(r.For); err != nil {
				t.Errorf("alert %s: for: %v", r.Alert, err)
			}
		}
		if !slices.Contains([]string{"critical", "warning", "info"}, r.Labels["severity"]) {
			t.Errorf("alert %s: severity %q", r.Alert, r.Labels["severity"])
		}
		for _, key := range []string{"summary", "description"} {
			text := r.Annotations[key]
			if text == "" {
				t.Errorf("alert %s has no %s", r.Alert, key)
			}
			// Prometheus defines these variables before the annotation's text.
			const header = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}" +
				"{{$externalURL := .ExternalURL}}{{$value := .Value}}"
			tmpl, err := template.New(key).Funcs(funcs).Option("missingkey=error").Parse(header + text)
			if err != nil {
				t.Errorf("alert %s: %s: %v", r.Alert, key, err)
				continue
			}
			data := map[string]any{"Labels": sampleLabels, "ExternalLabels": map[string]string{},
				"ExternalURL": "", "Value": 0.5}
			if err := tmpl.Execute(io.Discard, data); err != nil {
				t.Errorf("alert %s: %s: %v", r.Alert, key, err)
			}
		}
		url := r.Annotations["runbook_url"]
		anchor, ok := strings.CutPrefix(url, runbooks)
		if !ok {
			t.Errorf("alert %s: runbook_url %q is not a section of docs/troubleshooting.md", r.Alert, url)
			continue
		}
		if !anchors[anchor] {
			t.Errorf("alert %s: docs/troubleshooting.md has no section #%s", r.Alert, anchor)
		}
		if anchor != strings.ToLower(r.Alert) {
			t.Errorf("alert %s: its runbook is #%s, not its own section", r.Alert, anchor)
		}
	}
}

// sampleLabels are the labels the alerts' annotations may name: those of their series.
var sampleLabels = map[string]string{"namespace": "team-a", "subscription": "s", "pod": "p",
	"group": "apps", "version": "v1", "resource": "deployments", "scope": "*"}

// markdownAnchors are the anchors GitHub gives the headings of a Markdown document:
// lowercased, punctuation other than - and _ dropped, spaces turned into -.
func markdownAnchors(doc string) map[string]bool {
	anchors := map[string]bool{}
	inCode := false
	for line := range strings.SplitSeq(doc, "\n") {
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
		}
		if inCode || !strings.HasPrefix(line, "#") {
			continue
		}
		heading := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(heading) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
				b.WriteRune(r)
			}
		}
		anchors[b.String()] = true
	}
	return anchors
}

func TestMarkdownAnchors(t *testing.T) {
	got := markdownAnchors("# Troubleshooting\n## When Ready is True but nothing arrives\n```sh\n# not a heading\n```\n" +
		"### DynamicNotifierDown\n## `kubectl` and Argo CD\n")
	for _, want := range []string{"troubleshooting", "when-ready-is-true-but-nothing-arrives", "dynamicnotifierdown",
		"kubectl-and-argo-cd"} {
		if !got[want] {
			t.Errorf("no anchor %q in %v", want, got)
		}
	}
	if got["not-a-heading"] {
		t.Errorf("a comment in a code block was taken for a heading")
	}
}
