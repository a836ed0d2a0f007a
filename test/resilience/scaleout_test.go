package resilience

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/shard"
)

// The scale-out scenario: 300 subscriptions over 30 resources (CRDs of one group, ten
// subscriptions each, all in one namespace, so one stream per resource).
const (
	scaleResources       = 30
	scaleSubsPerResource = 10
)

// cluster is a set of manager processes running with --sharding=Leases.
type cluster struct {
	s        *scenario
	group    string
	managers map[string]*manager
	// ids are the event ids each resource's changes must bring to each of its
	// subscriptions.
	mu  sync.Mutex
	ids map[string][]string // resource -> ids
	n   int
}

func (c *cluster) start(names ...string) {
	for _, name := range names {
		opts := c.s.managerOptions()
		opts.replicaName = name
		opts.shutdownGrace = shutdownGrace
		c.managers[name] = startManager(c.s.t, name, opts)
	}
}

func (c *cluster) running() []*manager { return slices.Collect(maps.Values(c.managers)) }

func (c *cluster) members() []string { return slices.Sorted(maps.Keys(c.managers)) }

func (c *cluster) resource(i int) string { return fmt.Sprintf("w%02ds", i) }

func (c *cluster) subName(i, j int) string { return fmt.Sprintf("%s-%d", c.resource(i), j) }

func (c *cluster) shardKey(i int) string { return c.resource(i) + "." + c.group + "/v1" }

// setupScaleOut creates the CRDs, the grant for the subscriptions' ServiceAccount and the
// subscriptions.
func setupScaleOut(t *testing.T) *cluster {
	s := newScenario(t, "scale")
	c := &cluster{s: s, group: "so" + rand.String(5) + ".example.com", managers: map[string]*manager{},
		ids: map[string][]string{}}
	for i := range scaleResources {
		plural := c.resource(i)
		crd := &apiextensionsv1.CustomResourceDefinition{
			ObjectMeta: metav1.ObjectMeta{Name: plural + "." + c.group},
			Spec: apiextensionsv1.CustomResourceDefinitionSpec{
				Group: c.group, Scope: apiextensionsv1.NamespaceScoped,
				Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: plural, Singular: strings.TrimSuffix(plural, "s"),
					Kind: "W" + strings.TrimSuffix(plural[1:], "s"), ListKind: "W" + strings.TrimSuffix(plural[1:], "s") + "List"},
				Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v1", Served: true, Storage: true,
					Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
						Type: "object", XPreserveUnknownFields: new(true)}}}},
			},
		}
		requireNoError(t, k8s.Create(s.ctx, crd))
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), crd) })
	}
	requireNoError(t, k8s.Create(s.ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: "scale-watcher"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{c.group}, Resources: []string{"*"},
			Verbs: []string{"list", "watch"}}},
	}))
	requireNoError(t, k8s.Create(s.ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: "scale-watcher"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: s.ns,
			Name: notifyv1.DefaultServiceAccountName}},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "scale-watcher"},
	}))
	// Established CRDs, so the objects written later are served.
	s.eventually(60*time.Second, nil, "the CRDs are established", func() error {
		for i := range scaleResources {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := k8s.Get(s.ctx, client.ObjectKey{Name: c.resource(i) + "." + c.group}, crd); err != nil {
				return err
			}
			established := slices.ContainsFunc(crd.Status.Conditions,
				func(cd apiextensionsv1.CustomResourceDefinitionCondition) bool {
					return cd.Type == apiextensionsv1.Established && cd.Status == apiextensionsv1.ConditionTrue
				})
			if !established {
				return fmt.Errorf("%s not established", crd.Name)
			}
		}
		return nil
	})
	for i := range scaleResources {
		for j := range scaleSubsPerResource {
			s.subscribeWith(c.subName(i, j), func(spec *notifyv1.WatchSubscriptionSpec) {
				spec.Resource = notifyv1.ResourceRef{Group: c.group, Version: "v1", Resource: c.resource(i)}
			})
		}
	}
	return c
}

// served reads which replica serves each resource, from the subscriptions' status: every
// subscription must be Ready, served by a running replica, and those of one resource by
// the same one.
func (c *cluster) served() (map[string]string, error) {
	list := &notifyv1.WatchSubscriptionList{}
	if err := k8s.List(c.s.ctx, list, client.InNamespace(c.s.ns)); err != nil {
		return nil, err
	}
	if len(list.Items) != scaleResources*scaleSubsPerResource {
		return nil, fmt.Errorf("%d subscriptions listed", len(list.Items))
	}
	out := map[string]string{}
	for _, ws := range list.Items {
		cond := meta.FindStatusCondition(ws.Status.Conditions, notifyv1.ConditionReady)
		if cond == nil || cond.Status != metav1.ConditionTrue || ws.Status.ObservedGeneration != ws.Generation {
			return nil, fmt.Errorf("%s not Ready: %+v", ws.Name, cond)
		}
		if _, ok := c.managers[ws.Status.Replica]; !ok {
			return nil, fmt.Errorf("%s served by %q, not a running replica %v", ws.Name, ws.Status.Replica, c.members())
		}
		key := ws.Spec.Resource.Resource + "." + ws.Spec.Resource.Group + "/v1"
		if prev, ok := out[key]; ok && prev != ws.Status.Replica {
			return nil, fmt.Errorf("the subscriptions of %s are served by %s and %s", key, prev, ws.Status.Replica)
		}
		out[key] = ws.Status.Replica
	}
	return out, nil
}

// settle waits until the assignment the subscriptions show is the one shard.Assign
// gives for the running replicas, and returns it.
func (c *cluster) settle(timeout time.Duration, what string) map[string]string {
	keys := make([]string, 0, scaleResources)
	for i := range scaleResources {
		keys = append(keys, c.shardKey(i))
	}
	want := shard.Assign(c.members(), keys)
	var got map[string]string
	c.s.eventually(timeout, c.running(), what, func() error {
		var err error
		if got, err = c.served(); err != nil {
			return err
		}
		if !maps.Equal(got, want) {
			return fmt.Errorf("served %v, want %v", got, want)
		}
		// The claims agree: each resource's claim Lease is held by the replica serving it.
		var claims coordinationv1.LeaseList
		if err := k8s.List(c.s.ctx, &claims, client.InNamespace(c.s.cpNS),
			client.MatchingLabels{"app.kubernetes.io/component": "shard"}); err != nil {
			return err
		}
		held := map[string]string{}
		for _, l := range claims.Items {
			if l.Spec.HolderIdentity != nil {
				held[l.Annotations["dynamicnotifier.io/shard"]] = *l.Spec.HolderIdentity
			}
		}
		if !maps.Equal(held, want) {
			return fmt.Errorf("claims held %v, want %v", held, want)
		}
		return nil
	})
	return got
}

// groupWatches is the number of watches the API server serves on the scenario's group.
func (c *cluster) groupWatches() (int, error) {
	raw, err := clientset.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(c.s.ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_longrunning_requests{") || !strings.Contains(line, `verb="WATCH"`) ||
			!strings.Contains(line, `group="`+c.group+`"`) {
			continue
		}
		n, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
		if err != nil {
			return 0, err
		}
		total += int(n)
	}
	return total, nil
}

// write makes rounds of changes to one object of every resource (created on the first
// round, updated after) and records the ids their events carry.
func (c *cluster) write(ctx context.Context, rounds int) error {
	for range rounds {
		c.mu.Lock()
		c.n++
		n := c.n
		c.mu.Unlock()
		for i := range scaleResources {
			ri := c.s.ns
			obj := &unstructured.Unstructured{}
			obj.SetAPIVersion(c.group + "/v1")
			obj.SetKind("W" + strings.TrimSuffix(c.resource(i)[1:], "s"))
			obj.SetNamespace(ri)
			obj.SetName("obj")
			_ = unstructured.SetNestedField(obj.Object, int64(n), "spec", "n")
			typ := "Updated"
			err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj.DeepCopy())
			if err == nil {
				cur := &unstructured.Unstructured{}
				cur.SetGroupVersionKind(obj.GroupVersionKind())
				if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), cur); err != nil {
					return err
				}
				_ = unstructured.SetNestedField(cur.Object, int64(n), "spec", "n")
				if err := k8s.Update(ctx, cur); err != nil {
					return err
				}
				obj = cur
			} else {
				typ = "Added"
				if err := k8s.Create(ctx, obj); err != nil {
					return err
				}
			}
			c.mu.Lock()
			c.ids[c.resource(i)] = append(c.ids[c.resource(i)], eventID(obj.GetUID(), obj.GetResourceVersion(), typ))
			c.mu.Unlock()
		}
	}
	return nil
}

// missing lists, per subscription, the recorded ids its sink path has not received.
func (c *cluster) missing() []string {
	got := map[string]map[string]bool{}
	c.s.sink.mu.Lock()
	for _, d := range c.s.sink.got {
		if got[d.Path] == nil {
			got[d.Path] = map[string]bool{}
		}
		got[d.Path][d.ID] = true
	}
	c.s.sink.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for i := range scaleResources {
		for j := range scaleSubsPerResource {
			for _, id := range c.ids[c.resource(i)] {
				if !got[c.subName(i, j)][id] {
					out = append(out, c.subName(i, j)+" "+id)
				}
			}
		}
	}
	return out
}

// arrivalTimeout bounds how long the changes written take to reach every subscription.
const arrivalTimeout = 30 * time.Second

func (c *cluster) allArrive(what string) {
	c.s.eventually(arrivalTimeout, c.running(), what, func() error {
		if m := c.missing(); len(m) > 0 {
			return fmt.Errorf("%d changes not delivered, such as %v", len(m), m[:min(5, len(m))])
		}
		return nil
	})
}

func spread(served map[string]string) (float64, map[string]int) {
	per := map[string]int{}
	for _, r := range served {
		per[r]++
	}
	most := slices.Max(slices.Collect(maps.Values(per)))
	return float64(most) / (float64(len(served)) / float64(len(per))), per
}

func moves(before, after map[string]string) int {
	n := 0
	for k, r := range before {
		if after[k] != r {
			n++
		}
	}
	return n
}

// TestScaleOut: three replicas split 300 subscriptions over 30 resources (one watch per
// resource in all, an even spread), one is SIGKILLed while changes stream and its
// subscriptions are served by the others within the lease duration, then the replicas go
// 2 → 5 → 2 with SIGTERM: each time the resources move as the assignment says, and every
// change arrives.
func TestScaleOut(t *testing.T) {
	c := setupScaleOut(t)
	s := c.s
	c.start("replica-a", "replica-b", "replica-c")
	served := c.settle(90*time.Second, "three replicas serve all 300 subscriptions")
	ratio, per := spread(served)
	t.Logf("streams per replica: %v", per)
	if len(per) != 3 || ratio > 1.3 {
		t.Fatalf("spread over %d replicas, max/mean %.2f: %v", len(per), ratio, per)
	}
	s.eventually(30*time.Second, c.running(), "one watch per resource in all", func() error {
		n, err := c.groupWatches()
		if err != nil {
			return err
		}
		if n != scaleResources {
			return fmt.Errorf("%d watches on the group, want %d", n, scaleResources)
		}
		return nil
	})
	var leases coordinationv1.LeaseList
	requireNoError(t, k8s.List(s.ctx, &leases, client.InNamespace(s.cpNS),
		client.MatchingLabels{"app.kubernetes.io/component": "member"}))
	if len(leases.Items) != 3 {
		t.Fatalf("%d member Leases, want 3", len(leases.Items))
	}
	requireNoError(t, c.write(s.ctx, 1))
	c.allArrive("the first changes reach every subscription")

	// SIGKILL while changes stream.
	written := make(chan error, 1)
	go func() { written <- c.write(s.ctx, 4) }()
	time.Sleep(200 * time.Millisecond)
	killed := time.Now()
	victim := c.managers["replica-c"]
	delete(c.managers, "replica-c")
	victim.kill(t)
	c.settle(memberLeaseDuration+8*time.Second-time.Since(killed),
		"the killed replica's subscriptions are served by the others")
	t.Logf("served by the others %s after the kill", time.Since(killed).Round(time.Millisecond))
	requireNoError(t, <-written)
	c.allArrive("every change of the stream arrives after the kill")

	// 2 → 5 → 2 with SIGTERM, writing meanwhile.
	before := c.settle(time.Second, "two replicas")
	go func() { written <- c.write(s.ctx, 3) }()
	c.start("replica-d", "replica-e", "replica-f")
	after := c.settle(60*time.Second, "five replicas")
	requireNoError(t, <-written)
	t.Logf("2 → 5: %d of %d resources moved", moves(before, after), scaleResources)
	if m := moves(before, after); float64(m) > 1.5*3.0/5*scaleResources {
		t.Errorf("%d resources moved from 2 to 5 replicas, the hashing's share is about %d", m, scaleResources*3/5)
	}
	c.allArrive("every change arrives while scaling up")

	before = after
	go func() { written <- c.write(s.ctx, 3) }()
	var wg sync.WaitGroup
	for _, name := range []string{"replica-d", "replica-e", "replica-f"} {
		m := c.managers[name]
		delete(c.managers, name)
		wg.Go(func() { m.terminate(t, shutdownGrace+15*time.Second) })
	}
	wg.Wait()
	requireNoError(t, <-written)
	after = c.settle(30*time.Second, "two replicas again")
	t.Logf("5 → 2: %d of %d resources moved", moves(before, after), scaleResources)
	c.allArrive("every change arrives while scaling down")
	s.eventually(10*time.Second, c.running(), "the stopped replicas' Leases are gone", func() error {
		requireNoError(t, k8s.List(s.ctx, &leases, client.InNamespace(s.cpNS),
			client.MatchingLabels{"app.kubernetes.io/component": "member"}))
		names := make([]string, 0, len(leases.Items))
		for _, l := range leases.Items {
			names = append(names, *l.Spec.HolderIdentity)
		}
		for _, gone := range []string{"replica-d", "replica-e", "replica-f"} {
			if slices.Contains(names, gone) {
				return fmt.Errorf("member Leases of %v", names)
			}
		}
		return nil
	})
}
