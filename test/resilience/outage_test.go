package resilience

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

// authzRecheck is how long the manager of TestAPIServerDownLongerThanRechecks trusts an
// answer of the SubjectAccessReview check: it asks again every second.
const authzRecheck = time.Second

// longOutage is how long that test keeps the API server down once it has stopped serving,
// writing through a second API server meanwhile: several authorization rechecks long.
const longOutage = 8 * time.Second

// TestAPIServerDownLongerThanRechecks: a failed check is no answer. The manager re-checks
// its subscription's authorization every second, and its sink takes a header from a Secret,
// which every reconcile reads from the API server; that API server goes away for longer than
// several rechecks while the cluster goes on (changes are written through a second API
// server on the same etcd). Once the API server is back, every change made before, during
// and after the outage arrives with its own id, and no resync event is sent: the
// subscription was never torn down.
func TestAPIServerDownLongerThanRechecks(t *testing.T) {
	s := newScenario(t, "rechecks")
	requireNoError(t, k8s.Create(s.ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: "sink-headers"},
		StringData: map[string]string{"X-Resilience-Test": s.ns},
	}))
	// The subscription's ServiceAccount may read the Secret its sink uses, as it must.
	requireNoError(t, k8s.Create(s.ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: "read-sink-headers"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"},
			ResourceNames: []string{"sink-headers"}}},
	}))
	requireNoError(t, k8s.Create(s.ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: "read-sink-headers"},
		Subjects: []rbacv1.Subject{{
			Kind: rbacv1.ServiceAccountKind, Namespace: s.ns, Name: notifyv1.DefaultServiceAccountName,
		}},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "read-sink-headers"},
	}))
	s.subscribeWith("sub", func(spec *notifyv1.WatchSubscriptionSpec) {
		spec.Sink.Webhook.HeadersFrom = &notifyv1.HeadersFrom{SecretRef: notifyv1.LocalSecretReference{Name: "sink-headers"}}
	})
	opts := s.managerOptions()
	opts.authorizationInterval = authzRecheck
	m := startManager(t, "manager", opts)
	s.waitReady(m)
	s.probe(30*time.Second, m)
	// Started before the outage: it takes seconds to serve.
	second := startSecondAPIServer(t)

	const objects = 5
	for i := range objects {
		requireNoError(t, s.led.create(s.ctx, fmt.Sprintf("cm-%d", i), "before the outage"))
		requireNoError(t, s.led.update(s.ctx, fmt.Sprintf("cm-%d", i), "before the outage"))
	}
	s.waitReceived(60*time.Second, []*manager{m}, "sub", s.expectAll(), "changes before the outage reach the sink")

	// Ready as the status tells it from now on (it cannot be written while the API server is
	// down), for the log; a subscription that reports Forbidden was torn down.
	var forbidden atomic.Value
	readyStates := s.watchReady("sub", func(state string) {
		if strings.HasSuffix(state, "/"+notifyv1.ReasonForbidden) {
			forbidden.Store(state)
		}
	})
	t.Cleanup(func() { t.Logf("Ready from before the outage to the end: %s", readyStates()) })
	during := s.led.len()
	// The restarted API server serves the manager's watch from where it was (see
	// uncachedConfigMaps), so each change of the outage can arrive with its own id.
	outage := restartAPIServerWith(t, uncachedConfigMaps, func() {
		s.led.use(second)
		defer s.led.use(nil)
		// Changes all along the outage: every object updated several times (one relist
		// could not tell them apart), new ones created and updated, one deleted.
		start := time.Now()
		for round := 0; time.Since(start) < longOutage; round++ {
			if err := m.alive(); err != nil {
				t.Fatalf("while the API server was down: %v", err)
			}
			phase := fmt.Sprintf("through the second API server, %s into the outage",
				time.Since(start).Round(100*time.Millisecond))
			requireNoError(t, s.led.update(s.ctx, fmt.Sprintf("cm-%d", round%objects), phase))
			if round%4 == 0 {
				name := fmt.Sprintf("down-%d", round/4)
				requireNoError(t, s.led.create(s.ctx, name, phase))
				requireNoError(t, s.led.update(s.ctx, name, phase))
			}
			if round == 6 {
				requireNoError(t, s.led.remove(s.ctx, "down-0", phase))
			}
			time.Sleep(250 * time.Millisecond) // pacing the writes over the outage, not a wait for an outcome
		}
	})
	t.Cleanup(func() {
		// Later tests get the API server as it was, ConfigMaps from the watch cache; with no
		// manager watching it stops at once.
		if m.running() {
			_ = m.cmd.Process.Kill()
			<-m.done
		}
		restartAPIServerWith(t, map[string]string{"watch-cache-sizes": ""}, nil)
	})
	t.Logf("API server unavailable for %s; %d changes written through the second API server meanwhile",
		outage.Round(time.Millisecond), s.led.len()-during)

	for i := range objects {
		requireNoError(t, s.led.update(s.ctx, fmt.Sprintf("cm-%d", i), "after the outage"))
	}
	requireNoError(t, s.led.create(s.ctx, "late-0", "after the outage"))

	exp := s.expectAll()
	s.eventually(60*time.Second, []*manager{m}, "every change reaches sub, which stays Ready", func() error {
		if state := forbidden.Load(); state != nil {
			return StopTrying(fmt.Sprintf("the subscription was torn down: Ready %s after the outage; what it "+
				"has received:\n%s", state, exp.check(s.sink.deliveries("sub"))))
		}
		if missing, _ := exp.diff(s.sink.deliveries("sub")); len(missing) > 0 {
			return errors.New(exp.check(s.sink.deliveries("sub")))
		}
		return nil
	})
	s.awaitExpected(30*time.Second, []*manager{m}, map[string]*expectation{"sub": exp})
	if resyncs := s.resyncs("sub"); len(resyncs) != 0 {
		t.Errorf("%d resync events after an outage that lost nothing (the subscription was torn down and "+
			"started again, or its stream re-listed): %v", len(resyncs), resyncs)
	}
	if err := m.alive(); err != nil {
		t.Error(err)
	}
}

// startSecondAPIServer starts another kube-apiserver on the package's etcd, stopped at test
// end, and returns an admin client of it: the cluster as other clients see it while the
// managers' API server is down.
func startSecondAPIServer(t *testing.T) client.Client {
	t.Helper()
	assets, err := testenv.AssetsDir()
	requireNoError(t, err)
	out := &lineLog{}
	api := &envtest.APIServer{
		EtcdURL: env.ControlPlane.Etcd.URL,
		Path:    filepath.Join(assets, "kube-apiserver"),
		CertDir: t.TempDir(),
		Out:     out, Err: out,
		StopTimeout: apiServerStopGrace,
	}
	started := time.Now()
	if err := api.Start(); err != nil {
		t.Fatalf("starting a second kube-apiserver: %v\n%s", err, out.tail(60))
	}
	t.Cleanup(func() {
		if err := api.Stop(); err != nil {
			t.Logf("stopping the second kube-apiserver: %v", err)
		}
		if t.Failed() {
			t.Logf("---- second kube-apiserver output ----\n%s", out.tail(40))
		}
	})
	cfg, err := api.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, &rest.Config{})
	requireNoError(t, err)
	cfg.Host, cfg.CAData = api.SecureServing.URL("https", "/").String(), api.CA
	cfg.QPS, cfg.Burst = 500, 1000
	c, err := client.New(cfg, client.Options{Scheme: k8s.Scheme()})
	requireNoError(t, err)
	t.Logf("second kube-apiserver on %s serving after %s", api.HostPort(),
		time.Since(started).Round(time.Millisecond))
	return c
}
