package main

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

// convergenceGVRs are ten namespaced built-in resources a bare API server serves (no
// deprecated ones: their warnings would only add noise).
var convergenceGVRs = []schema.GroupVersionResource{
	configMaps,
	secrets,
	{Version: "v1", Resource: "services"},
	{Version: "v1", Resource: "serviceaccounts"},
	{Version: "v1", Resource: "persistentvolumeclaims"},
	{Version: "v1", Resource: "podtemplates"},
	{Version: "v1", Resource: "limitranges"},
	{Version: "v1", Resource: "resourcequotas"},
	{Group: "apps", Version: "v1", Resource: "deployments"},
	{Group: "batch", Version: "v1", Resource: "jobs"},
}

// goroutineSlack is how far above its baseline the goroutine count may settle and still
// count as back: the runtime and client-go keep a few of their own coming and going.
const goroutineSlack = 10

type convergenceDetails struct {
	Subscriptions int `json:"subscriptions"`
	Resources     int `json:"resources"`
	// RawOpen is the median time to open one plain watch per resource, all at once.
	RawOpen string `json:"rawOpen"`
	// Created is when the last create returned, Ready when the last subscription was
	// Ready; both from the first create.
	Created   string `json:"created"`
	Ready     string `json:"ready"`
	Informers int    `json:"informers"`
	// Watches the API server held open on the ten resources once all were Ready, beyond
	// those it held before; NaiveWatches the same once all naive factories synced.
	Watches      int `json:"watches"`
	NaiveWatches int `json:"naiveWatches"`
	// After deleting them all: when the registry had no informer left, and when the
	// goroutine count was back at its baseline.
	InformersGone string `json:"informersGone"`
	// DeleteCall is how long the one deletecollection call took: the API server deletes the
	// objects one after the other before it answers.
	DeleteCall string `json:"deleteCall"`
	// AfterDeleteCall is from the deletecollection's answer until informers and goroutines
	// were back: the part of the teardown the operator adds.
	AfterDeleteCall string `json:"afterDeleteCall"`
	// DeleteCallAlone is the same deletecollection of as many subscriptions with no
	// operator running: what the API server alone needs.
	DeleteCallAlone string `json:"deleteCallAlone"`
	// CreateAlone is how long creating them took with no operator running (16 clients);
	// CreateAndStatusAlone the same with one status write after each create (the status
	// the operator writes for one of them), before the operator's run and after it.
	CreateAlone          string   `json:"createAlone"`
	CreateAndStatusAlone []string `json:"createAndStatusAlone"`
	GoroutinesBack       string   `json:"goroutinesBack"`
	GoroutinesBefore     int      `json:"goroutinesBefore"`
	GoroutinesAfter      int      `json:"goroutinesAfter"`
	GoroutinesAtReady    int      `json:"goroutinesAtReady"`
	// API requests from the first create until all were Ready: status writes, Events, and
	// every request besides the creates ("VERB resource[/subresource]", watches aside).
	StatusWrites  float64            `json:"statusWrites"`
	EventsCreated float64            `json:"eventsCreated"`
	Requests      map[string]float64 `json:"requests"`
	// Naive is the same number of informer factories, each on its subscription's resource:
	// from starting them all until all synced, and from stopping them all until the
	// goroutines were back at their baseline.
	NaiveSynced           string `json:"naiveSynced"`
	NaiveGoroutinesBack   string `json:"naiveGoroutinesBack"`
	NaiveGoroutinesAtSync int    `json:"naiveGoroutinesAtSync"`
	// Idle is a quiet period once all were Ready, with nothing written to the watched
	// resources; IdleStatusWrites the status writes in it (DESIGN: none).
	Idle             string  `json:"idle"`
	IdleStatusWrites float64 `json:"idleStatusWrites"`
}

var (
	statusWrites = map[string]string{labelResource: resourceSubscriptions, labelSubresource: subresourceStatus,
		labelVerb: "PATCH"}
	// configMapWrites are the ConfigMap creates and updates that succeeded.
	configMapWrites = []map[string]string{
		{labelResource: configMaps.Resource, labelVerb: "POST", "code": "201"},
		{labelResource: configMaps.Resource, labelVerb: "PUT", "code": "200"},
	}
)

// runConvergence: many subscriptions over ten resources created at once until all are
// Ready, then all deleted until nothing of them runs.
func runConvergence(ctx context.Context, h *harness) ([]Row, any, error) {
	n := h.opts.ConvergenceSubs
	d := &convergenceDetails{Subscriptions: n, Resources: len(convergenceGVRs)}
	ns, err := h.namespace(ctx, "converge")
	if err != nil {
		return nil, nil, err
	}
	// The floor of creates with one status write each runs before the operator's run and
	// after it, and their mean counts (bracketed): the API server's pace drifts.
	written, err := h.writtenStatus(ctx, ns)
	if err != nil {
		return nil, d, err
	}
	writeBefore, _, err := h.apiServerAlone(ctx, ns, n, written)
	if err != nil {
		return nil, d, err
	}
	r, err := h.startOperator(ctx)
	if err != nil {
		return nil, d, err
	}
	stopped := false
	defer func() {
		if !stopped {
			h.stopOperator(r)
		}
	}()

	rawOpen, err := h.medianRawOpen(ctx, ns, 5)
	if err != nil {
		return nil, d, err
	}
	d.RawOpen = rawOpen.String()
	tracker, err := h.trackReady(ctx, ns)
	if err != nil {
		return nil, d, err
	}
	defer tracker.stop()
	sleep(ctx, time.Second) // let the raw watches' goroutines end before the baseline
	d.GoroutinesBefore = runtime.NumGoroutine()
	requestsBefore, err := h.apiRequests(ctx)
	if err != nil {
		return nil, d, err
	}
	watchesBefore, err := h.watches(ctx, convergenceGVRs...)
	if err != nil {
		return nil, d, err
	}

	start := time.Now()
	apiServerProfiled := h.apiServerProfile(ctx, "convergence-create", 8)
	if err := h.createSubscriptions(ctx, ns, n, func(i int) schema.GroupVersionResource {
		return convergenceGVRs[i%len(convergenceGVRs)]
	}); err != nil {
		return nil, d, err
	}
	d.Created = time.Since(start).Round(time.Millisecond).String()
	if err := tracker.waitReady(ctx, n, readyTimeout(n)); err != nil {
		return nil, d, err
	}
	ready := time.Since(start)
	d.Ready = ready.Round(time.Millisecond).String()
	d.Informers = len(r.Registry.Keys())
	d.GoroutinesAtReady = runtime.NumGoroutine()
	requestsAfter, err := h.apiRequests(ctx)
	if err != nil {
		return nil, d, err
	}
	d.Requests = operatorRequests(requestsBefore, requestsAfter, n)
	d.StatusWrites = d.Requests["PATCH "+resourceSubscriptions+"/"+subresourceStatus]
	d.EventsCreated = d.Requests["POST events"]
	watches, err := h.waitWatches(ctx, watchesBefore+d.Informers, 10*time.Second, convergenceGVRs...)
	if err != nil {
		return nil, d, err
	}
	d.Watches = watches - watchesBefore
	h.logf("convergence: %d Ready in %s (created in %s), %d informers, %d API server watches, %.0f status writes, "+
		"%.0f Events", n, d.Ready, d.Created, d.Informers, d.Watches, d.StatusWrites, d.EventsCreated)

	// Let the writes that the last Ready transitions trigger finish (status writes are
	// coalesced over 2 s), then count the status writes of a quiet period.
	sleep(ctx, 3*h.opts.Settle)
	writesBefore, err := h.apiMetric(ctx, "apiserver_request_total", statusWrites)
	if err != nil {
		return nil, d, err
	}
	sleep(ctx, h.opts.Idle)
	if d.IdleStatusWrites, err = h.apiMetric(ctx, "apiserver_request_total", statusWrites); err != nil {
		return nil, d, err
	}
	d.IdleStatusWrites -= writesBefore
	d.Idle = h.opts.Idle.String()
	h.logf("convergence: %.0f status writes in %s idle", d.IdleStatusWrites, d.Idle)

	apiServerProfiled()
	apiServerProfiled = h.apiServerProfile(ctx, "convergence-delete", 5)
	start = time.Now()
	if err := h.deleteSubscriptions(ctx, ns); err != nil {
		return nil, d, err
	}
	deleteCall := time.Since(start)
	d.DeleteCall = deleteCall.Round(time.Millisecond).String()
	if err := r.waitNoInformers(ctx, readyTimeout(n)); err != nil {
		return nil, d, err
	}
	d.InformersGone = time.Since(start).Round(time.Millisecond).String()
	back := true
	if err := poll(ctx, 10*time.Millisecond, time.Minute, "goroutines back at the baseline", func() (bool, error) {
		return runtime.NumGoroutine() <= d.GoroutinesBefore+goroutineSlack, nil
	}); err != nil {
		back = false
	}
	teardown := time.Since(start)
	d.GoroutinesBack = teardown.Round(time.Millisecond).String()
	d.AfterDeleteCall = (teardown - deleteCall).Round(time.Millisecond).String()
	d.GoroutinesAfter = runtime.NumGoroutine()
	h.logf("convergence: deletecollection answered in %s, informers gone in %s, goroutines %d → %d → %d in %s",
		d.DeleteCall, d.InformersGone,
		d.GoroutinesBefore, d.GoroutinesAtReady, d.GoroutinesAfter, d.GoroutinesBack)

	apiServerProfiled()
	naiveSynced, naiveDown, err := h.convergenceNaive(ctx, ns, d)
	if err != nil {
		return nil, d, err
	}
	h.stopOperator(r)
	stopped = true
	createAlone, deleteAlone, err := h.apiServerAlone(ctx, ns, n, nil)
	if err != nil {
		return nil, d, err
	}
	writeAfter, _, err := h.apiServerAlone(ctx, ns, n, written)
	if err != nil {
		return nil, d, err
	}
	writeAlone := time.Duration(bracketed([]float64{float64(writeBefore), float64(writeAfter)}))
	d.CreateAlone = createAlone.Round(time.Millisecond).String()
	d.CreateAndStatusAlone = []string{writeBefore.Round(time.Millisecond).String(),
		writeAfter.Round(time.Millisecond).String()}
	d.DeleteCallAlone = deleteAlone.Round(time.Millisecond).String()

	label := fmt.Sprintf("Convergence, %s / %d GVRs", subs(n), len(convergenceGVRs))
	// Issue 21's target: Ready within 1.2× what the API server alone needs for the creates.
	readyRow := newRow("convergence/ready", label, "create all → all Ready", "s", ready.Seconds(), createAlone.Seconds(),
		"API server alone (creates)").goal("≤ 1.2× API server alone", ready <= createAlone*6/5).
		note("creating them took %s; naive factories synced in %s", d.Created, naiveSynced.Round(time.Millisecond))
	// The least any operator that reports Ready must ask of the API server: the creates and
	// one status write each, with nothing else running.
	leastRow := newRow("convergence/ready-vs-least", label, "create all → all Ready", "s", ready.Seconds(),
		writeAlone.Seconds(), "API server alone (creates, one status write each), mean of the runs before and after").
		goal("≤ 1.2× API server alone", ready <= writeAlone*6/5).
		note("before and after ours: %s and %s", d.CreateAndStatusAlone[0], d.CreateAndStatusAlone[1])
	// What the operator asked of the API server on the way: the least is one status write
	// per subscription.
	requested := 0.0
	for _, c := range d.Requests {
		requested += c
	}
	requestsRow := newRow("convergence/requests", label, "API requests per subscription until all Ready", "",
		requested/float64(n), 1, "least (one status write each)").
		note("%s; watches aside", requestBreakdown(d.Requests))
	watchRow := newRow("convergence/watches", label, "API server watches opened", "", float64(d.Watches),
		float64(d.NaiveWatches), "naive").goal(fmt.Sprintf("= distinct (GVR, scope) = %d", len(convergenceGVRs)),
		d.Watches == len(convergenceGVRs))
	if d.Informers != len(convergenceGVRs) {
		watchRow = watchRow.note("%d informers", d.Informers)
	}
	idleRow := newRow("convergence/idle-status-writes", label, fmt.Sprintf("status writes in %s idle", d.Idle), "",
		d.IdleStatusWrites, 0, "-").goal("0", d.IdleStatusWrites == 0)
	goal := fmt.Sprintf("≤ 1 s; informers 0, goroutines ≤ baseline+%d", goroutineSlack)
	downRow := newRow("convergence/teardown", label, "delete all → no informer, goroutines at baseline", "s",
		teardown.Seconds(), deleteAlone.Seconds(), "API server alone").
		goal(goal, back && teardown <= time.Second).
		note("deletecollection answered after %s", d.DeleteCall)
	// The API server deletes the objects one by one before it answers; the operator tears
	// each down as its deletion arrives. This is what is left once the API server is done.
	afterRow := newRow("convergence/teardown-after-api", label, "deletecollection answered → no informer, "+
		"goroutines at baseline", "s", (teardown-deleteCall).Seconds(), naiveDown.Seconds(), "naive (stop all)").
		goal(goal, back && teardown-deleteCall <= time.Second)
	if !back {
		downRow = downRow.note("%d goroutines, baseline %d", d.GoroutinesAfter, d.GoroutinesBefore)
	}
	return []Row{readyRow, leastRow, requestsRow, watchRow, idleRow, downRow, afterRow}, d, nil
}

// apiServerAlone creates n subscriptions in ns with no operator running, then removes them
// with one deletecollection call, and times both: the API server's share of convergence
// and teardown. With status set, each create is followed by a status write of it, as the
// operator's Ready is.
func (h *harness) apiServerAlone(ctx context.Context, ns string, n int,
	status *notifyv1.WatchSubscriptionStatus) (create, deleteCall time.Duration, err error) {
	start := time.Now()
	if err := parallel(n, 16, func(i int) error {
		ws := subscription(ns, "sub-"+strconv.Itoa(i), convergenceGVRs[i%len(convergenceGVRs)], h.sink.URL)
		if err := h.k8s.Create(ctx, ws); err != nil || status == nil {
			return err
		}
		before := ws.DeepCopy()
		ws.Status = *status.DeepCopy()
		for j := range ws.Status.Conditions {
			ws.Status.Conditions[j].ObservedGeneration = ws.Generation
		}
		return h.k8s.Status().Patch(ctx, ws, client.MergeFrom(before))
	}); err != nil {
		return 0, 0, err
	}
	create = time.Since(start)
	start = time.Now()
	err = h.deleteSubscriptions(ctx, ns)
	deleteCall = time.Since(start)
	what := "created"
	if status != nil {
		what = "created, each with a status write,"
	}
	h.logf("convergence: with no operator, %d %s in %s, deletecollection answered in %s", n, what,
		create.Round(time.Millisecond), deleteCall.Round(time.Millisecond))
	return create, deleteCall, err
}

// convergenceNaive starts one informer factory per subscription on the same resources,
// waits for all to sync, stops them all and waits for the goroutines to come back to where
// they were: how long each took.
func (h *harness) convergenceNaive(ctx context.Context, ns string,
	d *convergenceDetails) (synced, down time.Duration, err error) {
	before := runtime.NumGoroutine()
	watchesBefore, err := h.watches(ctx, convergenceGVRs...)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	b, err := h.startNaiveOn(ctx, func(i int) schema.GroupVersionResource {
		return convergenceGVRs[i%len(convergenceGVRs)]
	}, ns, d.Subscriptions)
	if err != nil {
		return 0, 0, err
	}
	synced = time.Since(start)
	d.NaiveGoroutinesAtSync = runtime.NumGoroutine()
	watches, err := h.waitWatches(ctx, watchesBefore+d.Subscriptions, 30*time.Second, convergenceGVRs...)
	if err != nil {
		b.close()
		return synced, 0, err
	}
	d.NaiveWatches = watches - watchesBefore
	start = time.Now()
	b.close()
	if err := poll(ctx, 10*time.Millisecond, time.Minute, "naive goroutines back at the baseline", func() (bool, error) {
		return runtime.NumGoroutine() <= before+goroutineSlack, nil
	}); err != nil {
		return synced, 0, err
	}
	down = time.Since(start)
	d.NaiveSynced, d.NaiveGoroutinesBack = synced.Round(time.Millisecond).String(), down.Round(time.Millisecond).String()
	h.logf("convergence naive: %d synced in %s, goroutines %d → %d → back in %s", d.Subscriptions, d.NaiveSynced,
		before, d.NaiveGoroutinesAtSync, d.NaiveGoroutinesBack)
	return synced, down, nil
}

// medianRawOpen times opening one plain watch per resource, all at once, a few times.
func (h *harness) medianRawOpen(ctx context.Context, ns string, runs int) (time.Duration, error) {
	took := make([]time.Duration, runs)
	for i := range took {
		var err error
		if took[i], err = h.openRawWatches(ctx, ns, convergenceGVRs); err != nil {
			return 0, err
		}
	}
	slices.Sort(took)
	return took[runs/2], nil
}

// writtenStatus is the status the operator writes for a subscription like those of the
// run, from one it made Ready in ns and deleted again: what the floor writes as many of.
func (h *harness) writtenStatus(ctx context.Context, ns string) (*notifyv1.WatchSubscriptionStatus, error) {
	r, err := h.startOperator(ctx)
	if err != nil {
		return nil, err
	}
	defer h.stopOperator(r)
	ws := subscription(ns, "sub-0", convergenceGVRs[0], h.sink.URL)
	if err := h.k8s.Create(ctx, ws); err != nil {
		return nil, err
	}
	if err := h.waitReady(ctx, ns, 1, time.Minute); err != nil {
		return nil, err
	}
	if err := h.k8s.Get(ctx, client.ObjectKeyFromObject(ws), ws); err != nil {
		return nil, err
	}
	return &ws.Status, h.unsubscribe(ctx, ns, r)
}

// operatorRequests are the requests of after not in before, without the n creates of
// subscriptions the run made itself.
func operatorRequests(before, after map[string]float64, n int) map[string]float64 {
	made := map[string]float64{}
	for k, v := range after {
		if v -= before[k]; k == "POST "+resourceSubscriptions {
			v -= float64(n)
		}
		if v > 0 {
			made[k] = v
		}
	}
	return made
}

// requestBreakdown lists requests by count, most first: "1017 PATCH x/status, 30 POST y".
func requestBreakdown(requests map[string]float64) string {
	keys := slices.SortedFunc(maps.Keys(requests), func(a, b string) int {
		return cmp.Or(cmp.Compare(requests[b], requests[a]), cmp.Compare(a, b))
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%.0f %s", requests[k], k)
	}
	return strings.Join(parts, ", ")
}
