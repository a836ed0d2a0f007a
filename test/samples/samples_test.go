// Package samples applies every WatchSubscription in config/samples to a real API server, with
// the operator running in-process as the binary runs it (subscriptions authorized through
// SubjectAccessReviews), and checks that each becomes Ready and delivers a change. The samples
// are recipes users copy; they must work as written.
package samples

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
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
	cases, shapes := sampleCases(), sinkShapes()
	rcv := startReceiver(t)
	startOperator(t)

	ensureNamespace(t, sampleNamespace)
	// Sink objects first, as kubectl apply -k orders them by name only by chance.
	for _, s := range samples.sinks {
		if _, ok := shapes[s.obj.GetName()]; !ok {
			t.Fatalf("%s: no entry for %s %s in sinkShapes (test/samples/shapes_test.go); add the body its "+
				"service documents", s.file, s.kind, s.obj.GetName())
		}
		dryRun(t, s)
		applied := s.obj.DeepCopyObject().(client.Object)
		toReceiver(t, sinkOf(applied), rcv.URL)
		writeSinkSecrets(t, applied, rcv.URL, shapes[s.obj.GetName()].headers)
		admitSampleNamespace(t, applied)
		create(t, applied)
		s.applied = applied
	}
	for _, s := range samples.subscriptions {
		ws := s.obj.(*notifyv1.WatchSubscription)
		c, ok := cases[ws.Name]
		if !ok {
			t.Fatalf("%s: no case for WatchSubscription %s in test/samples/cases_test.go; add one that makes a "+
				"change the sample must deliver", s.file, ws.Name)
		}
		dryRun(t, s)
		grant(t, ws, samples)
		if c.before != nil {
			c.before(t)
		}
		applied := ws.DeepCopy()
		toReceiver(t, applied.Spec.Sink, rcv.URL)
		if applied.Spec.Delivery != nil {
			toReceiver(t, applied.Spec.Delivery.DeadLetterSink, rcv.URL)
		}
		create(t, applied.DeepCopy())
		s.applied = applied
	}

	// Every sample becomes Ready; they start together, so this waits for the slowest.
	for _, s := range samples.all() {
		waitReady(t, s)
	}

	for _, s := range samples.subscriptions {
		ws := s.obj.(*notifyv1.WatchSubscription)
		c := cases[ws.Name]
		t.Run(ws.Name, func(t *testing.T) {
			if c.trigger != nil {
				c.trigger(t)
			}
			applied := s.applied.(*notifyv1.WatchSubscription)
			target := samples.sinkFor(ws)
			var got received
			switch {
			case target != nil:
				got = waitReceived(t, rcv, applied, sinkOf(target.applied), c.want)
				if err := shapes[target.obj.GetName()].check(got.Header, got.Body); err != nil {
					t.Errorf("%s sent a body %s would refuse: %v\n%s", target.file, target.obj.GetName(), err, got.Body)
				}
			case ws.Spec.Sink.Log != nil:
				waitLogged(t, ws, c.want)
			default:
				got = waitReceived(t, rcv, applied, ws.Spec.Sink, c.want)
			}
			if c.bodyContains != "" && !bytes.Contains(got.Body, []byte(c.bodyContains)) {
				t.Errorf("the request for %s does not mention %q:\n%s", c.want.Subject, c.bodyContains, got.Body)
			}
			if c.only {
				var all []string
				for _, e := range rcv.from(source(applied)) {
					if e.Subject == c.want.Subject {
						all = append(all, e.Type+" "+string(e.Body))
					}
				}
				if len(all) != 1 {
					t.Errorf("%s delivered %d events for %s, want only the one: %q", ws.Name, len(all), c.want.Subject, all)
				}
			}
		})
	}
	for _, s := range samples.all() {
		checkUntouched(t, s)
	}
}

// sample is one file of config/samples, decoded and, when namespaced, placed in
// sampleNamespace.
type sample struct {
	file, kind string
	obj        client.Object
	// applied is what the test created: the sample pointed at the receiver.
	applied client.Object
}

// sampleSet is config/samples by kind.
type sampleSet struct {
	subscriptions, sinks []*sample
}

func (s sampleSet) all() []*sample { return append(slices.Clone(s.sinks), s.subscriptions...) }

// sinkFor is the sink object sample a subscription names, nil for an inline sink.
func (s sampleSet) sinkFor(ws *notifyv1.WatchSubscription) *sample {
	if ws.Spec.SinkRef == nil {
		return nil
	}
	kind := cmp.Or(string(ws.Spec.SinkRef.Kind), kindWatchSink)
	for _, sk := range s.sinks {
		if sk.kind == kind && sk.obj.GetName() == ws.Spec.SinkRef.Name {
			return sk
		}
	}
	return nil
}

const (
	kindWatchSubscription = "WatchSubscription"
	kindWatchSink         = "WatchSink"
	kindClusterWatchSink  = "ClusterWatchSink"
)

// loadSamples reads every sample, checking that config/samples/kustomization.yaml lists
// exactly the sample files and that each is one of our kinds without unknown fields.
func loadSamples(t *testing.T) sampleSet {
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

	var out sampleSet
	names := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte("\n---")) {
			t.Errorf("%s holds more than one document; keep one object per sample", f)
		}
		var typ metav1.TypeMeta
		if err := yaml.Unmarshal(data, &typ); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if typ.APIVersion != notifyv1.GroupVersion.String() {
			t.Fatalf("%s is a %s %s; samples are objects of %s", f, typ.APIVersion, typ.Kind, notifyv1.GroupVersion)
		}
		var obj client.Object
		switch typ.Kind {
		case kindWatchSubscription:
			obj = &notifyv1.WatchSubscription{}
		case kindWatchSink:
			obj = &notifyv1.WatchSink{}
		case kindClusterWatchSink:
			obj = &notifyv1.ClusterWatchSink{}
		default:
			t.Fatalf("%s is a %s, which the samples test does not know", f, typ.Kind)
		}
		if err := yaml.UnmarshalStrict(data, obj); err != nil {
			t.Fatalf("%s is not a valid %s: %v", f, typ.Kind, err)
		}
		if obj.GetNamespace() != "" {
			t.Errorf("%s sets metadata.namespace; samples are applied with kubectl apply -n", f)
		}
		if other, dup := names[typ.Kind+"/"+obj.GetName()]; dup {
			t.Fatalf("%s and %s are both %s %s", other, f, typ.Kind, obj.GetName())
		}
		names[typ.Kind+"/"+obj.GetName()] = f
		s := &sample{file: f, kind: typ.Kind, obj: obj}
		if typ.Kind == kindWatchSubscription {
			obj.SetNamespace(sampleNamespace)
			out.subscriptions = append(out.subscriptions, s)
			continue
		}
		if typ.Kind == kindWatchSink {
			obj.SetNamespace(sampleNamespace)
		}
		out.sinks = append(out.sinks, s)
	}
	for _, s := range out.subscriptions {
		ws := s.obj.(*notifyv1.WatchSubscription)
		if ws.Spec.SinkRef != nil && out.sinkFor(ws) == nil {
			t.Errorf("%s names %s %s, which no sample defines", s.file, cmp.Or(string(ws.Spec.SinkRef.Kind), kindWatchSink),
				ws.Spec.SinkRef.Name)
		}
	}
	return out
}

// dryRun checks the sample as written: the API server's schema and CEL rules accept it.
func dryRun(t *testing.T, s *sample) {
	t.Helper()
	if err := k8s.Create(context.Background(), s.obj.DeepCopyObject().(client.Object), client.DryRunAll); err != nil {
		t.Fatalf("%s is refused by the API server: %v", s.file, err)
	}
}

// sinkOf is the sink a sink object holds.
func sinkOf(obj client.Object) *notifyv1.Sink {
	switch o := obj.(type) {
	case *notifyv1.WatchSink:
		return &o.Spec.Sink
	case *notifyv1.ClusterWatchSink:
		return &o.Spec.Sink
	}
	return nil
}

// secretNamespace is where a sink object's Secrets are: its own namespace, or the operator's
// for a ClusterWatchSink.
func secretNamespace(obj client.Object) string {
	return cmp.Or(obj.GetNamespace(), operatorNamespace)
}

// sinkSecrets names the Secrets a sink reads.
func sinkSecrets(s *notifyv1.Sink) []string {
	var names []string
	if w := s.Webhook; w != nil {
		if w.URLFrom != nil {
			names = append(names, w.URLFrom.SecretKeyRef.Name)
		}
		if w.HeadersFrom != nil {
			names = append(names, w.HeadersFrom.SecretRef.Name)
		}
	}
	return names
}

// writeSinkSecrets creates the Secrets a sink object reads, as its comment tells users to:
// a URL Secret holds the receiver's address at /<sink name>, a headers Secret the headers
// sinkShapes gives for it.
func writeSinkSecrets(t *testing.T, obj client.Object, base string, headers map[string]string) {
	t.Helper()
	w := sinkOf(obj).Webhook
	if w == nil {
		return
	}
	ns := secretNamespace(obj)
	if w.URLFrom != nil {
		ref := w.URLFrom.SecretKeyRef
		create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ref.Name},
			StringData: map[string]string{ref.Key: base + "/" + obj.GetName()}})
	}
	if w.HeadersFrom != nil {
		if len(headers) == 0 {
			t.Fatalf("%s reads headers from Secret %s: give them in sinkShapes", obj.GetName(), w.HeadersFrom.SecretRef.Name)
		}
		create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: w.HeadersFrom.SecretRef.Name},
			StringData: headers})
	}
}

// admitSampleNamespace labels the sample namespace as a ClusterWatchSink's selector asks,
// as its comment tells namespace owners to.
func admitSampleNamespace(t *testing.T, obj client.Object) {
	t.Helper()
	cws, ok := obj.(*notifyv1.ClusterWatchSink)
	if !ok {
		return
	}
	if len(cws.Spec.NamespaceSelector.MatchExpressions) > 0 {
		t.Fatalf("%s: the test labels namespaces from matchLabels only", cws.Name)
	}
	ns := &corev1.Namespace{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: sampleNamespace}, ns); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(ns.DeepCopy())
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	maps.Copy(ns.Labels, cws.Spec.NamespaceSelector.MatchLabels)
	if err := k8s.Patch(context.Background(), ns, patch); err != nil {
		t.Fatal(err)
	}
}

// grant gives the subscription's ServiceAccount what the operator checks with
// SubjectAccessReviews before watching: list and watch on the resource in every namespace it
// covers (a ClusterRole for cluster-scoped resources and for all namespaces), as the comment
// of each sample tells users to do.
func grant(t *testing.T, ws *notifyv1.WatchSubscription, samples sampleSet) {
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
	// A WatchSink's Secrets are read as the subscription's ServiceAccount; a
	// ClusterWatchSink's with the operator's own rights.
	if target := samples.sinkFor(ws); target != nil && target.kind == kindWatchSink {
		if secrets := sinkSecrets(sinkOf(target.obj)); len(secrets) > 0 {
			read := "read-sink-" + ws.Name
			create(t, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ws.Namespace, Name: read},
				Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"},
					ResourceNames: secrets}}})
			create(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ws.Namespace, Name: read}, Subjects: subjects,
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: read}})
		}
	}

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
// (there is no cluster DNS here). A log sink, and a URL from a Secret, stay as they are.
func toReceiver(t *testing.T, s *notifyv1.Sink, base string) {
	t.Helper()
	switch {
	case s == nil || s.Log != nil:
	case s.Webhook != nil && s.Webhook.URLFrom != nil:
		// writeSinkSecrets writes the receiver's address into the Secret.
		return
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

// waitReady waits until the object reports Ready=True for its current spec.
func waitReady(t *testing.T, s *sample) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		got := s.obj.DeepCopyObject().(client.Object)
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(s.obj), got)).To(Succeed())
		conditions, observed := statusOf(got)
		cond := meta.FindStatusCondition(conditions, notifyv1.ConditionReady)
		g.Expect(cond).NotTo(BeNil(), "%s: no Ready condition yet", s.file)
		g.Expect(cond.Status).To(Equal(metav1.ConditionTrue), "%s: Ready is %s, reason %s: %s",
			s.file, cond.Status, cond.Reason, cond.Message)
		g.Expect(cond.ObservedGeneration).To(Equal(got.GetGeneration()), "%s: Ready describes an older generation", s.file)
		g.Expect(observed).To(Equal(got.GetGeneration()), "%s: status describes an older generation", s.file)
	}).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
}

// statusOf is an object's conditions and observedGeneration.
func statusOf(obj client.Object) ([]metav1.Condition, int64) {
	switch o := obj.(type) {
	case *notifyv1.WatchSubscription:
		return o.Status.Conditions, o.Status.ObservedGeneration
	case *notifyv1.WatchSink:
		return o.Status.Conditions, o.Status.ObservedGeneration
	case *notifyv1.ClusterWatchSink:
		return o.Status.Conditions, o.Status.ObservedGeneration
	}
	return nil, 0
}

// specOf is an object's spec.
func specOf(obj client.Object) any {
	switch o := obj.(type) {
	case *notifyv1.WatchSubscription:
		return o.Spec
	case *notifyv1.WatchSink:
		return o.Spec
	case *notifyv1.ClusterWatchSink:
		return o.Spec
	}
	return nil
}

// checkUntouched checks that the operator left the object as it was applied: the same spec
// at generation 1, no finalizers, labels or annotations. Argo CD then sees no difference
// between Git and the live object.
func checkUntouched(t *testing.T, s *sample) {
	t.Helper()
	got := s.obj.DeepCopyObject().(client.Object)
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(s.applied), got); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(specOf(got), specOf(s.applied)) {
		want, _ := yaml.Marshal(specOf(s.applied))
		live, _ := yaml.Marshal(specOf(got))
		t.Errorf("%s: the live spec differs from the applied one.\napplied:\n%s\nlive:\n%s", s.file, want, live)
	}
	if got.GetGeneration() != 1 {
		t.Errorf("%s: generation %d: the spec was written after it was created", s.file, got.GetGeneration())
	}
	if len(got.GetFinalizers()) > 0 || len(got.GetLabels()) > 0 || len(got.GetAnnotations()) > 0 {
		t.Errorf("%s: metadata added: finalizers %q, labels %v, annotations %v", s.file, got.GetFinalizers(),
			got.GetLabels(), got.GetAnnotations())
	}
}

// source is the CloudEvents source of a subscription's events.
func source(ws *notifyv1.WatchSubscription) string {
	return fmt.Sprintf("/apis/%s/namespaces/%s/watchsubscriptions/%s", notifyv1.GroupVersion, ws.Namespace, ws.Name)
}

// waitReceived waits until the receiver got the wanted event from ws through sk, at the
// sink's path and with the content type its mode or template gives, and fails at once if an
// event of another type arrived for the same object.
func waitReceived(t *testing.T, rcv *receiver, ws *notifyv1.WatchSubscription, sk *notifyv1.Sink, want event) received {
	t.Helper()
	var path string
	var opts notifyv1.HTTPOptions
	switch {
	case sk.Webhook != nil && sk.Webhook.URLFrom != nil:
		// writeSinkSecrets points URL Secrets at /<sink name>.
		path, opts = "/"+ws.Spec.SinkRef.Name, sk.Webhook.HTTPOptions
	case sk.Webhook != nil:
		u, err := url.Parse(sk.Webhook.URL)
		if err != nil {
			t.Fatal(err)
		}
		path, opts = u.Path, sk.Webhook.HTTPOptions
	case sk.Service != nil:
		path, opts = sk.Service.Path, sk.Service.HTTPOptions
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
	return got
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
	testenv.RunManager(t, mgr)
}

// received is one CloudEvent as the receiver saw it.
type received struct {
	Path, Type, Source, Subject string
	// ContentType of the request that carried the event.
	ContentType string
	// Header and Body of that request.
	Header http.Header
	Body   []byte
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
		body, err := io.ReadAll(req.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
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
				ContentType: req.Header.Get("Content-Type"), Header: req.Header.Clone(), Body: body,
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
