package controller_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/cetest"
	"github.com/dynamic-notifier/dynamic-notifier/internal/operator"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

var (
	env    *envtest.Environment
	cfg    *rest.Config
	k8s    client.Client
	scheme = runtime.NewScheme()
)

func TestMain(m *testing.M) {
	ctrl.SetLogger(zap.New(zap.WriteTo(operatorLog), zap.Level(min(zapLevel(), zapcore.InfoLevel))))
	_ = clientgoscheme.AddToScheme(scheme)
	_ = notifyv1.AddToScheme(scheme)
	_ = apiextensionsv1.AddToScheme(scheme)
	testenv.Main(m, func(e *envtest.Environment, c *rest.Config) (err error) {
		env, cfg = e, c
		if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
			return err
		}
		return k8s.Create(context.Background(), &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: readerRole},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"list", "watch"}}}})
	})
}

// readerRole may list and watch everything. The tests run the operator's default
// authorization (each subscription's ServiceAccount must be allowed what it watches), and
// grant it, as a platform team would: in the subscription's own namespace by newNamespace,
// elsewhere by grant and grantClusterWide.
const readerRole = "test-subscription-reader"

// grant lets the default ServiceAccount of saNamespace list and watch everything in namespace.
func grant(t *testing.T, saNamespace, namespace string) {
	t.Helper()
	create(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, GenerateName: "read-"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: readerRole},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: saNamespace, Name: "default"}}})
}

// grantSecrets lets the default ServiceAccount of ns get the named Secrets of ns, as sinks
// that read Secrets need.
func grantSecrets(t *testing.T, ns string, names ...string) {
	t.Helper()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "get-secrets-"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"},
			ResourceNames: names}}}
	create(t, role)
	create(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "get-secrets-"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: "default"}}})
}

// grantClusterWide lets the ServiceAccount saNamespace/saName list and watch everything in
// every namespace and every cluster-scoped resource.
func grantClusterWide(t *testing.T, saNamespace, saName string) {
	t.Helper()
	create(t, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{GenerateName: "read-all-"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: readerRole},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: saNamespace, Name: saName}}})
}

// running is an operator started for one test.
type running struct {
	op     *operator.Operator
	cancel context.CancelFunc
	done   chan struct{}
}

// startOperator runs the whole operator in a manager of its own, stopped at test end (or
// earlier through stop).
func startOperator(t *testing.T) *running {
	t.Helper()
	return startOperatorAs(t, cfg)
}

// startOperatorAs is startOperator with another identity.
func startOperatorAs(t *testing.T, rc *rest.Config) *running {
	t.Helper()
	return startOperatorWith(t, rc, testOptions())
}

// testOptions are the operator options of most tests: fast status, short timeouts.
func testOptions() operator.Options {
	return operator.Options{StatusInterval: 200 * time.Millisecond, DeliveryTimeout: 2 * time.Second}
}

// startOperatorWith runs the operator as rc with opts.
func startOperatorWith(t *testing.T, rc *rest.Config, opts operator.Options) *running {
	t.Helper()
	mgr, err := operator.NewEmbeddedManager(rc)
	if err != nil {
		t.Fatalf("manager: %v", err)
	}
	op, err := operator.Setup(mgr, opts)
	if err != nil {
		t.Fatalf("operator: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{op: op, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager stopped: %v", err)
		}
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	r.cancel()
	<-r.done
}

// received is one CloudEvent as a real HTTP sink saw it.
type received struct {
	ID, Type, Source, Subject, ContentType string
	Data                                   string
	Extensions                             map[string]any
	Header                                 http.Header
	At                                     time.Time
	// Request numbers the HTTP request that carried the event, from 1.
	Request int
}

// sink is a CloudEvents receiver on loopback.
type sink struct {
	URL    string
	status func() int
	srv    *httptest.Server
	// block, when set, holds every request until it is closed (a sink that hangs).
	block chan struct{}
	// reply, when set, answers request n (from 1) instead of status.
	reply func(n int, w http.ResponseWriter) int

	mu       sync.Mutex
	events   []received
	requests int
}

func newSink(t *testing.T) *sink {
	t.Helper()
	return startSink(t, httptest.NewUnstartedServer(nil), false)
}

// startSink serves a sink on srv (plain or TLS).
func startSink(t *testing.T, srv *httptest.Server, useTLS bool) *sink {
	t.Helper()
	return serveSink(t, srv, &sink{status: func() int { return http.StatusAccepted }}, useTLS)
}

// startSinkOn serves s on srv, whose listener the caller chose.
func startSinkOn(t *testing.T, srv *httptest.Server, s *sink) *sink {
	t.Helper()
	return serveSink(t, srv, s, false)
}

func serveSink(t *testing.T, srv *httptest.Server, s *sink, useTLS bool) *sink {
	t.Helper()
	srv.Config.Handler = (http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// Binary, structured or batched: one request may carry several events.
		evs, err := cetest.Events(req)
		if err != nil || len(evs) == 0 {
			t.Errorf("sink got a request that is not a CloudEvent: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.requests++
		for _, ev := range evs {
			s.events = append(s.events, received{ID: ev.ID(), Type: ev.Type(), Source: ev.Source(), Subject: ev.Subject(),
				ContentType: ev.DataContentType(), Data: string(ev.Data()), Extensions: ev.Extensions(),
				Header: req.Header.Clone(), At: time.Now(), Request: s.requests})
		}
		status, block, reply, n := s.status(), s.block, s.reply, len(s.events)
		s.mu.Unlock()
		if reply != nil {
			status = reply(n, w)
		}
		if block != nil {
			select {
			case <-block:
			case <-req.Context().Done():
			}
		}
		w.WriteHeader(status)
	}))
	if useTLS {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	s.srv = srv
	s.URL = srv.URL + "/events"
	return s
}

func (s *sink) closeConnections() { s.srv.CloseClientConnections() }

func (s *sink) Events() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.events...)
}

// summary lists events as "type subject" lines, short for assertions and failure messages.
func (s *sink) summary() []string {
	events := s.Events()
	out := make([]string, 0, len(events))
	for _, e := range events {
		out = append(out, strings.TrimPrefix(e.Type, "io.dynamicnotifier.resource.")+" "+e.Subject)
	}
	return out
}

// newNamespace creates a namespace for one test, where its default ServiceAccount may list
// and watch everything.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "t-" + rand.String(8)}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatalf("namespace: %v", err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ns) })
	grant(t, ns.Name, ns.Name)
	return ns.Name
}

// subscription builds a WatchSubscription on ConfigMaps delivering to url.
func subscription(ns, name, url string) *notifyv1.WatchSubscription {
	return &notifyv1.WatchSubscription{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: notifyv1.WatchSubscriptionSpec{
			Resource: notifyv1.ResourceRef{Version: "v1", Resource: "configmaps"},
			Sink:     &notifyv1.Sink{Webhook: &notifyv1.WebhookSink{URL: url}},
		},
	}
}

// create creates obj and deletes it when the test ends, before the test's operator stops
// (envtest has no namespace controller: objects in a deleted namespace would linger and
// be seen by later tests).
func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), obj) })
}

// ready returns the Ready condition of a subscription, or nil.
func ready(g Gomega, ws *notifyv1.WatchSubscription) *metav1.Condition {
	got := &notifyv1.WatchSubscription{}
	g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(ws), got)).To(Succeed())
	return meta.FindStatusCondition(got.Status.Conditions, notifyv1.ConditionReady)
}

// waitReason waits until the subscription's Ready condition has this reason.
func waitReason(t *testing.T, ws *notifyv1.WatchSubscription, reason string, timeout time.Duration) *metav1.Condition {
	t.Helper()
	var cond *metav1.Condition
	NewWithT(t).Eventually(func(g Gomega) {
		cond = ready(g, ws)
		g.Expect(cond).NotTo(BeNil(), "no Ready condition yet")
		g.Expect(cond.Reason).To(Equal(reason), "Ready is %s/%s: %s", cond.Status, cond.Reason, cond.Message)
	}).WithTimeout(timeout).WithPolling(50 * time.Millisecond).Should(Succeed())
	return cond
}

func configMap(ns, name string, labels map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Data: map[string]string{"k": "v"}}
}

// touch updates a ConfigMap's data so it gets a new resourceVersion.
func touch(t *testing.T, cm *corev1.ConfigMap) {
	t.Helper()
	cm.Data["touched"] = rand.String(4)
	if err := k8s.Update(context.Background(), cm); err != nil {
		t.Fatalf("update %s: %v", cm.Name, err)
	}
}

// zapLevel is errors only, unless TEST_LOG is set for debugging.
func zapLevel() zapcore.Level {
	if os.Getenv("TEST_LOG") != "" {
		return zapcore.Level(-2)
	}
	return zapcore.ErrorLevel
}
