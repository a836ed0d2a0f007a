package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/membership"
	"github.com/dynamic-notifier/dynamic-notifier/internal/operator"
	"github.com/dynamic-notifier/dynamic-notifier/internal/shard"
	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

// Member Lease timing of the replicas, as in the scale-out test: short, so replicas see each
// other within seconds; not shorter, so a renewal late on two loaded cores stops no one.
const (
	replicaLeaseDuration = 8 * time.Second
	replicaRenewDeadline = 6 * time.Second
	replicaRetryPeriod   = time.Second
	// replicaObjects is how many objects of each resource the bursts change, round robin.
	replicaObjects = 5
)

// replicasPhase is one count of replicas serving the same subscriptions.
type replicasPhase struct {
	Replicas      int `json:"replicas"`
	Subscriptions int `json:"subscriptions"`
	// Streams is the distinct (resource, namespace) the subscriptions read; Watches what the
	// API server held open on the resources once all were settled, beyond what it held
	// with the replicas idle.
	Streams int `json:"streams"`
	Watches int `json:"watches"`
	// Served is how many streams each replica serves, from the subscriptions' status.replica;
	// MaxServed the most of them and Bound what shard.Assign allows, ⌈1.15 × mean⌉.
	Served    map[string]int `json:"served"`
	MaxServed int            `json:"maxServed"`
	Bound     int            `json:"bound"`
	// Settled is from the first create until every subscription was Ready on the replica
	// shard.Assign gives its resource.
	Settled string `json:"settled"`
	// RSS is each replica's resident set once settled (VmRSS); RSSPeak the most it was
	// from then until after the bursts (VmHWM, reset when settled if PeakReset).
	RSS       []uint64 `json:"rss"`
	RSSPeak   []uint64 `json:"rssPeak"`
	PeakReset bool     `json:"peakReset"`
	RSSMean   float64  `json:"rssMean"`
	RSSMax    float64  `json:"rssMax"`
	// Live: changes written back to back, delivered as they come; Backlog: the same number
	// written while the sink holds every request, then delivered once it opens.
	Live    replicasBurst `json:"live"`
	Backlog replicasBurst `json:"backlog"`
}

// replicasBurst is Writes changes spread round robin over the resources, and what reached
// the sink: each change once per subscription on its resource.
type replicasBurst struct {
	Writes    int     `json:"writes"`
	WriteRate float64 `json:"writeRate"`
	Expected  int     `json:"expected"`
	Delivered int     `json:"delivered"`
	// Seconds is from the first write (live) or the sink's opening (backlog) until the last
	// delivery; Rate is Delivered over it.
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"rate"`
	Dropped float64 `json:"dropped"`
	Failed  float64 `json:"failed"`
}

func (b replicasBurst) complete() bool { return b.Delivered == b.Expected && b.Dropped == 0 }

// runReplicas: the same subscriptions over ten resources served by 1, 2 and 4 operator
// processes with --sharding=Leases: the streams the API server serves and how they spread
// over the replicas, each replica's memory, and the deliveries per second of a burst of
// changes, against the first count (one replica).
func runReplicas(ctx context.Context, h *harness) ([]Row, any, error) {
	writerCfg := rest.CopyConfig(h.cfg)
	writerCfg.QPS = -1
	dyn, err := dynamic.NewForConfig(writerCfg)
	if err != nil {
		return nil, nil, err
	}
	phases := make([]replicasPhase, 0, len(h.opts.ReplicaCounts))
	for _, n := range h.opts.ReplicaCounts {
		p, err := h.replicas(ctx, dyn, n)
		phases = append(phases, p)
		if err != nil {
			return nil, phases, fmt.Errorf("%d replicas: %w", n, err)
		}
		h.logf("replicas %d: %d watches for %d streams, served %s, settled in %s; RSS mean %s, max %s; "+
			"live %.0f/s (%d of %d, writes %.0f/s), backlog %.0f/s (%d of %d)", n, p.Watches, p.Streams,
			servedNote(p), p.Settled, format(p.RSSMean, "bytes"), format(p.RSSMax, "bytes"),
			p.Live.Rate, p.Live.Delivered, p.Live.Expected, p.Live.WriteRate,
			p.Backlog.Rate, p.Backlog.Delivered, p.Backlog.Expected)
	}
	return replicasRows(phases), phases, nil
}

// replicasRows compares every count with the first.
func replicasRows(phases []replicasPhase) []Row {
	rows := make([]Row, 0, 6*len(phases))
	base := phases[0]
	for i, p := range phases {
		label := fmt.Sprintf("Replicas: %d, %s / %d GVRs", p.Replicas, subs(p.Subscriptions), len(convergenceGVRs))
		id := "replicas/" + strconv.Itoa(p.Replicas) + "/"
		// versus compares with the first count; the first count's rows are that baseline.
		versus := func(r Row, baseline float64) Row {
			if i == 0 {
				return r
			}
			r.Baseline, r.BaselineName = baseline, replicaCount(base.Replicas)
			if r.hasRatio() {
				r.Ratio = r.Ours / r.Baseline
			}
			return r
		}
		mean := float64(p.Streams) / float64(p.Replicas)
		peak := slices.Max(append([]uint64{0}, p.RSSPeak...))
		rows = append(rows,
			newRow(id+"streams", label, "API server watches (streams)", "", float64(p.Watches), float64(p.Streams),
				"distinct streams").goal("= distinct streams", p.Watches == p.Streams).
				note("streams per replica %s; settled in %s", servedNote(p), p.Settled),
			newRow(id+"spread", label, "streams on the busiest replica (ratio: max / mean)", "",
				float64(p.MaxServed), mean, "mean").goal(fmt.Sprintf("≤ %d (⌈1.15 × mean⌉)", p.Bound),
				p.MaxServed <= p.Bound),
			versus(newRow(id+"rss-mean", label, "RSS per replica, mean (own processes)", "bytes", p.RSSMean, 0, "-"),
				base.RSSMean).note("all replicas %s", format(p.RSSMean*float64(p.Replicas), "bytes")),
			versus(newRow(id+"rss-max", label, "RSS per replica, max", "bytes", p.RSSMax, 0, "-"), base.RSSMax).
				note("peak through the bursts %s", format(float64(peak), "bytes")),
			versus(newRow(id+"rate", label, "deliveries/s to the sink, live burst", "/s", p.Live.Rate, 0, "-"),
				base.Live.Rate).goal("all delivered", p.Live.complete()).note("%s; writes %.0f/s", p.Live.delivered(),
				p.Live.WriteRate),
			versus(newRow(id+"backlog", label, "deliveries/s to the sink, from a backlog", "/s", p.Backlog.Rate, 0,
				"-"), base.Backlog.Rate).goal("all delivered", p.Backlog.complete()).
				note("%s in %.2f s", p.Backlog.delivered(), p.Backlog.Seconds))
	}
	return rows
}

func replicaCount(n int) string {
	if n == 1 {
		return "1 replica"
	}
	return strconv.Itoa(n) + " replicas"
}

// servedNote is the streams per replica, most first, such as 3+3+2+2.
func servedNote(p replicasPhase) string {
	counts := slices.Sorted(maps.Values(p.Served))
	slices.Reverse(counts)
	parts := make([]string, len(counts))
	for i, c := range counts {
		parts[i] = strconv.Itoa(c)
	}
	return strings.Join(parts, "+")
}

func (b replicasBurst) delivered() string {
	s := fmt.Sprintf("%d of %d delivered", b.Delivered, b.Expected)
	if b.Dropped > 0 || b.Failed > 0 {
		s += fmt.Sprintf(", %.0f dropped, %.0f failed", b.Dropped, b.Failed)
	}
	return s
}

// replicaSet is n operator processes sharing the subscriptions of one namespace.
type replicaSet struct {
	h   *harness
	dyn dynamic.Interface
	// ns holds the subscriptions and the objects they watch; cpNS the replicas' Leases and
	// checkpoints, fresh for each count so no Lease of an earlier one is seen.
	ns, cpNS string
	names    []string
	procs    []*operatorProcess
	// watchesBefore is what the API server held on the resources with the replicas idle.
	watchesBefore int
	// subsOn is how many subscriptions each resource of convergenceGVRs has.
	subsOn []int
}

// replicas measures one count of replicas; whatever happens, it leaves no subscription,
// process or object of its own behind.
func (h *harness) replicas(ctx context.Context, dyn dynamic.Interface, n int) (p replicasPhase, err error) {
	p = replicasPhase{Replicas: n, Subscriptions: h.opts.ReplicaSubs, Served: map[string]int{}}
	s := &replicaSet{h: h, dyn: dyn, subsOn: make([]int, len(convergenceGVRs))}
	for i := range p.Subscriptions {
		s.subsOn[i%len(convergenceGVRs)]++
	}
	for _, c := range s.subsOn {
		if c > 0 {
			p.Streams++
		}
	}
	if s.ns, err = h.namespace(ctx, "replicas"); err != nil {
		return p, err
	}
	if s.cpNS, err = h.namespace(ctx, "replicas-cp"); err != nil {
		return p, err
	}
	defer func() { err = errors.Join(err, s.close(ctx)) }()
	if err := s.createObjects(ctx); err != nil {
		return p, err
	}
	before, err := h.watches(ctx, convergenceGVRs...)
	if err != nil {
		return p, err
	}
	if err := s.start(ctx, n); err != nil {
		return p, err
	}
	// Every replica's controllers watch Secrets' metadata (for sinks' Secrets), one of
	// the ten resources: that watch is no stream.
	if s.watchesBefore, err = h.waitWatches(ctx, before+n, 30*time.Second, convergenceGVRs...); err != nil {
		return p, err
	}
	if s.watchesBefore != before+n {
		return p, fmt.Errorf("%d watches with %d idle replicas, %d before them: not one each", s.watchesBefore, n, before)
	}
	h.logf("replicas %d: started, members seen", n)
	if err := s.settle(ctx, &p); err != nil {
		return p, err
	}
	h.logf("replicas %d: %s settled in %s", n, subs(p.Subscriptions), p.Settled)

	sleep(ctx, h.opts.Settle) // the last status writes and handovers' saves done
	for _, proc := range s.procs {
		rss, _ := proc.rss()
		p.RSS = append(p.RSS, rss)
		p.RSSMean += float64(rss) / float64(n)
		p.RSSMax = max(p.RSSMax, float64(rss))
		if p.PeakReset, err = proc.resetPeaks(ctx); err != nil {
			return p, err
		}
	}
	if p.Live, err = s.burst(ctx, 0, false); err != nil {
		return p, fmt.Errorf("live burst: %w", err)
	}
	h.logf("replicas %d: live burst %d of %d in %.2f s", n, p.Live.Delivered, p.Live.Expected, p.Live.Seconds)
	if p.Backlog, err = s.burst(ctx, h.opts.ReplicaWrites, true); err != nil {
		return p, fmt.Errorf("backlog burst: %w", err)
	}
	for _, proc := range s.procs {
		_, peak := proc.rss()
		p.RSSPeak = append(p.RSSPeak, peak)
	}
	return p, nil
}

// replicaObjectName names the j-th object of the r-th resource.
func replicaObjectName(r, j int) string { return "rep-" + strconv.Itoa(r) + "-" + strconv.Itoa(j) }

// createObjects creates replicaObjects objects of every resource, before any subscription:
// only the bursts' changes are delivered.
func (s *replicaSet) createObjects(ctx context.Context) error {
	return parallel(len(convergenceGVRs)*replicaObjects, 8, func(i int) error {
		r, j := i%len(convergenceGVRs), i/len(convergenceGVRs)
		gvr := convergenceGVRs[r]
		obj := replicaObject(gvr, s.ns, replicaObjectName(r, j))
		if _, err := s.dyn.Resource(gvr).Namespace(s.ns).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating %s %s: %w", gvr.Resource, obj.GetName(), err)
		}
		return nil
	})
}

// start runs n replicas and waits until each holds its member Lease, so the subscriptions
// created next are assigned over all of them from the start.
func (s *replicaSet) start(ctx context.Context, n int) error {
	for i := range n {
		name := "replica-" + strconv.Itoa(i)
		proc, err := s.h.startProcess(ctx, processSpec{CheckpointNamespace: s.cpNS, Sharding: operator.ShardingLeases,
			ReplicaName: name, MemberLeaseDuration: replicaLeaseDuration, MemberRenewDeadline: replicaRenewDeadline,
			MemberRetryPeriod: replicaRetryPeriod}, shippedContainerLimit)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		s.names, s.procs = append(s.names, name), append(s.procs, proc)
	}
	return poll(ctx, 100*time.Millisecond, time.Minute, "every replica's member Lease", func() (bool, error) {
		if err := s.alive(); err != nil {
			return false, err
		}
		var leases coordinationv1.LeaseList
		if err := s.h.k8s.List(ctx, &leases, client.InNamespace(s.cpNS),
			client.MatchingLabels{membership.LabelComponent: "member"}); err != nil {
			return false, err
		}
		return len(leases.Items) == n, nil
	})
}

// alive fails when a replica has exited (its renewals late, say), with the end of its log.
func (s *replicaSet) alive() error {
	for i, proc := range s.procs {
		select {
		case <-proc.exited:
			out := proc.log.String()
			return fmt.Errorf("%s exited: %s", s.names[i], out[max(0, len(out)-2000):])
		default:
		}
	}
	return nil
}

// settle creates the subscriptions and waits until every one is Ready on the replica
// shard.Assign gives its resource, and the API server holds the replicas' watches.
func (s *replicaSet) settle(ctx context.Context, p *replicasPhase) error {
	keys := make([]string, 0, len(convergenceGVRs))
	for r, gvr := range convergenceGVRs {
		if s.subsOn[r] > 0 {
			keys = append(keys, replicaShardKey(gvr))
		}
	}
	want := shard.Assign(s.names, keys)
	timeout := readyTimeout(p.Subscriptions)
	start := time.Now()
	err := s.h.createSubscriptions(ctx, s.ns, p.Subscriptions, func(i int) schema.GroupVersionResource {
		return convergenceGVRs[i%len(convergenceGVRs)]
	}, func(ws *notifyv1.WatchSubscription) {
		// The backlog burst holds the sink for seconds: no attempt may time out meanwhile.
		ws.Spec.Delivery = &notifyv1.DeliverySpec{Timeout: new(notifyv1.Duration("2m"))}
	})
	if err != nil {
		return err
	}
	var got map[string]string
	var why string
	err = poll(ctx, 200*time.Millisecond, timeout, "every subscription Ready on its replica", func() (bool, error) {
		if err := s.alive(); err != nil {
			return false, err
		}
		list := &notifyv1.WatchSubscriptionList{}
		if err := s.h.k8s.List(ctx, list, client.InNamespace(s.ns)); err != nil {
			return false, err
		}
		got = map[string]string{}
		for i := range list.Items {
			ws := &list.Items[i]
			if !isReady(ws) {
				why = ws.Name + " not Ready: " + fmt.Sprint(ws.Status.Conditions)
				return false, nil
			}
			key := replicaShardKey(schema.GroupVersionResource{Group: ws.Spec.Resource.Group,
				Version: ws.Spec.Resource.Version, Resource: ws.Spec.Resource.Resource})
			if prev, ok := got[key]; ok && prev != ws.Status.Replica {
				why = fmt.Sprintf("%s served by %s and %s", key, prev, ws.Status.Replica)
				return false, nil
			}
			got[key] = ws.Status.Replica
		}
		if len(list.Items) != p.Subscriptions {
			why = fmt.Sprintf("%d subscriptions listed", len(list.Items))
			return false, nil
		}
		why = fmt.Sprintf("served %v, want %v", got, want)
		return maps.Equal(got, want), nil
	})
	if err != nil {
		return fmt.Errorf("%w (%s)", err, why)
	}
	// A replica that handed a resource over may still be closing its watch.
	watches, err := s.h.waitWatches(ctx, s.watchesBefore+p.Streams, 30*time.Second, convergenceGVRs...)
	if err != nil {
		return err
	}
	p.Settled = time.Since(start).Round(time.Millisecond).String()
	p.Watches = watches - s.watchesBefore
	for _, name := range s.names {
		p.Served[name] = 0
	}
	for _, replica := range got {
		p.Served[replica]++
	}
	p.MaxServed = slices.Max(slices.Collect(maps.Values(p.Served)))
	p.Bound = int(math.Ceil((1 + shard.Slack) * float64(p.Streams) / float64(p.Replicas)))
	return nil
}

// replicaShardKey is the shard key the operator gives a resource (one per resource, every
// namespace scope of it together).
func replicaShardKey(gvr schema.GroupVersionResource) string {
	return shard.StreamKey(watch.Key{GVR: gvr}.String())
}

// burst writes ReplicaWrites changes round robin over the resources (and over the objects
// of each), each numbered from from on, and counts the deliveries of them. With hold, the
// sink holds every request until every subscription has queued its changes.
func (s *replicaSet) burst(ctx context.Context, from int, hold bool) (replicasBurst, error) {
	h := s.h
	b := replicasBurst{Writes: h.opts.ReplicaWrites}
	for i := range b.Writes {
		b.Expected += s.subsOn[i%len(convergenceGVRs)]
	}
	observedBefore, err := s.counter(ctx, "dynamicnotifier_events_observed_total")
	if err != nil {
		return b, err
	}
	droppedBefore, err := s.counter(ctx, "dynamicnotifier_events_dropped_total")
	if err != nil {
		return b, err
	}
	failedBefore, err := s.counter(ctx, "dynamicnotifier_events_failed_total")
	if err != nil {
		return b, err
	}
	var delivered, last atomic.Int64
	updated, inNamespace := event.Updated.CloudEventType(), "/namespaces/"+s.ns+"/"
	h.sink.handle(func(dl delivery) {
		if dl.Type == updated && strings.Contains(dl.Subject, inNamespace) {
			delivered.Add(1)
			last.Store(int64(dl.At))
		}
	})
	defer h.sink.handle(nil)
	var release func()
	if hold {
		release = h.sink.hold()
		defer func() {
			if release != nil {
				release()
			}
		}()
	}

	var lastWrite atomic.Int64
	first := now()
	err = parallel(b.Writes, h.opts.Writers, func(i int) error {
		r := i % len(convergenceGVRs)
		name := replicaObjectName(r, i/len(convergenceGVRs)%replicaObjects)
		patch := []byte(`{"metadata":{"annotations":{"bench.dynamicnotifier.io/seq":"` + strconv.Itoa(from+i) + `"}}}`)
		_, err := s.dyn.Resource(convergenceGVRs[r]).Namespace(s.ns).Patch(ctx, name, types.MergePatchType, patch,
			metav1.PatchOptions{})
		lastWrite.Store(int64(now()))
		return err
	})
	if err != nil {
		return b, err
	}
	b.WriteRate = float64(b.Writes) / (time.Duration(lastWrite.Load()) - first).Seconds()
	start := first
	if hold {
		queued := "every subscription to have queued every change"
		if err := poll(ctx, 50*time.Millisecond, time.Minute, queued, func() (bool, error) {
			observed, err := s.counter(ctx, "dynamicnotifier_events_observed_total")
			return int(observed-observedBefore) >= b.Expected, err
		}); err != nil {
			return b, err
		}
		start = now()
		release()
		release = nil
	}
	waitCount(ctx, b.Expected, 10*time.Second, func() int { return int(delivered.Load()) })
	h.sink.handle(nil)
	b.Delivered = int(delivered.Load())
	if end := time.Duration(last.Load()); end > start {
		b.Seconds = (end - start).Seconds()
		b.Rate = float64(b.Delivered) / b.Seconds
	}
	if b.Dropped, err = s.counter(ctx, "dynamicnotifier_events_dropped_total"); err != nil {
		return b, err
	}
	if b.Failed, err = s.counter(ctx, "dynamicnotifier_events_failed_total"); err != nil {
		return b, err
	}
	b.Dropped -= droppedBefore
	b.Failed -= failedBefore
	return b, nil
}

// counter sums one of the operator's counters over the namespace's subscriptions and every
// replica.
func (s *replicaSet) counter(ctx context.Context, metric string) (float64, error) {
	total := 0.0
	for _, proc := range s.procs {
		st, err := proc.stats(ctx)
		if err != nil {
			return 0, err
		}
		for k, v := range st.Counters {
			if strings.HasPrefix(k, metric+" "+s.ns+"/") {
				total += v
			}
		}
	}
	return total, nil
}

// close deletes the subscriptions while the replicas run, waits until they are gone and
// the replicas' watches closed, then stops the replicas and deletes the objects, Leases and
// checkpoints: the next scenario starts on a clean control plane.
func (s *replicaSet) close(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	h := s.h
	err := h.deleteSubscriptions(ctx, s.ns)
	if err == nil {
		left := "subscriptions"
		err = poll(ctx, 100*time.Millisecond, time.Minute, "the subscriptions gone and the replicas' watches closed",
			func() (bool, error) {
				list := &notifyv1.WatchSubscriptionList{}
				if err := h.k8s.List(ctx, list, client.InNamespace(s.ns)); err != nil || len(list.Items) > 0 {
					left = fmt.Sprintf("%d subscriptions", len(list.Items))
					return false, err
				}
				n, err := h.watches(ctx, convergenceGVRs...)
				left = fmt.Sprintf("%d watches, %d before", n, s.watchesBefore)
				return n <= s.watchesBefore, err
			})
		if err != nil {
			err = fmt.Errorf("%w: %s left", err, left)
		}
	}
	for _, proc := range s.procs {
		proc.stop()
	}
	h.sink.closeIdle()
	errs := []error{err, parallel(len(convergenceGVRs)*replicaObjects, 8, func(i int) error {
		r, j := i%len(convergenceGVRs), i/len(convergenceGVRs)
		return client.IgnoreNotFound(s.dyn.Resource(convergenceGVRs[r]).Namespace(s.ns).Delete(ctx,
			replicaObjectName(r, j), metav1.DeleteOptions{}))
	})}
	if s.cpNS != "" {
		errs = append(errs, h.k8s.DeleteAllOf(ctx, &coordinationv1.Lease{}, client.InNamespace(s.cpNS)),
			h.deleteConfigMaps(ctx, s.cpNS))
	}
	return errors.Join(errs...)
}

// replicaObject is a minimal valid object of one of convergenceGVRs. Nothing acts on it:
// envtest runs no controllers, so no Pods, endpoints or status follow.
func replicaObject(gvr schema.GroupVersionResource, ns, name string) *unstructured.Unstructured {
	// template is a pod template of one container, with labels when given.
	template := func(labels map[string]any, restartPolicy string) map[string]any {
		pod := map[string]any{"containers": []any{map[string]any{"name": "c", "image": "registry.k8s.io/pause:3.10"}}}
		if restartPolicy != "" {
			pod["restartPolicy"] = restartPolicy
		}
		t := map[string]any{"spec": pod}
		if labels != nil {
			t["metadata"] = map[string]any{"labels": labels}
		}
		return t
	}
	var kind string
	var spec map[string]any
	body := map[string]any{}
	switch gvr.Resource {
	case configMaps.Resource:
		kind, body["data"] = "ConfigMap", map[string]any{"k": "v"}
	case secrets.Resource:
		kind, body["data"] = "Secret", map[string]any{"k": "dg=="}
	case "services":
		// Headless: the small service IP range of the test API server is not used up.
		kind, spec = "Service", map[string]any{"clusterIP": "None", "ports": []any{map[string]any{"port": int64(80)}}}
	case "serviceaccounts":
		kind = "ServiceAccount"
	case "persistentvolumeclaims":
		kind, spec = "PersistentVolumeClaim", map[string]any{"accessModes": []any{"ReadWriteOnce"},
			"resources": map[string]any{"requests": map[string]any{"storage": "1Gi"}}}
	case "podtemplates":
		kind, body["template"] = "PodTemplate", template(nil, "")
	case "limitranges":
		kind, spec = "LimitRange", map[string]any{"limits": []any{
			map[string]any{"type": "Container", "max": map[string]any{"cpu": "1"}}}}
	case "resourcequotas":
		kind, spec = "ResourceQuota", map[string]any{"hard": map[string]any{"pods": "10"}}
	case "deployments":
		kind, spec = "Deployment", map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": name}},
			"template": template(map[string]any{"app": name}, "")}
	case "jobs":
		kind, spec = "Job", map[string]any{"template": template(nil, "Never")}
	}
	if spec != nil {
		body["spec"] = spec
	}
	u := &unstructured.Unstructured{Object: body}
	u.SetAPIVersion(gvr.GroupVersion().String())
	u.SetKind(kind)
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}
