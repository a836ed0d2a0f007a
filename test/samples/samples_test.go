// Package samples applies every WatchSubscription in config/samples to a real API server, with
// the operator running in-process as the binary runs it (subscriptions authorized through
// SubjectAccessReviews), and checks that each becomes Ready and delivers a change. The samples
// are recipes users copy; they must work as written.
package samples

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/cetest"
	"github.com/dynamic-notifier/dynamic-notifier/internal/operator"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

var (
	cfg *rest.Config
	k8s client.Client
	// logs holds the operator's log (JSON lines): the log sink writes events there.
	logs = &testenv.Buffer{}
)

func TestMain(m *testing.M) {
	ctrl.SetLogger(zap.New(zap.WriteTo(logs), zap.UseDevMode(false)))
	testenv.Main(m, func(_ *envtest.Environment, c *rest.Config) (err error) {
		cfg = c
		// CRDs of the custom resources samples watch (stand-ins for the real projects' CRDs).
		if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{
			Paths: []string{"testdata"}, ErrorIfPathMissing: true,
		}); err != nil {
			return err
		}
		scheme := runtime.NewScheme()
		_ = clientgoscheme.AddToScheme(scheme)
		_ = notifyv1.AddToScheme(scheme)
		k8s, err = client.New(cfg, client.Options{Scheme: scheme})
		return err
	})
}

const (
	// sampleNamespace is where the samples are applied, as with kubectl apply -n.
	sampleNamespace = "samples"
	// operatorNamespace is the operator's own, where it keeps its checkpoints.
	operatorNamespace = "dynamic-notifier-system"
)

func TestSamples(t *testing.T) {
	samples := loadSamples(t)
	cases := sampleCases()
	rcv := startReceiver(t)
	startOperator(t)

	ensureNamespace(t, sampleNamespace)
	// applied holds each subscription as it was sent to the API server.
	applied := map[string]*notifyv1.WatchSubscription{}
	for _, s := range samples {
		c, ok := cases[s.ws.Name]
		if !ok {
			t.Fatalf("%s: no case for WatchSubscription %s in test/samples/cases_test.go; add one that makes a "+
				"change the sample must deliver", s.file, s.ws.Name)
		}
		// The sample as written: the API server's schema and CEL rules accept it.
		if err := k8s.Create(context.Background(), s.ws.DeepCopy(), client.DryRunAll); err != nil {
			t.Fatalf("%s is refused by the API server: %v", s.file, err)
		}
		grant(t, s.ws)
		if c.before != nil {
			c.before(t)
		}
		ws := s.ws.DeepCopy()
		toReceiver(t, ws.Spec.Sink, rcv.URL)
		if ws.Spec.Delivery != nil {
			toReceiver(t, ws.Spec.Delivery.DeadLetterSink, rcv.URL)
		}
		applied[ws.Name] = ws.DeepCopy()
		create(t, ws)
	}

	// Every sample becomes Ready; they start together, so this waits for the slowest.
	for _, s := range samples {
		waitReady(t, s)
	}

	for _, s := range samples {
		c := cases[s.ws.Name]
		t.Run(s.ws.Name, func(t *testing.T) {
			if c.trigger != nil {
				c.trigger(t)
			}
			if s.ws.Spec.Sink.Log != nil {
				waitLogged(t, s.ws, c.want)
			} else {
				waitReceived(t, rcv, s.ws, c.want)
			}
			checkUntouched(t, applied[s.ws.Name])
		})
	}
}

// sample is one file of config/samples, decoded and placed in sampleNamespace.
type sample struct {
	file string
	ws   *notifyv1.WatchSubscription
}

// loadSamples reads every sample, checking that config/samples/kustomization.yaml lists
// exactly the sample files and that each is a WatchSubscription without unknown fields.
func loadSamples(t *testing.T) []sample {
	t.Helper()
	dir := filepath.Join(testenv.RepoRoot(), "config", "samples")
	var kustomization struct {
		Resources []string `json:"resources"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &kustomization); err != nil {
		t.Fatalf("config/samples/kustomization.yaml: %v", err)
	}
	paths, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, p := range paths {
		if name := filepath.Base(p); name != "kustomization.yaml" {
			files = append(files, name)
		}
	}
	if listed := slices.Sorted(slices.Values(kustomization.Resources)); !slices.Equal(listed, files) {
		t.Errorf("config/samples/kustomization.yaml lists %q, the directory has %q", listed, files)
	}
	if len(files) == 0 {
		t.Fatal("no samples in config/samples")
	}

	out := make([]sample, 0, len(files))
	names := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte("\n---")) {
			t.Errorf("%s holds more than one document; keep one subscription per sample", f)
		}
		ws := &notifyv1.WatchSubscription{}
		if err := yaml.UnmarshalStrict(data, ws); err != nil {
			t.Fatalf("%s is not a valid WatchSubscription: %v", f, err)
		}
		if ws.APIVersion != notifyv1.GroupVersion.String() || ws.Kind != "WatchSubscription" {
			t.Fatalf("%s is a %s %s", f, ws.APIVersion, ws.Kind)
		}
		if ws.Namespace != "" {
			t.Errorf("%s sets metadata.namespace; samples are applied with kubectl apply -n", f)
		}
		if other, dup := names[ws.Name]; dup {
			t.Fatalf("%s and %s are both named %s", other, f, ws.Name)
		}
		names[ws.Name] = f
		ws.Namespace = sampleNamespace
		out = append(out, sample{file: f, ws: ws})
	}
	return out
}

// grant gives the subscription's ServiceAccount what the operator checks with
// SubjectAccessReviews before watching: list and watch on the resource in every namespace it
// covers (a ClusterRole for cluster-scoped resources and for all namespaces), as the comment
// of each sample tells users to do.
func grant(t *testing.T, ws *notifyv1.WatchSubscription) {
	t.Helper()
	sa := ws.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	ensure(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ws.Namespace, Name: sa}})

	r := ws.Spec.Resource
	gvr := schema.GroupVersionResource{Group: r.Group, Version: r.Version, Resource: r.Resource}
	gvk, err := k8s.RESTMapper().KindFor(gvr)
	if err != nil {
		t.Fatalf("%s: the test API server does not serve %s (%v); add its CRD to test/samples/testdata", ws.Name, gvr, err)
	}
	mapping, err := k8s.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		t.Fatal(err)
	}
	rules := []rbacv1.PolicyRule{{
		APIGroups: []string{r.Group}, Resources: []string{r.Resource}, Verbs: []string{"list", "watch"},
	}}
	subjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ws.Namespace, Name: sa}}
	name := "watch-" + ws.Name

	if mapping.Scope.Name() == meta.RESTScopeNameRoot || slices.Contains(ws.Spec.Namespaces, notifyv1.AllNamespaces) {
		name = ws.Namespace + "-" + name
		create(t, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules})
		create(t, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name}, Subjects: subjects,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name}})
		return
	}
	namespaces := ws.Spec.Namespaces
	if len(namespaces) == 0 {
		namespaces = []notifyv1.NamespaceName{notifyv1.NamespaceName(ws.Namespace)}
	}
	for _, n := range namespaces {
		ns := string(n)
		ensureNamespace(t, ns)
		create(t, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Rules: rules})
		create(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Subjects: subjects,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}})
	}
}

// toReceiver points an HTTP sink at the test's receiver on loopback, keeping its path and HTTP
// options: a webhook URL gets the receiver's scheme and host, a Service sink becomes a webhook
// (there is no cluster DNS here). A log sink stays as it is.
func toReceiver(t *testing.T, s *notifyv1.Sink, base string) {
	t.Helper()
	switch {
	case s == nil || s.Log != nil:
	case s.Webhook != nil:
		u, err := url.Parse(s.Webhook.URL)
		if err != nil {
			t.Fatal(err)
		}
		s.Webhook.URL = base + u.RequestURI()
	case s.Service != nil:
		path := s.Service.Path
		if path == "" {
			path = "/"
		}
		s.Webhook = &notifyv1.WebhookSink{URL: base + path, HTTPOptions: s.Service.HTTPOptions}
		s.Service = nil
	default:
		t.Fatalf("a sink the test does not know: %+v", s)
	}
	if s != nil && s.Webhook != nil && !strings.HasPrefix(s.Webhook.URL, base+"/") {
		t.Fatalf("sink URL %s does not point at the receiver %s", s.Webhook.URL, base)
	}
}

// waitReady waits until the subscription reports Ready=True for its current spec.
func waitReady(t *testing.T, s sample) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		got := &notifyv1.WatchSubscription{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(s.ws), got)).To(Succeed())
		cond := meta.FindStatusCondition(got.Status.Conditions, notifyv1.ConditionReady)
		g.Expect(cond).NotTo(BeNil(), "%s: no Ready condition yet", s.file)
		g.Expect(cond.Status).To(Equal(metav1.ConditionTrue), "%s: Ready is %s, reason %s: %s",
			s.file, cond.Status, cond.Reason, cond.Message)
		g.Expect(cond.ObservedGeneration).To(Equal(got.Generation), "%s: Ready describes an older generation", s.file)
		g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation), "%s: status describes an older generation", s.file)
	}).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
}

// checkUntouched checks that the operator left the subscription as it was applied: the same
// spec at generation 1, no finalizers, labels or annotations. Argo CD then sees no difference
// between Git and the live object.
func checkUntouched(t *testing.T, applied *notifyv1.WatchSubscription) {
	t.Helper()
	got := &notifyv1.WatchSubscription{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(applied), got); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(got.Spec, applied.Spec) {
		want, _ := yaml.Marshal(applied.Spec)
		live, _ := yaml.Marshal(got.Spec)
		t.Errorf("the live spec differs from the applied one.\napplied:\n%s\nlive:\n%s", want, live)
	}
	if got.Generation != 1 {
		t.Errorf("generation %d: the spec was written after it was created", got.Generation)
	}
	if len(got.Finalizers) > 0 || len(got.Labels) > 0 || len(got.Annotations) > 0 {
		t.Errorf("metadata added: finalizers %q, labels %v, annotations %v", got.Finalizers, got.Labels, got.Annotations)
	}
}

// source is the CloudEvents source of a subscription's events.
func source(ws *notifyv1.WatchSubscription) string {
	return fmt.Sprintf("/apis/%s/namespaces/%s/watchsubscriptions/%s", notifyv1.GroupVersion, ws.Namespace, ws.Name)
}

// waitReceived waits until the receiver got the wanted event from ws, at the sink's path,
// and fails at once if an event of another type arrived for the same object.
func waitReceived(t *testing.T, rcv *receiver, ws *notifyv1.WatchSubscription, want event) {
	t.Helper()
	var path string
	var opts notifyv1.HTTPOptions
	switch {
	case ws.Spec.Sink.Webhook != nil:
		u, err := url.Parse(ws.Spec.Sink.Webhook.URL)
		if err != nil {
			t.Fatal(err)
		}
		path, opts = u.Path, ws.Spec.Sink.Webhook.HTTPOptions
	case ws.Spec.Sink.Service != nil:
		path, opts = ws.Spec.Sink.Service.Path, ws.Spec.Sink.Service.HTTPOptions
	}
	var got received
	NewWithT(t).Eventually(func(g Gomega) {
		events := rcv.from(source(ws))
		for _, e := range events {
			if e.Subject == want.Subject && e.Type != want.Type {
				StopTrying(fmt.Sprintf("%s delivered %s for %s, which it should filter out", ws.Name, e.Type, e.Subject)).Now()
			}
		}
		i := slices.IndexFunc(events, func(e received) bool { return e.Subject == want.Subject && e.Type == want.Type })
		g.Expect(i).To(BeNumerically(">=", 0), "no %s event for %s from %s yet; the receiver got %v",
			want.Type, want.Subject, ws.Name, rcv.summary())
		got = events[i]
	}).WithTimeout(20 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
	if got.Path != path {
		t.Errorf("the event arrived at %s, the sample posts to %s", got.Path, path)
	}
	wantType := map[notifyv1.ContentMode]string{"": "application/json", notifyv1.ContentModeBinary: "application/json",
		notifyv1.ContentModeStructured: "application/cloudevents+json",
		notifyv1.ContentModeBatched:    "application/cloudevents-batch+json"}[opts.ContentMode]
	if got.ContentType != wantType {
		t.Errorf("the event arrived as %s; with contentMode %q it must be %s", got.ContentType, opts.ContentMode, wantType)
	}
}

// waitLogged waits until the operator logged the wanted event for ws (the log sink).
func waitLogged(t *testing.T, ws *notifyv1.WatchSubscription, want event) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		found := slices.ContainsFunc(strings.Split(logs.String(), "\n"), func(line string) bool {
			entry := map[string]any{}
			if yaml.Unmarshal([]byte(line), &entry) != nil {
				return false
			}
			return entry["msg"] == "Event" && entry["source"] == source(ws) &&
				entry["subject"] == want.Subject && entry["type"] == want.Type
		})
		g.Expect(found).To(BeTrue(), "no %s event for %s in the operator's log", want.Type, want.Subject)
	}).WithTimeout(20 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
}

// startOperator runs the operator in a manager of its own, as cmd/main.go wires it, until the
// test ends.
func startOperator(t *testing.T) {
	t.Helper()
	ensureNamespace(t, operatorNamespace)
	mgr, err := operator.NewEmbeddedManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := operator.Setup(mgr, operator.Options{
		// The binary's default: each subscription acts as its ServiceAccount.
		Authorization: operator.AuthorizationSubjectAccessReview,
		// Short enough that a grant racing the first check is seen again quickly.
		AuthorizationInterval: time.Second,
		StatusInterval:        200 * time.Millisecond,
		DeliveryTimeout:       2 * time.Second,
		// Checkpoints on, as the Deployment runs it (POD_NAMESPACE).
		CheckpointNamespace: operatorNamespace,
		CheckpointInterval:  time.Second,
		ShutdownGrace:       2 * time.Second,
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager stopped: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// received is one CloudEvent as the receiver saw it.
type received struct {
	Path, Type, Source, Subject string
	// ContentType of the request that carried the event.
	ContentType string
}

// receiver is a CloudEvents receiver on loopback standing in for every HTTP sink.
type receiver struct {
	URL string

	mu     sync.Mutex
	events []received
}

func startReceiver(t *testing.T) *receiver {
	t.Helper()
	rcv := &receiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		evs, err := cetest.Events(req)
		if err != nil {
			t.Errorf("the receiver got a request that is not a CloudEvent: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		rcv.mu.Lock()
		for _, ev := range evs {
			rcv.events = append(rcv.events, received{
				Path: req.URL.Path, Type: ev.Type(), Source: ev.Source(), Subject: ev.Subject(),
				ContentType: req.Header.Get("Content-Type"),
			})
		}
		rcv.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	rcv.URL = srv.URL
	return rcv
}

// from returns the events sent by the subscription with this source, in arrival order.
func (r *receiver) from(src string) []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []received
	for _, e := range r.events {
		if e.Source == src {
			out = append(out, e)
		}
	}
	return out
}

// summary lists every event as "source: type subject", for failure messages.
func (r *receiver) summary() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.events))
	for _, e := range r.events {
		out = append(out, fmt.Sprintf("%s: %s %s", e.Source, e.Type, e.Subject))
	}
	return out
}

// create creates obj and deletes it when the test ends.
func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s/%s: %v", obj, obj.GetNamespace(), obj.GetName(), err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), obj) })
}

// ensure creates obj unless it exists.
func ensure(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create %T %s/%s: %v", obj, obj.GetNamespace(), obj.GetName(), err)
	}
}

// ensureNamespace creates a namespace, with the default ServiceAccount a real cluster's
// controllers would add, unless it exists. Namespaces are left in place: envtest has no
// namespace controller to empty them.
func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	ensure(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	ensure(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "default"}})
}
