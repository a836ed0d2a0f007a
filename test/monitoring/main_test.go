// Package monitoring tests the operator's metrics against what is built on them: the alerting
// rules (config/prometheus/alerts.yaml) and the Grafana dashboard (config/grafana/dashboard.json)
// parse as PromQL and name only metrics a running operator exports; the metrics endpoint
// passes promlint; every counter of a subscription's status has a metric that counts the
// same; a deleted subscription's series leave the endpoint.
package monitoring

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/operator"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

var (
	cfg *rest.Config
	k8s client.Client
	// operatorLog is the operator's log, shown when a test fails.
	operatorLog = &testenv.Buffer{}
)

// readerRole may list and watch everything; tests bind it to their subscriptions'
// ServiceAccount (the operator runs with its default, SubjectAccessReview).
const readerRole = "test-subscription-reader"

func TestMain(m *testing.M) {
	ctrl.SetLogger(zap.New(zap.WriteTo(operatorLog)))
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = notifyv1.AddToScheme(scheme)
	_ = apiextensionsv1.AddToScheme(scheme)
	testenv.Main(m, func(_ *envtest.Environment, c *rest.Config) (err error) {
		cfg = c
		if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
			return err
		}
		return k8s.Create(context.Background(), &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: readerRole},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"list", "watch"}}}})
	})
}

// startOperator runs the operator in a manager whose metrics server (controller-runtime's, as
// the binary's, in plain HTTP on a loopback port) serves its registry, until the test ends.
// It returns the metrics endpoint's URL.
func startOperator(t *testing.T) string {
	t.Helper()
	mgr, err := operator.NewEmbeddedManager(cfg)
	if err != nil {
		t.Fatalf("manager: %v", err)
	}
	if _, err := operator.Setup(mgr, operator.Options{StatusInterval: 200 * time.Millisecond}); err != nil {
		t.Fatalf("operator: %v", err)
	}
	srv, err := metricsserver.NewServer(metricsserver.Options{BindAddress: "127.0.0.1:0"}, cfg, mgr.GetHTTPClient())
	if err != nil {
		t.Fatalf("metrics server: %v", err)
	}
	bound, ok := srv.(interface{ GetBindAddr() string })
	if !ok {
		t.Fatalf("controller-runtime's metrics server %T no longer tells its address", srv)
	}
	if err := mgr.Add(srv); err != nil {
		t.Fatal(err)
	}
	// Registered first, so it runs after the manager has stopped.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("operator log:\n%s", tail(operatorLog.String(), 200))
		}
	})
	testenv.RunManager(t, mgr)
	var addr string
	deadline := time.Now().Add(30 * time.Second)
	for addr = bound.GetBindAddr(); addr == ""; addr = bound.GetBindAddr() {
		if time.Now().After(deadline) {
			t.Fatal("the metrics server did not listen within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "http://" + addr + "/metrics"
}

func tail(s string, lines int) string {
	all := strings.Split(s, "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

// fetchMetrics reads the metrics endpoint as Prometheus does (text format), returning the
// raw body and its families by name.
func fetchMetrics(url string) ([]byte, map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, nil, fmt.Errorf("the metrics endpoint's answer does not parse: %w", err)
	}
	return body, families, nil
}

// scrape is fetchMetrics, failing the test on an error.
func scrape(t *testing.T, url string) ([]byte, map[string]*dto.MetricFamily) {
	t.Helper()
	body, families, err := fetchMetrics(url)
	if err != nil {
		t.Fatalf("scraping: %v", err)
	}
	return body, families
}

// scrapeIn is scrape within Eventually.
func scrapeIn(g Gomega, url string) map[string]*dto.MetricFamily {
	_, families, err := fetchMetrics(url)
	g.Expect(err).NotTo(HaveOccurred(), "scraping")
	return families
}

// sum adds the values of the family's series whose labels include want (counters and
// gauges), and tells whether there was any.
func sum(families map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := families[name]
	if !ok {
		return 0, false
	}
	total, found := 0.0, false
	for _, m := range f.GetMetric() {
		if !hasLabels(m, want) {
			continue
		}
		found = true
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Histogram != nil:
			total += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return total, found
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
			n++
		}
	}
	return n == len(want)
}

// seriesOf lists the series of every family that carry these labels, as name{labels}.
func seriesOf(families map[string]*dto.MetricFamily, want map[string]string) []string {
	var out []string
	for name, f := range families {
		for _, m := range f.GetMetric() {
			if hasLabels(m, want) {
				out = append(out, fmt.Sprintf("%s%v", name, m.GetLabel()))
			}
		}
	}
	return out
}
