package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// memoryPhase is one count of cached objects.
type memoryPhase struct {
	Objects     int `json:"objects"`
	ObjectBytes int `json:"objectBytes"`
	// Heap and RSS deltas of the whole process: ours from the idle operator to one Ready
	// subscription, naive from nothing to one synced informer factory.
	Ours              int64   `json:"ours"`
	Naive             int64   `json:"naive"`
	OursRSS           int64   `json:"oursRSS"`
	NaiveRSS          int64   `json:"naiveRSS"`
	OursPerObject     float64 `json:"oursPerObject"`
	NaivePerObject    float64 `json:"naivePerObject"`
	OursRSSPerObject  float64 `json:"oursRSSPerObject"`
	NaiveRSSPerObject float64 `json:"naiveRSSPerObject"`
	OursBefore        heap    `json:"oursBefore"`
	OursAfter         heap    `json:"oursAfter"`
	NaiveBefore       heap    `json:"naiveBefore"`
	NaiveAfter        heap    `json:"naiveAfter"`
	// Setup is from creating the subscription until it is Ready (ours), or from starting
	// the factory until it synced (naive).
	OursSetup  string `json:"oursSetup"`
	NaiveSetup string `json:"naiveSetup"`
	// CreateObjects is how long the objects added for this count took to create.
	CreateObjects string `json:"createObjects"`
	// OursProcess and NaiveProcess are processes of their own, RSS through the initial
	// sync as a pod's would be: ours the operator as shipped (SubjectAccessReview,
	// checkpoints, GOMEMLIMIT of the shipped limit), naive one informer factory with the
	// same GOMEMLIMIT.
	OursProcess  rssReading `json:"oursProcess"`
	NaiveProcess rssReading `json:"naiveProcess"`
}

// rssGoals are issue 21's targets per watched object, over idle: during the initial sync
// and settled after it.
const (
	rssPeakGoal    = 2000
	rssSettledGoal = 1000
)

// perObjectGoal is DESIGN's target: at most 1 KB of operator memory per watched object.
const perObjectGoal = 1000

// runMemory: what one watched namespace of many ConfigMaps costs the operator per object,
// against one informer factory caching them in full, at each count of objects.
func runMemory(ctx context.Context, h *harness) ([]Row, any, error) {
	ns, err := h.namespace(ctx, "memory")
	if err != nil {
		return nil, nil, err
	}
	// The objects stay: memory runs last, and deleting 100,000 of them would take a minute
	// of a control plane that is stopped right after.
	var (
		rows    []Row
		details []memoryPhase
		created int
	)
	for _, n := range h.opts.MemoryObjects {
		d := memoryPhase{Objects: n, ObjectBytes: h.opts.ObjectBytes}
		start := time.Now()
		if _, err := h.create(ctx, writes{ns: ns, prefix: "m", from: created, count: n - created, workers: 16,
			bytes: d.ObjectBytes}); err != nil {
			return rows, append(details, d), err
		}
		created = n
		d.CreateObjects = time.Since(start).Round(time.Millisecond).String()
		h.logf("memory: %d ConfigMaps in the namespace (added in %s)", n, d.CreateObjects)

		err := h.memoryPhase(ctx, ns, &d)
		details = append(details, d)
		if err != nil {
			return rows, details, fmt.Errorf("%d objects: %w", n, err)
		}
		h.logf("memory %d: heap %.0f vs %.0f B/object naive, RSS %.0f vs %.0f B/object naive", n,
			d.OursPerObject, d.NaivePerObject, d.OursRSSPerObject, d.NaiveRSSPerObject)

		label := fmt.Sprintf("Memory, 1 sub, %d ConfigMaps", n)
		id := "memory/" + strconv.Itoa(n) + "/"
		perObject := newRow(id+"heap", label, "heap per cached object", "bytes", d.OursPerObject, d.NaivePerObject, "naive")
		underKB, half := d.OursPerObject <= perObjectGoal, perObject.Ratio <= 0.5
		perObject = perObject.goal("≤ 1 KB, ≤ 0.5× naive", underKB && half)
		switch {
		case !underKB && half:
			perObject = perObject.note("over 1 KB; within 0.5× naive")
		case underKB && !half:
			perObject = perObject.note("under 1 KB; over 0.5× naive")
		}
		ours, naive := d.OursProcess, d.NaiveProcess
		rows = append(rows,
			newRow(id+"rss-peak", label, "RSS peak during the sync, per object (own process)", "bytes",
				ours.PeakPerObject, naive.PeakPerObject, "naive").
				goal("≤ 2 KB", ours.PeakPerObject <= rssPeakGoal).
				note("idle %s, peak %s", format(float64(ours.Idle), "bytes"), format(float64(ours.Peak), "bytes")),
			newRow(id+"rss-settled", label, "RSS settled, per object (own process)", "bytes",
				ours.SettledPerObject, naive.SettledPerObject, "naive").
				goal("≤ 1 KB", ours.SettledPerObject <= rssSettledGoal).
				note("%s after the sync", h.opts.RSSSettle),
			perObject)
	}
	return rows, details, nil
}

func (h *harness) memoryPhase(ctx context.Context, ns string, d *memoryPhase) error {
	if err := h.memoryOurs(ctx, ns, d); err != nil {
		return err
	}
	d.NaiveBefore = h.settledHeap(ctx, fmt.Sprintf("memory-%d-naive-before", d.Objects))
	start := time.Now()
	b, err := h.startNaive(ctx, configMaps, ns, 1)
	if err != nil {
		return err
	}
	d.NaiveSetup = time.Since(start).Round(time.Millisecond).String()
	d.NaiveAfter = h.settledHeap(ctx, fmt.Sprintf("memory-%d-naive-after", d.Objects))
	b.close()
	d.Naive, d.NaiveRSS = heapDelta(d.NaiveBefore, d.NaiveAfter), rssDelta(d.NaiveBefore, d.NaiveAfter)

	if err := h.memoryProcesses(ctx, ns, d); err != nil {
		return err
	}
	objects := float64(d.Objects)
	d.OursPerObject, d.NaivePerObject = float64(d.Ours)/objects, float64(d.Naive)/objects
	d.OursRSSPerObject, d.NaiveRSSPerObject = float64(d.OursRSS)/objects, float64(d.NaiveRSS)/objects
	return nil
}

func (h *harness) memoryOurs(ctx context.Context, ns string, d *memoryPhase) error {
	r, err := h.startOperator(ctx)
	if err != nil {
		return err
	}
	defer h.stopOperator(r)
	d.OursBefore = h.settledHeap(ctx, fmt.Sprintf("memory-%d-ours-before", d.Objects))
	start := time.Now()
	if err := h.createSubscriptions(ctx, ns, 1, all(configMaps)); err != nil {
		return err
	}
	if err := h.waitReady(ctx, ns, 1, readyTimeout(d.Objects/100)); err != nil {
		return err
	}
	d.OursSetup = time.Since(start).Round(time.Millisecond).String()
	d.OursAfter = h.settledHeap(ctx, fmt.Sprintf("memory-%d-ours-after", d.Objects))
	d.Ours, d.OursRSS = heapDelta(d.OursBefore, d.OursAfter), rssDelta(d.OursBefore, d.OursAfter)
	return h.unsubscribe(ctx, ns, r)
}

// memoryProcesses reads the RSS of the operator and of the naive baseline, each a process
// of its own, through an initial sync of ns.
func (h *harness) memoryProcesses(ctx context.Context, ns string, d *memoryPhase) error {
	var err error
	d.OursProcess, err = h.rssThroughSync(ctx, processSpec{CheckpointNamespace: h.operatorNS}, d.Objects,
		func(ctx context.Context, _ *operatorProcess) error {
			ws := subscription(ns, "rss", configMaps, h.sink.URL)
			if err := h.k8s.Create(ctx, ws); err != nil {
				return err
			}
			return h.waitReady(ctx, ns, 1, readyTimeout(d.Objects/100))
		})
	// Whatever happened, the next operator must not find it.
	err = errors.Join(err, h.deleteSubscriptions(context.WithoutCancel(ctx), ns))
	if err != nil {
		return fmt.Errorf("operator process: %w", err)
	}
	h.logf("memory %d, own process: RSS idle %s, peak %s (%.0f B/object), settled %s (%.0f B/object), Ready in %s",
		d.Objects, format(float64(d.OursProcess.Idle), "bytes"), format(float64(d.OursProcess.Peak), "bytes"),
		d.OursProcess.PeakPerObject, format(float64(d.OursProcess.Settled), "bytes"), d.OursProcess.SettledPerObject,
		d.OursProcess.Sync)

	d.NaiveProcess, err = h.rssThroughSync(ctx, processSpec{NaiveNamespace: ns}, d.Objects,
		func(ctx context.Context, p *operatorProcess) error {
			if err := p.post(ctx, "/start"); err != nil {
				return err
			}
			return poll(ctx, 20*time.Millisecond, readyTimeout(d.Objects/100), "the naive informer to sync",
				func() (bool, error) {
					var synced bool
					return synced, p.get(ctx, "/synced", &synced)
				})
		})
	if err != nil {
		return fmt.Errorf("naive process: %w", err)
	}
	h.logf("memory %d, naive process: RSS idle %s, peak %s (%.0f B/object), settled %s (%.0f B/object)",
		d.Objects, format(float64(d.NaiveProcess.Idle), "bytes"), format(float64(d.NaiveProcess.Peak), "bytes"),
		d.NaiveProcess.PeakPerObject, format(float64(d.NaiveProcess.Settled), "bytes"), d.NaiveProcess.SettledPerObject)
	return nil
}
