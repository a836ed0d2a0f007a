// Package metrics holds the operator's Prometheus collectors, registered once on the
// controller-runtime registry (served on the manager's metrics endpoint).
package metrics

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/dynamic-notifier/dynamic-notifier/internal/delivery"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

const ns = "dynamicnotifier"

var (
	subLabels      = []string{"namespace", "subscription"}
	informerLabels = []string{"group", "version", "resource", "scope"}
)

var (
	observed = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "events_observed_total",
		Help: "Changes that matched a subscription. The status' eventsObserved."}, subLabels)
	delivered = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "events_delivered_total",
		Help: "Events the sink accepted. The status' eventsDelivered."}, subLabels)
	failed = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "events_failed_total",
		Help: "Events not delivered: failed for good (after every retry, dead-lettered or not), by reason of the " +
			"last attempt, or dropped for want of room (reason \"dropped\"). The status' eventsFailed."},
		append(slices.Clip(subLabels), "reason"))
	dropped = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "events_dropped_total",
		Help: "Events dropped for want of room: the delivery queue was full, or the memory budget " +
			"(events_evicted_total). The status' eventsDropped."}, subLabels)
	evicted = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "events_evicted_total",
		Help: "Queued events dropped, oldest first, to keep the process's delivery memory budget (also counted " +
			"in events_dropped_total)."}, subLabels)
	coalesced = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "events_coalesced_total",
		Help: "Changes merged into a later event of the same object (spec.delivery.coalesce, rateLimit), " +
			"not sent on their own."}, subLabels)
	deadLettered = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "events_dead_lettered_total",
		Help: "Events sent to the dead-letter sink."}, subLabels)
	duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "delivery_duration_seconds",
		Help:    "Duration of successful delivery requests (one request may carry a batch of events).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, subLabels)
	latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "delivery_latency_seconds",
		Help: "Time from the operator seeing a change to the sink accepting its event: queueing, filtering, " +
			"retries and the request itself.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}}, subLabels)
	filterErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "filter_errors_total",
		Help: "CEL filter evaluations that failed (the change then does not match)."}, subLabels)
	filterOverBudget = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "filter_over_budget_total",
		Help: "CEL filter evaluations stopped for costing more than their budget (the change is not delivered); " +
			"also counted in filter_errors_total."}, subLabels)
	resyncs = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "resyncs_total",
		Help: "Times a subscription could not resume from its checkpoint and was resynced (by reason)."},
		append(slices.Clip(subLabels), "reason"))
	checkFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "check_failures_total",
		Help: "Checks of a subscription that could not be made (the API server unreachable or overloaded): " +
			"the subscription keeps running on the last answer and the check is retried."},
		append(slices.Clip(subLabels), "check"))
	queueDepth = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "delivery_queue_depth",
		Help: "Events queued or in flight."}, subLabels)
	queueCapacity = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "delivery_queue_capacity",
		Help: "Events the delivery queue holds at most (spec.delivery.maxQueueSize); more are dropped."}, subLabels)
	ready = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "subscription_ready",
		Help: "1 while the subscription's Ready condition is True, 0 otherwise; reason is the condition's " +
			"(one series per subscription)."}, append(slices.Clip(subLabels), "reason"))

	budgetLimitDesc = prometheus.NewDesc(ns+"_delivery_memory_budget_bytes",
		"The delivery memory budget: bytes of events all subscriptions together may hold.", nil, nil)
	budgetUsedDesc = prometheus.NewDesc(ns+"_delivery_memory_used_bytes",
		"Bytes of events all subscriptions hold for delivery now, as the budget counts them.", nil, nil)
	informersDesc = prometheus.NewDesc(ns+"_informers_active",
		"Running shared informers, by resource and namespace scope (\"*\" for all).",
		informerLabels, nil)
	subscribersDesc = prometheus.NewDesc(ns+"_informer_subscribers",
		"Subscriptions fed by each shared informer.",
		informerLabels, nil)
	syncedDesc = prometheus.NewDesc(ns+"_informer_synced",
		"1 once the shared informer has received its first list, 0 before.",
		informerLabels, nil)
	failingDesc = prometheus.NewDesc(ns+"_informer_failing",
		"1 while the shared informer's last list or watch failed (it retries; its subscriptions are WatchFailing), "+
			"0 once that works.",
		informerLabels, nil)
)

func init() {
	ctrlmetrics.Registry.MustRegister(observed, delivered, failed, dropped, evicted, coalesced, deadLettered, duration,
		latency, queueDepth, queueCapacity, ready, filterErrors, filterOverBudget, resyncs, checkFailures,
		registryCollector{})
}

// ReasonDropped is the reason label of events_failed_total for events dropped for want of
// room (in the queue or the memory budget): the status counts them as failed too.
const ReasonDropped = "dropped"

// failedReasons are every value of events_failed_total's reason label.
var failedReasons = append(slices.Clip(sink.FailureReasons), ReasonDropped)

// Subscription is one subscription's handles.
type Subscription struct {
	labels                                                         []string
	observed, delivered, dropped, evicted, coalesced, deadLettered prometheus.Counter
	droppedFailed                                                  prometheus.Counter
	duration, latency                                              prometheus.Observer
	queueDepth, queueCapacity                                      prometheus.Gauge
}

// For returns the metrics of a subscription. Every series it may have is created, at zero,
// so rate() and increase() see its first increment (a series appearing at 1 counts for
// nothing).
func For(namespace, name string) *Subscription {
	l := []string{namespace, name}
	for _, reason := range failedReasons {
		failed.WithLabelValues(namespace, name, reason)
	}
	for _, reason := range watch.ResyncReasons {
		resyncs.WithLabelValues(namespace, name, reason)
	}
	for _, check := range checks {
		checkFailures.WithLabelValues(namespace, name, check)
	}
	return &Subscription{labels: l,
		observed: observed.WithLabelValues(l...), delivered: delivered.WithLabelValues(l...),
		dropped: dropped.WithLabelValues(l...), evicted: evicted.WithLabelValues(l...),
		droppedFailed: failed.WithLabelValues(namespace, name, ReasonDropped),
		coalesced:     coalesced.WithLabelValues(l...), deadLettered: deadLettered.WithLabelValues(l...),
		duration: duration.WithLabelValues(l...), latency: latency.WithLabelValues(l...),
		queueDepth: queueDepth.WithLabelValues(l...), queueCapacity: queueCapacity.WithLabelValues(l...)}
}

func (s *Subscription) Observed() { s.observed.Inc() }

// Delivered counts n events delivered by one request that took d.
func (s *Subscription) Delivered(n int, d time.Duration) {
	s.delivered.Add(float64(n))
	s.duration.Observe(d.Seconds())
}

// Latency records how long after the change an event was accepted.
func (s *Subscription) Latency(d time.Duration) { s.latency.Observe(d.Seconds()) }

func (s *Subscription) Failed(reason string) {
	failed.WithLabelValues(s.labels[0], s.labels[1], reason).Inc()
}

// Dropped counts an event that found no room (evicted: in the memory budget), a failed one
// too (reason "dropped"), as the status does.
func (s *Subscription) Dropped(evicted bool) {
	s.dropped.Inc()
	s.droppedFailed.Inc()
	if evicted {
		s.evicted.Inc()
	}
}
func (s *Subscription) DeadLettered()    { s.deadLettered.Inc() }
func (s *Subscription) Coalesced()       { s.coalesced.Inc() }
func (s *Subscription) QueueDepth(n int) { s.queueDepth.Set(float64(n)) }

// QueueCapacity sets the size of the subscription's delivery queue.
func (s *Subscription) QueueCapacity(n int) { s.queueCapacity.Set(float64(n)) }

// readyReasons are the reason label of each subscription's subscription_ready series, so a
// new reason replaces the old series and Forget finds it.
var (
	readyMu      sync.Mutex
	readyReasons = map[[2]string]string{}
)

// Ready sets a subscription's Ready condition: whether it is True, and its reason.
func Ready(namespace, name string, isReady bool, reason string) {
	key := [2]string{namespace, name}
	readyMu.Lock()
	defer readyMu.Unlock()
	if old, ok := readyReasons[key]; ok && old != reason {
		ready.DeleteLabelValues(namespace, name, old)
	}
	readyReasons[key] = reason
	v := 0.0
	if isReady {
		v = 1
	}
	ready.WithLabelValues(namespace, name, reason).Set(v)
}

// FilterErrors is the counter of a subscription's failed filter evaluations.
func FilterErrors(namespace, name string) prometheus.Counter {
	return filterErrors.WithLabelValues(namespace, name)
}

// FilterOverBudget is the counter of a subscription's filter evaluations over budget.
func FilterOverBudget(namespace, name string) prometheus.Counter {
	return filterOverBudget.WithLabelValues(namespace, name)
}

// Resynced counts a resync of a subscription.
func Resynced(namespace, name, reason string) { resyncs.WithLabelValues(namespace, name, reason).Inc() }

// Checks that may fail without an answer, the values of check_failures_total's check label.
const (
	CheckAuthorization = "authorization"
	CheckSecrets       = "secrets"
	CheckDiscovery     = "discovery"
	CheckSinks         = "sinks"
)

var checks = []string{CheckAuthorization, CheckSecrets, CheckDiscovery, CheckSinks}

// CheckFailed counts a check of a subscription that could not be made.
func CheckFailed(namespace, name, check string) {
	checkFailures.WithLabelValues(namespace, name, check).Inc()
}

// Forget removes a deleted subscription's series.
func Forget(namespace, name string) {
	// Exact label values: DeletePartialMatch scans every series, which made deleting many
	// subscriptions quadratic.
	for _, v := range []*prometheus.CounterVec{observed, delivered, dropped, evicted, coalesced, deadLettered, filterErrors, filterOverBudget} {
		v.DeleteLabelValues(namespace, name)
	}
	for _, reason := range failedReasons {
		failed.DeleteLabelValues(namespace, name, reason)
	}
	for _, reason := range watch.ResyncReasons {
		resyncs.DeleteLabelValues(namespace, name, reason)
	}
	for _, check := range checks {
		checkFailures.DeleteLabelValues(namespace, name, check)
	}
	duration.DeleteLabelValues(namespace, name)
	latency.DeleteLabelValues(namespace, name)
	queueDepth.DeleteLabelValues(namespace, name)
	queueCapacity.DeleteLabelValues(namespace, name)
	readyMu.Lock()
	if reason, ok := readyReasons[[2]string{namespace, name}]; ok {
		ready.DeleteLabelValues(namespace, name, reason)
		delete(readyReasons, [2]string{namespace, name})
	}
	readyMu.Unlock()
}

// budgets are the delivery memory budgets exposed (one per process in production).
var budgets []*delivery.MemoryBudget

// TrackBudget exposes a delivery memory budget, read at scrape time.
func TrackBudget(b *delivery.MemoryBudget) {
	if b == nil {
		return
	}
	registriesMu.Lock()
	defer registriesMu.Unlock()
	budgets = append(budgets, b)
}

// registries are the watch registries whose informers are exposed. One per process in
// production; tests run operators one after another.
var (
	registriesMu sync.Mutex
	registries   []*watch.Registry
)

// Track exposes a registry's informers, read at scrape time so the gauges never drift from
// what runs.
func Track(reg *watch.Registry) {
	registriesMu.Lock()
	defer registriesMu.Unlock()
	registries = append(registries, reg)
}

type registryCollector struct{}

func (registryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- informersDesc
	ch <- subscribersDesc
	ch <- syncedDesc
	ch <- failingDesc
	ch <- budgetLimitDesc
	ch <- budgetUsedDesc
}

func (registryCollector) Collect(ch chan<- prometheus.Metric) {
	registriesMu.Lock()
	regs := slices.Clone(registries)
	bs := slices.Clone(budgets)
	registriesMu.Unlock()
	if len(bs) > 0 {
		b := bs[len(bs)-1] // the process's own: tests start one operator after another
		ch <- prometheus.MustNewConstMetric(budgetLimitDesc, prometheus.GaugeValue, float64(b.Limit()))
		ch <- prometheus.MustNewConstMetric(budgetUsedDesc, prometheus.GaugeValue, float64(b.Used()))
	}
	for _, reg := range regs {
		for _, k := range reg.Keys() {
			st, ok := reg.State(k)
			if !ok {
				continue // stopped since Keys
			}
			scope := k.Namespace
			if scope == "" {
				scope = "*"
			}
			labels := []string{k.GVR.Group, k.GVR.Version, k.GVR.Resource, scope}
			ch <- prometheus.MustNewConstMetric(informersDesc, prometheus.GaugeValue, 1, labels...)
			ch <- prometheus.MustNewConstMetric(subscribersDesc, prometheus.GaugeValue, float64(reg.Subscribers(k)), labels...)
			ch <- prometheus.MustNewConstMetric(syncedDesc, prometheus.GaugeValue, boolValue(st.Synced), labels...)
			ch <- prometheus.MustNewConstMetric(failingDesc, prometheus.GaugeValue, boolValue(st.Err != nil), labels...)
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// replicaLabel names the replica a sharding series is about.
const replicaLabel = "replica"

var (
	shardsServed = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "shards_served",
		Help: "Shard keys (resources) this replica serves, with --sharding=Leases."}, []string{replicaLabel})
	shardMoves = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "shard_moves_total",
		Help: "Shard keys this replica started serving (acquired) or handed over (released)."},
		[]string{replicaLabel, "direction"})
	replicaMembers = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "replica_members",
		Help: "Live replicas as this replica sees them (member Leases)."}, []string{replicaLabel})
)

func init() { ctrlmetrics.Registry.MustRegister(shardsServed, shardMoves, replicaMembers) }

// Shards reports what a replica serves and sees.
func Shards(replica string, served, members int) {
	shardsServed.WithLabelValues(replica).Set(float64(served))
	replicaMembers.WithLabelValues(replica).Set(float64(members))
}

// ShardMoved counts a shard key acquired or released by replica.
func ShardMoved(replica, direction string, n int) {
	shardMoves.WithLabelValues(replica, direction).Add(float64(n))
}
