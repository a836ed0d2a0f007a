package v1alpha1_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

var (
	k8s client.Client
	env *envtest.Environment
)

func TestMain(m *testing.M) {
	testenv.Main(m, func(e *envtest.Environment, cfg *rest.Config) (err error) {
		env = e
		scheme := runtime.NewScheme()
		_ = clientgoscheme.AddToScheme(scheme)
		_ = notifyv1.AddToScheme(scheme)
		k8s, err = client.New(cfg, client.Options{Scheme: scheme})
		return err
	})
}

// subscription builds a WatchSubscription from a YAML spec fragment.
func subscription(t *testing.T, spec string) *unstructured.Unstructured {
	t.Helper()
	obj := map[string]any{}
	if err := yaml.Unmarshal([]byte(spec), &obj); err != nil {
		t.Fatalf("bad test spec: %v", err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "notify.dynamicnotifier.io/v1alpha1",
		"kind":       "WatchSubscription",
		"metadata":   map[string]any{"name": "s", "namespace": "default"},
		"spec":       obj,
	}}
	return u
}

func dryRunCreate(obj client.Object) error {
	return k8s.Create(context.Background(), obj, client.DryRunAll)
}

const okResource = "resource: {version: v1, resource: configmaps}\n"
const okSink = "sink: {log: {}}\n"

func TestValidSpecsAreAccepted(t *testing.T) {
	cases := map[string]string{
		"minimal":             okResource + okSink,
		"core group explicit": "resource: {group: '', version: v1, resource: configmaps}\n" + okSink,
		"dotted group":        "resource: {group: apps, version: v1, resource: deployments}\n" + okSink,
		"crd group":           "resource: {group: stable.example.com, version: v1beta1, resource: crontabs}\n" + okSink,
		"subresource syntax":  "resource: {version: v1, resource: pods/log}\n" + okSink,
		"all namespaces":      okResource + okSink + "namespaces: ['*']\n",
		"namespace list":      okResource + okSink + "namespaces: [default, team-a]\n",
		"event types":         okResource + okSink + "eventTypes: [Added, Deleted]\n",
		"https webhook":       okResource + "sink: {webhook: {url: 'https://hooks.example.com:8443/x?y=1'}}\n",
		"http loopback":       okResource + "sink: {webhook: {url: 'http://127.0.0.1:8080/events'}}\n",
		"selector":            okResource + okSink + "selector: {matchLabels: {a: b}, matchExpressions: [{key: x, operator: In, values: [v1]}, {key: z, operator: Exists}]}\n",
		"field selector":      okResource + okSink + "fieldSelector: metadata.name=settings\n",
		"flags":               okResource + okSink + "sendInitialEvents: true\nsuspend: true\n",
		"empty delivery":      okResource + okSink + "delivery: {}\n",
		"filters and payload": okResource + okSink + "filter: 'object.metadata.name == \"x\"'\n" +
			"ignore: {statusOnly: true, metadataOnly: true}\npayload: {mode: Metadata, includeOldObject: true, includeChangedPaths: true}\n",
		"full delivery": okResource + okSink + "delivery: {timeout: 2.5s, maxQueueSize: 5000, parallelism: 8, " +
			"retry: {maxAttempts: 20, backoff: 500ms, maxBackoff: 2m}, deadLetterSink: {service: {name: dlq, port: 8080}}}\n",
		"service sink": okResource + "sink: {service: {name: hook, namespace: hooks, port: 8443, path: /events, " +
			"contentMode: structured, headersFrom: {secretRef: {name: hook-auth}}, tls: {caSecretRef: {name: hook-ca, key: ca.pem}}}}\n",
		"batched webhook":           okResource + "sink: {webhook: {url: 'http://a.example', contentMode: batched}}\n",
		"batched service capped":    okResource + "sink: {service: {name: hook, contentMode: batched, maxBatchSize: 1000}}\n",
		"sink by reference":         okResource + "sinkRef: {name: team-hook}\n",
		"cluster sink by reference": okResource + "sinkRef: {kind: ClusterWatchSink, name: chat}\n",
		"url from a Secret":         okResource + "sink: {webhook: {urlFrom: {secretKeyRef: {name: slack, key: url}}}}\n",
		"noise control": okResource + okSink + "delivery: {coalesce: {window: 1s}, rateLimit: {eventsPerSecond: 5, burst: 20}}\n" +
			"filter: '\"spec.replicas\" in changes'\n",
		"client certificate": okResource + "sink: {webhook: {url: 'https://a.example', tls: {certSecretRef: {name: client-tls}}}}\n",
		"template":           okResource + okSink + "payload: {template: '{\"text\": object.metadata.name}', contentType: 'application/json; charset=utf-8'}\n",
		// Empty lists and objects mean the same as absent ones (explicit MinItems=0 and
		// MinProperties=0, for kube-api-linter).
		"empty lists and objects": okResource + okSink + "namespaces: []\neventTypes: []\nignore: {}\npayload: {}\n" +
			"delivery: {retry: {}}\n",
		"empty tls": okResource + "sink: {webhook: {url: 'https://a.example', tls: {}}}\n",
		"kafka sink": okResource + "sink: {kafka: {brokers: ['kafka-0.kafka.messaging:9092', '10.0.0.7:9093', '[::1]:9094'], " +
			"topic: k8s.events_v1-x, contentMode: structured, tls: {caSecretRef: {name: kafka-ca}}, " +
			"sasl: {mechanism: SCRAM-SHA-512, secretRef: {name: kafka-user}}}}\n",
		"minimal kafka sink": okResource + "sink: {kafka: {brokers: ['kafka:9092'], topic: events}}\n",
		"nats sink": okResource + "sink: {nats: {servers: ['nats://nats.messaging:4222', 'tls://nats-1.messaging'], " +
			"subject: 'k8s.{namespace}.{resource}.{name}.{type}', contentMode: binary, tls: {insecureSkipVerify: true}, " +
			"credentials: {secretRef: {name: nats-user}}}}\n",
		"minimal nats sink":      okResource + "sink: {nats: {servers: ['nats://127.0.0.1']}}\n",
		"kafka dead-letter sink": okResource + okSink + "delivery: {deadLetterSink: {kafka: {brokers: ['127.0.0.1:9092'], topic: dlq}}}\n",
		"nats dead-letter sink":  okResource + okSink + "delivery: {deadLetterSink: {nats: {servers: ['nats://127.0.0.1:4222'], subject: dlq}}}\n",
	}
	for name, spec := range cases {
		t.Run(name, func(t *testing.T) {
			NewWithT(t).Expect(dryRunCreate(subscription(t, spec))).To(Succeed())
		})
	}
}

func TestInvalidSpecsAreRejectedNamingTheField(t *testing.T) {
	cases := []struct {
		name, spec, field string
	}{
		{"missing resource", okSink, "spec.resource"},
		{"missing version", "resource: {resource: configmaps}\n" + okSink, "spec.resource.version"},
		{"missing resource name", "resource: {version: v1}\n" + okSink, "spec.resource.resource"},
		{"upper-case resource", "resource: {version: v1, resource: ConfigMaps}\n" + okSink, "spec.resource.resource"},
		{"resource with dots", "resource: {version: v1, resource: config.maps}\n" + okSink, "spec.resource.resource"},
		{"upper-case group", "resource: {group: Apps, version: v1, resource: deployments}\n" + okSink, "spec.resource.group"},
		{"group with underscore", "resource: {group: my_group, version: v1, resource: x}\n" + okSink, "spec.resource.group"},
		{"bad version", "resource: {version: V1, resource: configmaps}\n" + okSink, "spec.resource.version"},
		{"too long resource", "resource: {version: v1, resource: " + strings.Repeat("a", 128) + "}\n" + okSink, "spec.resource.resource"},
		{"unknown event type", okResource + okSink + "eventTypes: [Created]\n", "spec.eventTypes[0]"},
		{"duplicate event type", okResource + okSink + "eventTypes: [Added, Added]\n", "spec.eventTypes[1]"},
		{"missing sink", okResource, "spec.sink"},
		{"empty sink", okResource + "sink: {}\n", "spec.sink"},
		{"two sinks", okResource + "sink: {log: {}, webhook: {url: 'http://a.example'}}\n", "spec.sink"},
		{"relative url", okResource + "sink: {webhook: {url: /events}}\n", "spec.sink.webhook.url"},
		{"ftp url", okResource + "sink: {webhook: {url: 'ftp://a.example/x'}}\n", "spec.sink.webhook.url"},
		{"url without host", okResource + "sink: {webhook: {url: 'http:///x'}}\n", "spec.sink.webhook.url"},
		{"not a url", okResource + "sink: {webhook: {url: 'hooks example com'}}\n", "spec.sink.webhook.url"},
		{"empty url", okResource + "sink: {webhook: {url: ''}}\n", "spec.sink.webhook.url"},
		{"star with others", okResource + okSink + "namespaces: ['*', default]\n", "spec.namespaces"},
		{"bad namespace", okResource + okSink + "namespaces: [Team_A]\n", "spec.namespaces[0]"},
		{"duplicate namespace", okResource + okSink + "namespaces: [a, a]\n", "spec.namespaces[1]"},
		{"too many namespaces", okResource + okSink + "namespaces: [" + manyNamespaces(65) + "]\n", "spec.namespaces"},
		{"bad selector operator", okResource + okSink + "selector: {matchExpressions: [{key: x, operator: Equals, values: [v1]}]}\n", "spec.selector"},
		{"In without values", okResource + okSink + "selector: {matchExpressions: [{key: x, operator: In}]}\n", "spec.selector"},
		{"Exists with values", okResource + okSink + "selector: {matchExpressions: [{key: x, operator: Exists, values: [v1]}]}\n", "spec.selector"},
		{"service and log", okResource + "sink: {log: {}, service: {name: hook}}\n", "spec.sink"},
		{"bad service name", okResource + "sink: {service: {name: Hook_1}}\n", "spec.sink.service.name"},
		{"service path without slash", okResource + "sink: {service: {name: hook, path: events}}\n", "spec.sink.service.path"},
		{"service port zero", okResource + "sink: {service: {name: hook, port: 0}}\n", "spec.sink.service.port"},
		{"unknown content mode", okResource + "sink: {webhook: {url: 'http://a.example', contentMode: batch}}\n", "spec.sink.webhook.contentMode"},
		{"batch size without batched mode", okResource + "sink: {webhook: {url: 'http://a.example', maxBatchSize: 10}}\n", "spec.sink.webhook.maxBatchSize"},
		{"batch size with structured mode", okResource + "sink: {service: {name: hook, contentMode: structured, maxBatchSize: 10}}\n", "spec.sink.service.maxBatchSize"},
		{"batch size zero", okResource + "sink: {webhook: {url: 'http://a.example', contentMode: batched, maxBatchSize: 0}}\n", "spec.sink.webhook.maxBatchSize"},
		{"batch size too large", okResource + "sink: {webhook: {url: 'http://a.example', contentMode: batched, maxBatchSize: 1001}}\n", "spec.sink.webhook.maxBatchSize"},
		// A Sink needs a member (MinProperties=1 besides the exactly-one rule).
		{"empty dead-letter sink in a full spec", okResource + okSink + "delivery: {deadLetterSink: {}, retry: {maxAttempts: 2}}\n", "spec.delivery.deadLetterSink"},
		// Optional strings whose pattern refuses "" also say MinLength=1.
		{"empty service account name", okResource + okSink + "serviceAccountName: ''\n", "spec.serviceAccountName"},
		{"empty service namespace", okResource + "sink: {service: {name: hook, namespace: ''}}\n", "spec.sink.service.namespace"},
		{"empty service path", okResource + "sink: {service: {name: hook, path: ''}}\n", "spec.sink.service.path"},
		{"empty signing key", okResource + "sink: {webhook: {url: 'http://a.example', signingSecretRef: {name: s, key: ''}}}\n", "spec.sink.webhook.signingSecretRef.key"},
		{"empty CA key", okResource + "sink: {webhook: {url: 'https://a.example', tls: {caSecretRef: {name: ca, key: ''}}}}\n", "spec.sink.webhook.tls.caSecretRef.key"},
		{"headers secret without name", okResource + "sink: {webhook: {url: 'http://a.example', headersFrom: {secretRef: {}}}}\n", "spec.sink.webhook.headersFrom.secretRef.name"},
		{"bad timeout", okResource + okSink + "delivery: {timeout: soon}\n", "spec.delivery.timeout"},
		{"zero timeout", okResource + okSink + "delivery: {timeout: 0s}\n", "spec.delivery.timeout"},
		{"backoff above max", okResource + okSink + "delivery: {retry: {backoff: 2m, maxBackoff: 1m}}\n", "spec.delivery.retry.backoff"},
		// Durations Go cannot parse must never be stored: they would fail the decoding of
		// every subscription list.
		{"overflowing backoff", okResource + okSink + "delivery: {retry: {backoff: 9999999h}}\n", "spec.delivery.retry.backoff"},
		{"overflowing max backoff alone", okResource + okSink + "delivery: {retry: {maxBackoff: 9999999h}}\n", "spec.delivery.retry.maxBackoff"},
		{"overflowing timeout", okResource + okSink + "delivery: {timeout: 99999999999999999999s}\n", "spec.delivery.timeout"},
		{"overflowing by parts", okResource + okSink + "delivery: {retry: {maxBackoff: 999999h999999h999999h}}\n", "spec.delivery.retry.maxBackoff"},
		{"zero backoff", okResource + okSink + "delivery: {retry: {backoff: 0s}}\n", "spec.delivery.retry.backoff"},
		{"zero max backoff", okResource + okSink + "delivery: {retry: {maxBackoff: 0ms}}\n", "spec.delivery.retry.maxBackoff"},
		{"long timeout", okResource + okSink + "delivery: {timeout: 2h}\n", "spec.delivery.timeout"},
		{"backoff without unit", okResource + okSink + "delivery: {retry: {backoff: '5'}}\n", "spec.delivery.retry.backoff"},
		{"zero attempts", okResource + okSink + "delivery: {retry: {maxAttempts: 0}}\n", "spec.delivery.retry.maxAttempts"},
		{"queue too small", okResource + okSink + "delivery: {maxQueueSize: 0}\n", "spec.delivery.maxQueueSize"},
		{"too parallel", okResource + okSink + "delivery: {parallelism: 65}\n", "spec.delivery.parallelism"},
		{"zero window", okResource + okSink + "delivery: {coalesce: {window: 0s}}\n", "spec.delivery.coalesce.window"},
		{"window over an hour", okResource + okSink + "delivery: {coalesce: {window: 61m}}\n", "spec.delivery.coalesce.window"},
		{"coalesce without a window", okResource + okSink + "delivery: {coalesce: {}}\n", "spec.delivery.coalesce.window"},
		{"zero rate", okResource + okSink + "delivery: {rateLimit: {eventsPerSecond: 0}}\n", "spec.delivery.rateLimit.eventsPerSecond"},
		{"zero burst", okResource + okSink + "delivery: {rateLimit: {eventsPerSecond: 1, burst: 0}}\n", "spec.delivery.rateLimit.burst"},
		{"empty dead-letter sink", okResource + okSink + "delivery: {deadLetterSink: {}}\n", "spec.delivery.deadLetterSink"},
		{"too long filter", okResource + okSink + "filter: '" + strings.Repeat("a", 4097) + "'\n", "spec.filter"},
		{"unknown payload mode", okResource + okSink + "payload: {mode: Everything}\n", "spec.payload.mode"},
		{"sink and sinkRef", okResource + okSink + "sinkRef: {name: x}\n", "exactly one of sink and sinkRef"},
		{"neither sink nor sinkRef", okResource, "exactly one of sink and sinkRef"},
		{"unknown sink kind", okResource + "sinkRef: {kind: Sink, name: x}\n", "spec.sinkRef.kind"},
		{"url and urlFrom", okResource + "sink: {webhook: {url: 'http://a.example', urlFrom: {secretKeyRef: {name: s, key: url}}}}\n", "spec.sink.webhook"},
		{"urlFrom without key", okResource + "sink: {webhook: {urlFrom: {secretKeyRef: {name: s}}}}\n", "spec.sink.webhook.urlFrom.secretKeyRef.key"},
		{"template with a mode", okResource + okSink + "payload: {template: 'object', mode: Metadata}\n", "payload.template makes the whole body"},
		{"content type without template", okResource + okSink + "payload: {contentType: text/plain}\n", "spec.payload.contentType"},
		{"content type not a media type", okResource + okSink + "payload: {template: 'object', contentType: 'plain text'}\n", "spec.payload.contentType"},
		{"too long field selector", okResource + okSink + "fieldSelector: " + strings.Repeat("a", 1025) + "\n", "spec.fieldSelector"},
		{"kafka and log", okResource + "sink: {log: {}, kafka: {brokers: ['kafka:9092'], topic: t}}\n", "exactly one of webhook, service, log, kafka or nats"},
		{"nats and webhook", okResource + "sink: {webhook: {url: 'http://a.example'}, nats: {servers: ['nats://n']}}\n", "spec.sink"},
		{"empty kafka", okResource + "sink: {kafka: {}}\n", "spec.sink.kafka.brokers"},
		{"kafka without topic", okResource + "sink: {kafka: {brokers: ['kafka:9092']}}\n", "spec.sink.kafka.topic"},
		{"kafka without brokers", okResource + "sink: {kafka: {brokers: [], topic: t}}\n", "spec.sink.kafka.brokers"},
		{"broker without port", okResource + "sink: {kafka: {brokers: ['kafka'], topic: t}}\n", "spec.sink.kafka.brokers[0]"},
		{"broker as a URL", okResource + "sink: {kafka: {brokers: ['kafka:9092', 'kafka://k:9092'], topic: t}}\n", "spec.sink.kafka.brokers[1]"},
		{"duplicate broker", okResource + "sink: {kafka: {brokers: ['kafka:9092', 'kafka:9092'], topic: t}}\n", "spec.sink.kafka.brokers[1]"},
		{"topic with a space", okResource + "sink: {kafka: {brokers: ['kafka:9092'], topic: 'k8s events'}}\n", "spec.sink.kafka.topic"},
		{"topic ..", okResource + "sink: {kafka: {brokers: ['kafka:9092'], topic: '..'}}\n", "spec.sink.kafka.topic"},
		{"too long topic", okResource + "sink: {kafka: {brokers: ['kafka:9092'], topic: " + strings.Repeat("t", 250) + "}}\n", "spec.sink.kafka.topic"},
		{"batched kafka", okResource + "sink: {kafka: {brokers: ['kafka:9092'], topic: t, contentMode: batched}}\n", "spec.sink.kafka.contentMode"},
		{"unknown SASL mechanism", okResource + "sink: {kafka: {brokers: ['kafka:9092'], topic: t, sasl: {mechanism: GSSAPI, secretRef: {name: u}}}}\n", "spec.sink.kafka.sasl.mechanism"},
		{"SASL without a Secret", okResource + "sink: {kafka: {brokers: ['kafka:9092'], topic: t, sasl: {mechanism: PLAIN}}}\n", "spec.sink.kafka.sasl.secretRef"},
		{"kafka client certificate", okResource + "sink: {kafka: {brokers: ['kafka:9092'], topic: t, tls: {certSecretRef: {name: c}}}}\n", "spec.sink.kafka.tls.certSecretRef"},
		{"empty nats", okResource + "sink: {nats: {}}\n", "spec.sink.nats.servers"},
		{"nats http URL", okResource + "sink: {nats: {servers: ['http://nats:4222']}}\n", "spec.sink.nats.servers[0]"},
		{"nats URL with credentials", okResource + "sink: {nats: {servers: ['nats://u:p@nats:4222']}}\n", "spec.sink.nats.servers[0]"},
		{"nats URL without host", okResource + "sink: {nats: {servers: ['nats://:4222']}}\n", "spec.sink.nats.servers[0]"},
		{"nats subject with a wildcard", okResource + "sink: {nats: {servers: ['nats://n'], subject: 'k8s.>'}}\n", "spec.sink.nats.subject"},
		{"empty nats subject", okResource + "sink: {nats: {servers: ['nats://n'], subject: ''}}\n", "spec.sink.nats.subject"},
		{"batched nats", okResource + "sink: {nats: {servers: ['nats://n'], contentMode: batched}}\n", "spec.sink.nats.contentMode"},
		{"nats credentials without a Secret", okResource + "sink: {nats: {servers: ['nats://n'], credentials: {}}}\n", "spec.sink.nats.credentials"},
		{"nats client certificate", okResource + "sink: {nats: {servers: ['nats://n'], tls: {certSecretRef: {name: c}}}}\n", "spec.sink.nats.tls.certSecretRef"},
		{"batched kafka dead-letter sink", okResource + okSink + "delivery: {deadLetterSink: {kafka: {brokers: ['kafka:9092'], topic: t, contentMode: batched}}}\n",
			"spec.delivery.deadLetterSink.kafka.contentMode"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			err := dryRunCreate(subscription(t, tc.spec))
			g.Expect(err).To(HaveOccurred(), "spec was accepted:\n%s", tc.spec)
			g.Expect(err.Error()).To(ContainSubstring(tc.field), "error does not name the field")
		})
	}
}

// TestStatusBounds writes statuses through the status subresource (dry run): the bounds on
// status fields the operator never writes empty or zero (it omits them instead).
func TestStatusBounds(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	obj := subscription(t, okResource+okSink)
	obj.SetName("status-bounds")
	g.Expect(k8s.Create(ctx, obj)).To(Succeed())
	t.Cleanup(func() { _ = k8s.Delete(ctx, obj) })

	ok := map[string]any{"observedGeneration": int64(1), "resource": "v1/configmaps", "sink": "log", "kind": "ConfigMap",
		"conditions": []any{}}
	cases := []struct {
		name, field string
		value       any
	}{
		{"zero observed generation", "observedGeneration", int64(0)},
		{"empty resource", "resource", ""},
		{"empty sink", "sink", ""},
		{"empty kind", "kind", ""},
	}
	write := func(status map[string]any) error {
		u := obj.DeepCopy()
		u.Object["status"] = status
		return k8s.Status().Update(ctx, u, client.DryRunAll)
	}
	g.Expect(write(ok)).To(Succeed())
	longest := maps.Clone(ok)
	longest["sink"] = "ClusterWatchSink/" + strings.Repeat("s", 253)
	g.Expect(write(longest)).To(Succeed(), "a sink object of the longest name is shown")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			status := maps.Clone(ok)
			status[tc.field] = tc.value
			err := write(status)
			g.Expect(err).To(HaveOccurred(), "status was accepted: %v", status)
			g.Expect(err.Error()).To(ContainSubstring("status."+tc.field), "error does not name the field")
		})
	}
}

func manyNamespaces(n int) string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("ns-%d", i)
	}
	return strings.Join(names, ", ")
}

func TestSamplesAreAccepted(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "samples", "*.yaml"))
	if err != nil || len(files) < 3 {
		t.Fatalf("expected samples under config/samples, found %v (%v)", files, err)
	}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			g := NewWithT(t)
			data, err := os.ReadFile(f)
			g.Expect(err).NotTo(HaveOccurred())
			u := &unstructured.Unstructured{}
			g.Expect(yaml.Unmarshal(data, &u.Object)).To(Succeed())
			u.SetNamespace("default")
			g.Expect(dryRunCreate(u)).To(Succeed())
		})
	}
}

// TestBrokerSinkObjects: a WatchSink and a ClusterWatchSink embed the Sink, broker members
// and their rules included.
func TestBrokerSinkObjects(t *testing.T) {
	object := func(kind, spec string) *unstructured.Unstructured {
		obj := map[string]any{}
		if err := yaml.Unmarshal([]byte(spec), &obj); err != nil {
			t.Fatalf("bad test spec: %v", err)
		}
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "notify.dynamicnotifier.io/v1alpha1",
			"kind":       kind,
			"metadata":   map[string]any{"name": "s"},
			"spec":       obj,
		}}
		if kind == "WatchSink" {
			u.SetNamespace("default")
		}
		return u
	}
	const kafka = "kafka: {brokers: ['kafka:9092'], topic: events, sasl: {mechanism: PLAIN, secretRef: {name: kafka-user}}}\n"
	const nats = "nats: {servers: ['tls://nats:4222'], credentials: {secretRef: {name: nats-user}}}\n"
	for _, tc := range []struct {
		name, kind, spec, field string
	}{
		{"kafka WatchSink", "WatchSink", kafka, ""},
		{"nats WatchSink with a kafka dead-letter sink", "WatchSink",
			nats + "delivery: {deadLetterSink: {kafka: {brokers: ['kafka:9092'], topic: dlq}}}\n", ""},
		{"nats ClusterWatchSink", "ClusterWatchSink", nats + "namespaceSelector: {}\n", ""},
		{"kafka ClusterWatchSink", "ClusterWatchSink", kafka + "namespaceSelector: {}\n", ""},
		{"batched nats WatchSink", "WatchSink", "nats: {servers: ['nats://n'], contentMode: batched}\n", "spec.nats.contentMode"},
		{"kafka and webhook ClusterWatchSink", "ClusterWatchSink",
			kafka + "webhook: {url: 'http://a.example'}\nnamespaceSelector: {}\n", "exactly one of webhook, service, log, kafka or nats"},
		{"kafka ClusterWatchSink without topic", "ClusterWatchSink",
			"kafka: {brokers: ['kafka:9092']}\nnamespaceSelector: {}\n", "spec.kafka.topic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			err := dryRunCreate(object(tc.kind, tc.spec))
			if tc.field == "" {
				g.Expect(err).NotTo(HaveOccurred())
				return
			}
			g.Expect(err).To(HaveOccurred(), "spec was accepted:\n%s", tc.spec)
			g.Expect(err.Error()).To(ContainSubstring(tc.field), "error does not name the field")
		})
	}
}
