package resilience

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

// scenario is one test's world: a namespace of ConfigMaps the test writes (and any more it
// adds), a namespace for the managers' checkpoints and Lease, a sink, and the subscriptions
// posting to it. The subscriptions' ServiceAccount is granted what they watch, as a user
// would: the managers run with the binary's default SubjectAccessReview authorization.
type scenario struct {
	t      *testing.T
	ctx    context.Context
	ns     string // subscriptions and the ConfigMaps they watch
	cpNS   string // checkpoints and the leader-election Lease
	sink   *sink
	led    *ledger
	subs   []string
	probes int
	// watched are the namespaces each subscription watches.
	watched map[string][]string
	// unseenProbes are probe ids written before the watch was proven to run: they may or
	// may not be delivered.
	unseenProbes map[string]bool
}

// watcherRole is the Role each watched namespace has: list and watch ConfigMaps, what the
// subscriptions need and no more.
const watcherRole = "configmap-watcher"

func newScenario(t *testing.T, prefix string) *scenario {
	t.Helper()
	suffix := rand.String(5)
	s := &scenario{
		t: t, ctx: context.Background(),
		ns: prefix + "-" + suffix, cpNS: "cp-" + suffix,
		watched:      map[string][]string{},
		unseenProbes: map[string]bool{},
	}
	for _, ns := range []string{s.ns, s.cpNS} {
		requireNoError(t, k8s.Create(s.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	// The ServiceAccount the subscriptions act as (spec.serviceAccountName's default). No
	// controller creates it in envtest; SubjectAccessReviews do not need it, users have it.
	requireNoError(t, k8s.Create(s.ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: notifyv1.DefaultServiceAccountName}}))
	s.grantWatch(s.ns)
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

// addNamespace creates another namespace of ConfigMaps, <ns>-<suffix>, whose ConfigMaps the
// scenario's ServiceAccount may watch too, and returns its name. The ledger names its
// objects namespace/name.
func (s *scenario) addNamespace(suffix string) string {
	s.t.Helper()
	ns := s.ns + "-" + suffix
	requireNoError(s.t, k8s.Create(s.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	s.grantWatch(ns)
	return ns
}

// grantWatch lets the scenario's default ServiceAccount list and watch the ConfigMaps of ns:
// a Role and a RoleBinding, as a user would grant it.
func (s *scenario) grantWatch(ns string) {
	s.t.Helper()
	requireNoError(s.t, k8s.Create(s.ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: watcherRole},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"},
			Verbs: []string{"list", "watch"}}},
	}))
	requireNoError(s.t, k8s.Create(s.ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: watcherRole + "-" + s.ns},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: s.ns,
			Name: notifyv1.DefaultServiceAccountName}},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: watcherRole},
	}))
}

// objName is the ledger's name of the object called name in namespace ns.
func (s *scenario) objName(ns, name string) string {
	if ns == s.ns {
		return name
	}
	return ns + "/" + name
}

// namespaces are the namespaces some subscription watches, sorted.
func (s *scenario) namespaces() []string {
	var out []string
	for _, nss := range s.watched {
		out = append(out, nss...)
	}
	if len(out) == 0 {
		out = []string{s.ns}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (s *scenario) managerOptions() managerOptions {
	return managerOptions{checkpointNamespace: s.cpNS}
}

// subscribe creates a subscription to the ConfigMaps of the scenario's namespace, posting to
// the sink at path name.
func (s *scenario) subscribe(name string) { s.t.Helper(); s.subscribeWith(name, nil) }

// subscribeWith is subscribe with the spec changed by edit first (nil changes nothing).
func (s *scenario) subscribeWith(name string, edit func(*notifyv1.WatchSubscriptionSpec)) {
	s.t.Helper()
	ws := &notifyv1.WatchSubscription{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: name},
		Spec: notifyv1.WatchSubscriptionSpec{
			Resource: notifyv1.ResourceRef{Group: "", Version: "v1", Resource: "configmaps"},
			Sink:     &notifyv1.Sink{Webhook: &notifyv1.WebhookSink{URL: s.sink.url(name)}},
		},
	}
	if edit != nil {
		edit(&ws.Spec)
	}
	requireNoError(s.t, k8s.Create(s.ctx, ws))
	s.subs = append(s.subs, name)
	watched := []string{s.ns}
	if len(ws.Spec.Namespaces) > 0 {
		watched = make([]string, 0, len(ws.Spec.Namespaces))
		for _, ns := range ws.Spec.Namespaces {
			watched = append(watched, string(ns))
		}
	}
	s.watched[name] = watched
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

// probe proves every subscription's watch delivers: it creates a probe ConfigMap in every
// watched namespace until each arrives at every subscription watching its namespace. Probes
// written before that may arrive or not.
func (s *scenario) probe(timeout time.Duration, running ...*manager) {
	s.t.Helper()
	var current map[string]string // namespace -> id of its newest probe
	var written time.Time
	s.eventually(timeout, running, "a probe ConfigMap reaches every subscription", func() error {
		if current != nil && s.receivedByAll(current) {
			return nil
		}
		if current == nil || time.Since(written) > 3*time.Second {
			for _, id := range current {
				s.unseenProbes[id] = true
			}
			s.probes++
			current = map[string]string{}
			for _, ns := range s.namespaces() {
				if err := s.led.create(s.ctx, s.objName(ns, fmt.Sprintf("probe-%d", s.probes)), "probe"); err != nil {
					return err
				}
				current[ns] = s.led.last().ID
			}
			written = time.Now()
		}
		return fmt.Errorf("probes %v not delivered to every subscription yet", slices.Sorted(maps.Values(current)))
	})
	for _, id := range current {
		delete(s.unseenProbes, id)
	}
}

// Checkpoints (contract): ConfigMaps labelled app.kubernetes.io/component=checkpoints in the
// checkpoint namespace, named dynamic-notifier-checkpoints-00 up to -31 (as many as the
// points need, a power of two; binaries before that always used 32), each holding under
// checkpoints.json {"version":2,"points":[{"subscriber":"<ns>/<name>/<uid>",
// "stream":"configmaps./v1@<ns>","resourceVersion":...,"time":...}]}: one point per
// subscription and stream. Binaries before per-stream checkpoints kept a single ConfigMap
// dynamic-notifier-checkpoints with {"version":1,"subscriptions":{"<ns>/<name>/<uid>":
// {"stream":...,"resourceVersion":...}}}, one point per subscription; it is read too, so
// the tests run against such a binary.
const (
	checkpointConfigMap = "dynamic-notifier-checkpoints"
	checkpointKey       = "checkpoints.json"
	checkpointLabel     = "app.kubernetes.io/component"
)

// pointKey names a saved checkpoint: a subscriber (<ns>/<name>/<uid>) in a stream.
type pointKey struct{ subscriber, stream string }

// streamOf is the checkpoint stream of the ConfigMaps of namespace ns.
func streamOf(ns string) string { return "configmaps./v1@" + ns }

// savedPoints reads the checkpoints the managers saved in the checkpoint namespace: the
// resourceVersion of each point, and a description of what was found, for failures.
func (s *scenario) savedPoints() (map[pointKey]uint64, string, error) {
	var list corev1.ConfigMapList
	if err := k8s.List(s.ctx, &list, client.InNamespace(s.cpNS),
		client.MatchingLabels{checkpointLabel: "checkpoints"}); err != nil {
		return nil, "", err
	}
	type point struct {
		Subscriber      string `json:"subscriber"`
		Stream          string `json:"stream"`
		ResourceVersion string `json:"resourceVersion"`
	}
	var doc struct {
		Version       int              `json:"version"`
		Points        []point          `json:"points"`
		Subscriptions map[string]point `json:"subscriptions"`
	}
	out := map[pointKey]uint64{}
	var found []string
	for _, cm := range list.Items {
		doc.Points, doc.Subscriptions = nil, nil
		if err := json.Unmarshal([]byte(cm.Data[checkpointKey]), &doc); err != nil {
			return nil, "", fmt.Errorf("ConfigMap %s/%s: %s: %w", cm.Namespace, cm.Name, checkpointKey, err)
		}
		points := doc.Points
		switch {
		case doc.Version == 2 && strings.HasPrefix(cm.Name, checkpointConfigMap+"-"):
		case doc.Version == 1 && cm.Name == checkpointConfigMap:
			for sub, p := range doc.Subscriptions {
				p.Subscriber = sub
				points = append(points, p)
			}
		default:
			return nil, "", fmt.Errorf("ConfigMap %s/%s: unknown checkpoint format version %d",
				cm.Namespace, cm.Name, doc.Version)
		}
		for _, p := range points {
			rv, err := strconv.ParseUint(p.ResourceVersion, 10, 64)
			if err != nil {
				return nil, "", fmt.Errorf("ConfigMap %s/%s: point %+v: %w", cm.Namespace, cm.Name, p, err)
			}
			out[pointKey{p.Subscriber, p.Stream}] = rv
			found = append(found, fmt.Sprintf("%s: %s %s at %d", cm.Name, p.Subscriber, p.Stream, rv))
		}
	}
	slices.Sort(found)
	desc := "no checkpoints saved"
	if len(found) > 0 {
		desc = "saved: " + strings.Join(found, "; ")
	}
	return out, desc, nil
}

// subscriber is the checkpoint name of subscription sub: <ns>/<name>/<uid>.
func (s *scenario) subscriber(sub string) (string, error) {
	ws := &notifyv1.WatchSubscription{}
	if err := k8s.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: sub}, ws); err != nil {
		return "", err
	}
	return s.ns + "/" + sub + "/" + string(ws.UID), nil
}

// waitCheckpoint waits until the managers have saved a checkpoint for every stream of every
// subscription, so a restart has one to resume from. Checkpoints are saved every
// --checkpoint-interval: a manager killed before its first save leaves none, and its
// successor starts fresh, without the changes made in between (seen with a kill 0.6s after
// the start: 172 of 221 changes never arrived). The tests here kill a manager that has
// saved; that window is reported, not tested.
func (s *scenario) waitCheckpoint(running ...*manager) {
	s.t.Helper()
	s.waitPoints(running, "every subscription has a checkpoint for each of its streams in "+s.cpNS,
		func(string, string) uint64 { return 0 })
}

// waitPoints waits until every subscription has a saved checkpoint in each namespace it
// watches at resourceVersion atLeast(subscription, namespace) or later, and returns them.
func (s *scenario) waitPoints(
	running []*manager, what string, atLeast func(sub, ns string) uint64,
) map[pointKey]uint64 {
	s.t.Helper()
	var points map[pointKey]uint64
	s.eventually(30*time.Second, running, what, func() error {
		var desc string
		var err error
		if points, desc, err = s.savedPoints(); err != nil {
			return err
		}
		for _, sub := range s.subs {
			name, err := s.subscriber(sub)
			if err != nil {
				return err
			}
			for _, ns := range s.watched[sub] {
				rv, ok := points[pointKey{name, streamOf(ns)}]
				if want := atLeast(sub, ns); !ok || rv < want {
					return fmt.Errorf("no checkpoint of %s in stream %s at resourceVersion %d or later; %s",
						name, streamOf(ns), want, desc)
				}
			}
		}
		return nil
	})
	return points
}

// barrier writes one more ConfigMap in every watched namespace and waits until every
// subscription received those of the namespaces it watches: what the manager sent before
// has had its chance to arrive. It returns the barrier changes by namespace.
func (s *scenario) barrier(running ...*manager) map[string]change {
	s.t.Helper()
	s.probes++
	written := map[string]change{}
	ids := map[string]string{}
	for _, ns := range s.namespaces() {
		name := s.objName(ns, fmt.Sprintf("barrier-%d", s.probes))
		requireNoError(s.t, s.led.create(s.ctx, name, "barrier after the last change"))
		written[ns], ids[ns] = s.led.last(), s.led.last().ID
	}
	s.eventually(30*time.Second, running, "barrier ConfigMaps reach every subscription", func() error {
		if !s.receivedByAll(ids) {
			return fmt.Errorf("barriers %v not delivered to every subscription yet", slices.Sorted(maps.Values(ids)))
		}
		return nil
	})
	return written
}

// receivedByAll tells whether every subscription received the ids (by namespace) of the
// namespaces it watches.
func (s *scenario) receivedByAll(ids map[string]string) bool {
	for _, sub := range s.subs {
		for _, ns := range s.watched[sub] {
			if id, ok := ids[ns]; ok && !s.sink.has(sub, id) {
				return false
			}
		}
	}
	return true
}

// expectAll requires the event of every change written so far (in every namespace: a
// scenario's subscriptions watch the same namespaces).
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
	barriers := s.barrier(running...)
	for _, sub := range s.subs {
		for _, ns := range s.watched[sub] {
			exps[sub].requireAll([]change{barriers[ns]}) // the barriers themselves
		}
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
// returns the distinct states seen (status/reason), in order. onState, when set, hears each
// new state as it is seen.
func (s *scenario) watchReady(sub string, onState func(string)) func() string {
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
					if onState != nil {
						onState(state)
					}
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
