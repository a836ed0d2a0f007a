package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/operator"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

// The plugin runs in-process against an envtest API server, with a kubeconfig as a user
// would have one; the operator, where a test needs it, runs in-process too.
var (
	env *envtest.Environment
	cfg *rest.Config
	k8s client.Client
)

func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard())
	testenv.Main(m, func(e *envtest.Environment, c *rest.Config) (err error) {
		env, cfg = e, c
		if k8s, err = client.New(cfg, client.Options{Scheme: newScheme()}); err != nil {
			return err
		}
		return k8s.Create(context.Background(), &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: readerRole},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"list", "watch"}}}})
	})
}

// readerRole may list and watch everything; tests bind it to subscriptions' ServiceAccounts.
const readerRole = "test-subscription-reader"

// adminKubeconfig is a kubeconfig of a cluster admin, in the test's temporary directory.
func adminKubeconfig(t *testing.T) string {
	t.Helper()
	path, err := testenv.WriteKubeconfig(env, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// userKubeconfig is a kubeconfig of a user with no rights but those the test grants.
func userKubeconfig(t *testing.T, name string) string {
	t.Helper()
	user, err := env.AddUser(envtest.User{Name: name}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// syncBuffer is an output a command writes while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// plugin runs `kubectl notifier ARGS` with kubeconfig, as kubectl runs the plugin binary.
func plugin(ctx context.Context, kubeconfig string, out io.Writer, args ...string) error {
	cmd := newRootCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: out, ErrOut: io.Discard})
	cmd.SetArgs(append([]string{"--kubeconfig", kubeconfig}, args...))
	return cmd.ExecuteContext(ctx)
}

// run is plugin with its output returned.
func run(t *testing.T, kubeconfig string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := plugin(context.Background(), kubeconfig, &out, args...)
	return out.String(), err
}

// newNamespace creates a namespace whose default ServiceAccount may list and watch
// everything in it, as a subscription there needs.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "k-" + rand.String(8)}}
	create(t, ns)
	create(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "read"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: readerRole},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns.Name, Name: "default"}}})
	return ns.Name
}

// create creates obj and deletes it when the test ends.
func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), obj) })
}

// writeFile writes objects as a multi-document YAML file, as a user would write them.
func writeFile(t *testing.T, objs ...client.Object) string {
	t.Helper()
	docs := make([]string, 0, len(objs))
	for _, obj := range objs {
		data, err := yaml.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(data))
	}
	path := filepath.Join(t.TempDir(), "objects.yaml")
	if err := os.WriteFile(path, []byte(strings.Join(docs, "---\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// watchSubscription is a subscription to ConfigMaps of ns posting to url.
func watchSubscription(ns, name, url string) *notifyv1.WatchSubscription {
	return &notifyv1.WatchSubscription{
		TypeMeta:   metav1.TypeMeta{APIVersion: notifyv1.GroupVersion.String(), Kind: "WatchSubscription"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: notifyv1.WatchSubscriptionSpec{
			Resource: notifyv1.ResourceRef{Version: "v1", Resource: "configmaps"},
			Sink:     &notifyv1.Sink{Webhook: &notifyv1.WebhookSink{URL: url}},
		},
	}
}

// request is one request a receiver got.
type request struct {
	Path   string
	Header http.Header
	Body   string
}

// receiver is an HTTP sink on loopback that records what it gets and answers with status
// and "thanks".
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	requests []request
	status   int
}

func newReceiver(t *testing.T, useTLS bool) *receiver {
	t.Helper()
	r := &receiver{status: http.StatusAccepted}
	handler := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.requests = append(r.requests, request{Path: req.URL.Path, Header: req.Header.Clone(), Body: string(body)})
		status := r.status
		r.mu.Unlock()
		if req.URL.Path == "/redirect" {
			http.Redirect(w, req, "/events", http.StatusTemporaryRedirect)
			return
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, "thanks")
	})
	if useTLS {
		r.Server = httptest.NewTLSServer(handler)
	} else {
		r.Server = httptest.NewServer(handler)
	}
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) got() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.requests...)
}

func (r *receiver) setStatus(status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = status
}

// startOperator runs the operator with its defaults (SubjectAccessReviews on) and a
// short status interval until the test ends.
func startOperator(t *testing.T) {
	t.Helper()
	mgr, err := operator.NewEmbeddedManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := operator.Setup(mgr, operator.Options{StatusInterval: 200 * time.Millisecond,
		DeliveryTimeout: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	testenv.RunManager(t, mgr)
}

// waitReason waits until the subscription's Ready condition has this reason.
func waitReason(t *testing.T, ws *notifyv1.WatchSubscription, reason string) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		got := &notifyv1.WatchSubscription{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(ws), got)).To(Succeed())
		cond := meta.FindStatusCondition(got.Status.Conditions, notifyv1.ConditionReady)
		g.Expect(cond).NotTo(BeNil(), "no Ready condition yet")
		g.Expect(cond.Reason).To(Equal(reason), "Ready is %s/%s: %s", cond.Status, cond.Reason, cond.Message)
	}).WithTimeout(20*time.Second).WithPolling(50*time.Millisecond).Should(Succeed(), "waiting for %s", reason)
}
