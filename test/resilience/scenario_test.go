package resilience

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

// scenario is one test's world: a namespace of ConfigMaps the test writes, a namespace for
// the managers' checkpoints and Lease, a sink, and the subscriptions posting to it.
type scenario struct {
	t      *testing.T
	ctx    context.Context
	ns     string // subscriptions and the ConfigMaps they watch
	cpNS   string // checkpoints and the leader-election Lease
	sink   *sink
	led    *ledger
	subs   []string
	probes int
	// unseenProbes are probe ids written before the watch was proven to run: they may or
	// may not be delivered.
	unseenProbes map[string]bool
}

func newScenario(t *testing.T, prefix string) *scenario {
	t.Helper()
	suffix := rand.String(5)
	s := &scenario{
		t: t, ctx: context.Background(),
		ns: prefix + "-" + suffix, cpNS: "cp-" + suffix,
		unseenProbes: map[string]bool{},
	}
	for _, ns := range []string{s.ns, s.cpNS} {
		requireNoError(t, k8s.Create(s.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	s.led = newLedger(s.ns)
	s.sink = startSink(t)
	// Subscriptions go before the sink closes, so later tests' managers do not serve them.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, name := range s.subs {
			ws := &notifyv1.WatchSubscription{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: name}}
			_ = client.IgnoreNotFound(k8s.Delete(ctx, ws))
		}
	})
	return s
}

func (s *scenario) managerOptions() managerOptions {
	return managerOptions{checkpointNamespace: s.cpNS}
}

// subscribe creates a subscription to the ConfigMaps of the scenario's namespace, posting to
// the sink at path name.
func (s *scenario) subscribe(name string) {
	s.t.Helper()
	ws := &notifyv1.WatchSubscription{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: name},
		Spec: notifyv1.WatchSubscriptionSpec{
			Resource: notifyv1.ResourceRef{Group: "", Version: "v1", Resource: "configmaps"},
			Sink:     notifyv1.Sink{Webhook: &notifyv1.WebhookSink{URL: s.sink.url(name)}},
		},
	}
	requireNoError(s.t, k8s.Create(s.ctx, ws))
	s.subs = append(s.subs, name)
}

// eventually polls cond until it returns nil, failing the test after timeout with what and
// cond's last error. It stops at once if a manager that should run has exited.
func (s *scenario) eventually(timeout time.Duration, running []*manager, what string, cond func() error) {
	s.t.Helper()
	var last error
	failed := false
	g := NewGomega(func(string, ...int) { failed = true })
	start := time.Now()
	g.Eventually(func() error {
		for _, m := range running {
			if err := m.alive(); err != nil {
				last = err
				return StopTrying(err.Error())
			}
		}
		last = cond()
		return last
	}).WithTimeout(timeout).WithPolling(100 * time.Millisecond).Should(Succeed())
	if failed {
		s.t.Fatalf("%s: not after %s:\n%v", what, time.Since(start).Round(time.Millisecond), last)
	}
}

// waitReady waits until every subscription reports Ready=True.
func (s *scenario) waitReady(running ...*manager) {
	s.t.Helper()
	for _, name := range s.subs {
		s.eventually(30*time.Second, running, "subscription "+name+" becomes Ready", func() error {
			ws := &notifyv1.WatchSubscription{}
			if err := k8s.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: name}, ws); err != nil {
				return err
			}
			c := meta.FindStatusCondition(ws.Status.Conditions, notifyv1.ConditionReady)
			if c == nil || c.Status != metav1.ConditionTrue {
				return fmt.Errorf("Ready condition: %+v", c)
			}
			return nil
		})
	}
}

// probe proves every subscription's watch delivers: it creates probe ConfigMaps until one
// arrives at every subscription. Probes written before that may arrive or not.
func (s *scenario) probe(timeout time.Duration, running ...*manager) {
	s.t.Helper()
	var current string // id of the newest probe
	var written time.Time
	s.eventually(timeout, running, "a probe ConfigMap reaches every subscription", func() error {
		if current != "" && s.receivedByAll(current) {
			return nil
		}
		if current == "" || time.Since(written) > 3*time.Second {
			if current != "" {
				s.unseenProbes[current] = true
			}
			s.probes++
			if err := s.led.create(s.ctx, fmt.Sprintf("probe-%d", s.probes), "probe"); err != nil {
				return err
			}
			current, written = s.led.last().ID, time.Now()
		}
		return fmt.Errorf("probe %s not delivered to every subscription yet", current)
	})
	delete(s.unseenProbes, current)
}

// waitCheckpoint waits until the managers have saved a checkpoint, so a restart has one to
// resume from. Checkpoints are saved every --checkpoint-interval: a manager killed before
// its first save leaves none, and its successor starts fresh, without the changes made in
// between (seen with a kill 0.6s after the start: 172 of 221 changes never arrived). The
// tests here kill a manager that has saved; that window is reported, not tested.
func (s *scenario) waitCheckpoint(running ...*manager) {
	s.t.Helper()
	what := "checkpoint ConfigMap " + s.cpNS + "/" + checkpointConfigMap + " is saved"
	s.eventually(30*time.Second, running, what, func() error {
		return k8s.Get(s.ctx, client.ObjectKey{Namespace: s.cpNS, Name: checkpointConfigMap}, &corev1.ConfigMap{})
	})
}

// barrier writes one more ConfigMap and waits until every subscription received it: what
// the manager sent before it has had its chance to arrive.
func (s *scenario) barrier(running ...*manager) {
	s.t.Helper()
	s.probes++
	requireNoError(s.t, s.led.create(s.ctx, fmt.Sprintf("barrier-%d", s.probes), "barrier after the last change"))
	id := s.led.last().ID
	s.eventually(30*time.Second, running, "barrier ConfigMap reaches every subscription", func() error {
		if !s.receivedByAll(id) {
			return fmt.Errorf("barrier %s not delivered to every subscription yet", id)
		}
		return nil
	})
}

func (s *scenario) receivedByAll(id string) bool {
	for _, sub := range s.subs {
		if !s.sink.has(sub, id) {
			return false
		}
	}
	return true
}

// expectAll requires the event of every change written so far.
func (s *scenario) expectAll() *expectation { return s.expect(s.led.since(0)) }

// expect requires the event of every change given (probes that never proved anything are
// optional).
func (s *scenario) expect(changes []change) *expectation {
	e := newExpectation(s.led)
	e.requireAll(changes)
	for id := range s.unseenProbes {
		delete(e.required, id)
		e.optional[id] = "probe written before the watch was proven to run"
	}
	return e
}

// waitDeliveries waits until sub has received n deliveries more than base.
func (s *scenario) waitDeliveries(sub string, base, n int, what string, running ...*manager) {
	s.t.Helper()
	s.eventually(60*time.Second, running, what, func() error {
		if got := s.sink.count(sub) - base; got < n {
			return fmt.Errorf("%d delivered", got)
		}
		return nil
	})
}

// waitReceived waits until sub has received every id exp requires; ids it does not expect
// are left to a later check.
func (s *scenario) waitReceived(timeout time.Duration, running []*manager, sub string, exp *expectation,
	what string) {
	s.t.Helper()
	s.eventually(timeout, running, what, func() error {
		got := s.sink.deliveries(sub)
		if missing, _ := exp.diff(got); len(missing) > 0 {
			return errors.New(exp.check(got))
		}
		return nil
	})
}

// awaitExpected waits until no required id is missing at any subscription, then writes a
// barrier and compares the exact sets. exps is the expectation per subscription.
func (s *scenario) awaitExpected(timeout time.Duration, running []*manager, exps map[string]*expectation) {
	s.t.Helper()
	for _, sub := range s.subs {
		s.waitReceived(timeout, running, sub, exps[sub], "every expected change reaches "+sub)
	}
	s.barrier(running...)
	for _, sub := range s.subs {
		exps[sub].requireAll([]change{s.led.last()}) // the barrier itself
		got := s.sink.deliveries(sub)
		if report := exps[sub].check(got); report != "" {
			s.t.Errorf("subscription %s: the ids received differ from the changes written:\n%s", sub, report)
		}
		distinct, total := distinctIDs(got)
		s.t.Logf("subscription %s: %d distinct change ids, %d deliveries (%d duplicates)",
			sub, distinct, total, total-distinct)
	}
}

// resyncs returns the resync deliveries of sub.
func (s *scenario) resyncs(sub string) []delivery {
	var out []delivery
	for _, d := range s.sink.deliveries(sub) {
		if isResync(d) {
			out = append(out, d)
		}
	}
	return out
}

// leaseHolders returns the holder of every Lease in the checkpoint namespace.
func (s *scenario) leaseHolders() (map[string]string, error) {
	var leases coordinationv1.LeaseList
	if err := k8s.List(s.ctx, &leases, client.InNamespace(s.cpNS)); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, l := range leases.Items {
		if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" {
			out[l.Name] = *l.Spec.HolderIdentity
		}
	}
	return out, nil
}

// watchReady samples sub's Ready condition until the returned function is called, which
// returns the distinct states seen, in order.
func (s *scenario) watchReady(sub string) func() string {
	stop, done := make(chan struct{}), make(chan string)
	go func() {
		var seen []string
		for {
			ws := &notifyv1.WatchSubscription{}
			if err := k8s.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: sub}, ws); err == nil {
				state := "none"
				if c := meta.FindStatusCondition(ws.Status.Conditions, notifyv1.ConditionReady); c != nil {
					state = string(c.Status) + "/" + c.Reason
				}
				if len(seen) == 0 || seen[len(seen)-1] != state {
					seen = append(seen, state)
				}
			}
			select {
			case <-stop:
				done <- strings.Join(seen, " -> ")
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return func() string { close(stop); return <-done }
}

// lastResyncTime reads status.lastResyncTime without relying on the Go type having it.
func (s *scenario) lastResyncTime(sub string) (string, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(notifyv1.GroupVersion.WithKind("WatchSubscription"))
	if err := k8s.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: sub}, u); err != nil {
		return "", err
	}
	v, _, err := unstructured.NestedString(u.Object, "status", "lastResyncTime")
	return v, err
}
