package main

import (
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// options are the scales of every scenario. Full mode is what BENCHMARKS.md reports; quick
// mode is a smoke run that finishes in well under a minute.
type options struct {
	Quick bool   `json:"quick"`
	Out   string `json:"out"`
	// Markdown, when set, also receives the table printed on stdout.
	Markdown string `json:"markdown,omitempty"`
	// Only lists the scenarios to run; empty runs all.
	Only []string `json:"only,omitempty"`
	// OperatorQPS is the operator's client rate limit; negative disables it, as the
	// manager binary does (controller-runtime's GetConfig sets QPS -1).
	OperatorQPS float32 `json:"operatorQPS"`

	// Sharing: subscription counts on one (GVR, namespace), and the objects in it.
	ShareSubs    []int `json:"shareSubs"`
	ShareObjects int   `json:"shareObjects"`

	// Latency: subscription counts, paced writes per count, and the write interval for
	// one subscription (scaled up with the fan-out so the sink is not saturated). The
	// costly-neighbour scenario uses the writes and interval of one subscription.
	LatencySubs     []int         `json:"latencySubs"`
	LatencyWrites   int           `json:"latencyWrites"`
	LatencyInterval time.Duration `json:"latencyInterval"`

	// Throughput: writes back to back from Writers goroutines, to one subscription, then
	// FanOutWrites to FanOutSubs subscriptions on the same objects.
	ThroughputWrites int `json:"throughputWrites"`
	Writers          int `json:"writers"`
	FanOutSubs       int `json:"fanOutSubs"`
	FanOutWrites     int `json:"fanOutWrites"`

	// Memory: cached objects of about ObjectBytes each, measured at every count (ascending;
	// each count adds objects to the previous ones).
	MemoryObjects []int `json:"memoryObjects"`
	ObjectBytes   int   `json:"objectBytes"`

	// Budget flood: FloodChanges updates, round robin over FloodObjects ConfigMaps of
	// ObjectBytes, with an operator process whose delivery memory budget is FloodBudget
	// bytes (and GOMEMLIMIT four times that, as the default budget is a quarter of it, but
	// at least 64 MiB).
	FloodChanges int   `json:"floodChanges"`
	FloodObjects int   `json:"floodObjects"`
	FloodBudget  int64 `json:"floodBudget"`

	// Flapping: FlapObjects ConfigMaps, each changed FlapChanges times back to back, to a
	// subscription without coalescing, with a window of FlapWindow and with a rate limit
	// of FlapRate events a second.
	FlapObjects int           `json:"flapObjects"`
	FlapChanges int           `json:"flapChanges"`
	FlapWindow  time.Duration `json:"flapWindow"`
	FlapRate    int32         `json:"flapRate"`

	// Convergence: subscriptions spread over the ten resources of convergenceGVRs.
	ConvergenceSubs int `json:"convergenceSubs"`
	// Idle is how long convergence watches for status writes once everything is Ready.
	Idle time.Duration `json:"idle"`

	// CRDRounds: how often a CRD is installed after its subscription.
	CRDRounds int `json:"crdRounds"`

	// ProfileDir, when set, receives a heap profile at every heap reading and a CPU
	// profile per scenario.
	ProfileDir string `json:"profileDir,omitempty"`
	// Settle is how long in-flight work may finish before the heap is read; HeapReadings
	// how many readings, 200 ms apart, the smallest is taken of.
	Settle       time.Duration `json:"settle"`
	HeapReadings int           `json:"heapReadings"`
}

func fullOptions() options {
	return options{
		Out:              "bin/bench/results.json",
		OperatorQPS:      -1,
		ShareSubs:        []int{1, 10, 100, 1000},
		ShareObjects:     100,
		LatencySubs:      []int{1, 100},
		LatencyWrites:    500,
		LatencyInterval:  10 * time.Millisecond,
		ThroughputWrites: 10000,
		Writers:          8,
		FanOutSubs:       50,
		FanOutWrites:     400,
		MemoryObjects:    []int{10000, 100000},
		FloodChanges:     100000,
		FloodObjects:     300,
		FloodBudget:      64 << 20,
		ObjectBytes:      1024,
		FlapObjects:      10,
		FlapChanges:      200,
		FlapWindow:       time.Second,
		FlapRate:         10,
		ConvergenceSubs:  1000,
		Idle:             5 * time.Second,
		CRDRounds:        3,
		Settle:           time.Second,
		HeapReadings:     3,
	}
}

func quickOptions() options {
	o := fullOptions()
	o.Quick = true
	o.ShareSubs = []int{1, 10}
	o.ShareObjects = 50
	o.LatencySubs = []int{1, 10}
	o.LatencyWrites = 30
	o.ThroughputWrites = 300
	o.Writers = 4
	o.FanOutSubs = 5
	o.FanOutWrites = 40
	o.MemoryObjects = []int{100, 200}
	o.FloodChanges = 5000
	o.FloodObjects = 100
	o.FloodBudget = 4 << 20
	o.FlapObjects = 3
	o.FlapChanges = 30
	o.ConvergenceSubs = 20
	o.Idle = time.Second
	o.CRDRounds = 1
	o.Settle = 200 * time.Millisecond
	o.HeapReadings = 1
	return o
}

// parseFlags reads the command line: -quick picks the quick scales, other flags override
// single scales of either mode.
func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "small scales: a smoke run of every scenario")
	out := fs.String("out", "", "where to write the raw figures as JSON (default bin/bench/results.json)")
	md := fs.String("md", "", "where to write the Markdown table too (it is always printed on stdout)")
	only := fs.String("only", "",
		"comma-separated scenarios to run: sharing,latency,costlyneighbour,throughput,drain,flapping,convergence,crd,budgetflood,memory")
	qps := fs.Float64("operator-qps", 0, "operator client QPS (default -1: unlimited, like the manager binary)")
	shareSubs := fs.String("share-subs", "", "sharing: comma-separated subscription counts")
	shareObjects := fs.Int("share-objects", 0, "sharing: ConfigMaps in the shared namespace")
	latencySubs := fs.String("latency-subs", "", "latency: comma-separated subscription counts")
	latencyWrites := fs.Int("latency-writes", 0, "latency, costlyneighbour: paced writes per subscription count and phase")
	latencyInterval := fs.Duration("latency-interval", 0, "latency, costlyneighbour: write interval for one subscription")
	tpWrites := fs.Int("throughput-writes", 0, "throughput: writes")
	writers := fs.Int("writers", 0, "throughput: writer goroutines")
	fanOutSubs := fs.Int("fanout-subs", 0, "throughput: subscriptions of the fan-out phase")
	fanOutWrites := fs.Int("fanout-writes", 0, "throughput: creates of the fan-out phase")
	floodChanges := fs.Int("flood-changes", 0, "budgetflood: updates written")
	floodObjects := fs.Int("flood-objects", 0, "budgetflood: ConfigMaps the updates go round")
	floodBudget := fs.Int("flood-budget-mib", 0, "budgetflood: the operator's delivery memory budget in MiB")
	memObjects := fs.String("memory-objects", "", "memory: comma-separated counts of cached ConfigMaps, e.g. 10000,100000")
	flapObjects := fs.Int("flap-objects", 0, "flapping: objects changed")
	flapChanges := fs.Int("flap-changes", 0, "flapping: changes per object")
	convSubs := fs.Int("convergence-subs", 0, "convergence: subscriptions over 10 resources")
	crdRounds := fs.Int("crd-rounds", 0, "crd: how often a CRD is installed after its subscription")
	profile := fs.String("profile", "",
		"directory for a CPU profile per scenario and heap profiles at every heap reading (go tool pprof)")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	o := fullOptions()
	if *quick {
		o = quickOptions()
	}
	var err error
	setString(&o.Out, *out)
	setString(&o.Markdown, *md)
	setString(&o.ProfileDir, *profile)
	if *only != "" {
		o.Only = strings.Split(*only, ",")
		for _, name := range o.Only {
			if !slices.ContainsFunc(scenarios, func(s scenario) bool { return s.name == name }) {
				return options{}, fmt.Errorf("-only: unknown scenario %q", name)
			}
		}
	}
	if *qps != 0 {
		o.OperatorQPS = float32(*qps)
	}
	if o.ShareSubs, err = intList(*shareSubs, o.ShareSubs); err != nil {
		return options{}, fmt.Errorf("-share-subs: %w", err)
	}
	if o.LatencySubs, err = intList(*latencySubs, o.LatencySubs); err != nil {
		return options{}, fmt.Errorf("-latency-subs: %w", err)
	}
	if o.MemoryObjects, err = intList(*memObjects, o.MemoryObjects); err != nil {
		return options{}, fmt.Errorf("-memory-objects: %w", err)
	}
	if !slices.IsSorted(o.MemoryObjects) {
		return options{}, errors.New("-memory-objects: counts must ascend")
	}
	setInt(&o.ShareObjects, *shareObjects)
	setInt(&o.LatencyWrites, *latencyWrites)
	if *latencyInterval > 0 {
		o.LatencyInterval = *latencyInterval
	}
	setInt(&o.ThroughputWrites, *tpWrites)
	setInt(&o.Writers, *writers)
	setInt(&o.FanOutSubs, *fanOutSubs)
	setInt(&o.FanOutWrites, *fanOutWrites)
	setInt(&o.FloodChanges, *floodChanges)
	setInt(&o.FloodObjects, *floodObjects)
	if *floodBudget > 0 {
		o.FloodBudget = int64(*floodBudget) << 20
	}
	setInt(&o.FlapObjects, *flapObjects)
	setInt(&o.FlapChanges, *flapChanges)
	setInt(&o.ConvergenceSubs, *convSubs)
	setInt(&o.CRDRounds, *crdRounds)
	return o, nil
}

func (o options) selected(name string) bool { return len(o.Only) == 0 || slices.Contains(o.Only, name) }

func setInt(dst *int, v int) {
	if v > 0 {
		*dst = v
	}
}

func setString(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

func intList(s string, def []int) ([]int, error) {
	if s == "" {
		return def, nil
	}
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive count", f)
		}
		out = append(out, n)
	}
	return out, nil
}
