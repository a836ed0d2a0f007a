package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

// flappingPhase: objects changed back to back, as a controller fighting another would,
// to one subscription of Updated events. Events in are the changes the API server made
// (a raw watch sees each); events out are the requests the sink got. The latency is that
// of each object's final state: from the start of its last write to its arrival.
type flappingPhase struct {
	Setting string `json:"setting"`
	Objects int    `json:"objects"`
	Changes int    `json:"changes"`
	// WriteSeconds is how long the writes took, all objects at once.
	WriteSeconds float64 `json:"writeSeconds"`
	// In is the updates the raw watch saw; Out the events the sink got.
	In  int `json:"in"`
	Out int `json:"out"`
	// Accounted is the changes the delivered events stand for (coalesced ones count
	// their attribute): every change, when none is lost.
	Accounted int `json:"accounted"`
	// FinalStates is how many objects' last change reached the sink.
	FinalStates int         `json:"finalStates"`
	Final       percentiles `json:"final"`
	RawFinal    percentiles `json:"rawFinal"`
}

type flapSetting struct {
	name, id string
	// window is the coalescing window, 0 for none.
	window time.Duration
	// rate is the rate limit, 0 for none.
	rate  int32
	tweak func(*notifyv1.WatchSubscription)
}

func runFlapping(ctx context.Context, h *harness) ([]Row, any, error) {
	window := h.opts.FlapWindow
	settings := []flapSetting{
		{name: "every change", id: "plain", tweak: func(*notifyv1.WatchSubscription) {}},
		{name: "coalesce " + window.String(), id: "coalesce", window: window,
			tweak: func(ws *notifyv1.WatchSubscription) {
				ws.Spec.Delivery = &notifyv1.DeliverySpec{Coalesce: notifyv1.CoalesceSpec{
					Window: notifyv1.Duration(window.String())}}
			}},
		{name: "rateLimit " + strconv.Itoa(int(h.opts.FlapRate)) + "/s", id: "ratelimit", rate: h.opts.FlapRate,
			tweak: func(ws *notifyv1.WatchSubscription) {
				ws.Spec.Delivery = &notifyv1.DeliverySpec{RateLimit: notifyv1.RateLimitSpec{
					EventsPerSecond: h.opts.FlapRate}}
			}},
	}
	var rows []Row
	var details []flappingPhase
	for _, s := range settings {
		p, err := h.flap(ctx, s)
		details = append(details, p)
		if err != nil {
			return rows, details, fmt.Errorf("%s: %w", s.name, err)
		}
		h.logf("flapping, %s: %d changes in %.1fs, %d in, %d out (standing for %d), final states %d/%d, "+
			"p50 %.1f ms (raw %.1f), max %.1f ms",
			s.name, p.Changes, p.WriteSeconds, p.In, p.Out, p.Accounted, p.FinalStates, p.Objects,
			p.Final.P50, p.RawFinal.P50, p.Final.Max)
		rows = append(rows, flapRows(s, p)...)
	}
	return rows, details, nil
}

func flapRows(s flapSetting, p flappingPhase) []Row {
	label := fmt.Sprintf("Flapping, %d objects × %d changes, %s", p.Objects, p.Changes/max(p.Objects, 1), s.name)
	id := "flapping/" + s.id + "/"
	whole := p.FinalStates == p.Objects && p.Accounted == p.In
	out := newRow(id+"out", label, "events out (sink) vs in (changes)", "", float64(p.Out), float64(p.In), "changes")
	switch {
	case s.window > 0:
		// Each object's first change opens a window; what follows in it merges.
		windows := int(math.Ceil(p.WriteSeconds/s.window.Seconds())) + 1
		out = out.goal(fmt.Sprintf("≤ %d per object (a window each), every change accounted for", windows),
			p.Out <= windows*p.Objects && whole)
	case s.rate > 0:
		allowed := int(math.Ceil(p.WriteSeconds*float64(s.rate))) + int(s.rate) + p.Objects
		out = out.goal(fmt.Sprintf(
			"≤ %d (the limit over the writes, its burst, one per object), every change accounted for", allowed),
			p.Out <= allowed && whole)
	default:
		out = out.goal("= in", p.Out == p.In && whole)
	}
	if !whole {
		out = out.note("final states %d of %d, changes accounted for %d of %d", p.FinalStates, p.Objects, p.Accounted, p.In)
	}
	final := newRow(id+"final", label, "final state, write → sink, max", "ms", p.Final.Max, p.RawFinal.Max, "raw").
		note("p50 %s ms (raw %s)", trim(p.Final.P50), trim(p.RawFinal.P50))
	if s.window > 0 {
		// The promise: never later than the window plus delivery time.
		final = final.goal("≤ window + raw + 100 ms", p.Final.Max <= ms(s.window)+p.RawFinal.Max+100)
	}
	return []Row{out, final}
}

func (h *harness) flap(ctx context.Context, s flapSetting) (p flappingPhase, err error) {
	objects, perObject := h.opts.FlapObjects, h.opts.FlapChanges
	p = flappingPhase{Setting: s.name, Objects: objects, Changes: objects * perObject}
	ns, r, done, err := h.subscribedNamespace(ctx, "flap", 1, func(ws *notifyv1.WatchSubscription) {
		ws.Spec.EventTypes = []notifyv1.EventType{notifyv1.EventUpdated}
		s.tweak(ws)
	})
	if err != nil {
		return p, err
	}
	defer done()
	// The next operator's warm-up waits for no informers: the subscription goes first.
	defer func() { err = errors.Join(err, h.unsubscribe(context.WithoutCancel(ctx), ns, r)) }()
	flapping := writes{ns: ns, prefix: "f", count: objects, workers: 4, bytes: h.opts.ObjectBytes}
	if _, err := h.create(ctx, flapping); err != nil {
		return p, err
	}

	rec := &flapRecorder{starts: map[string]time.Duration{}, raw: map[string]time.Duration{},
		ours: map[string]time.Duration{}}
	h.sink.handle(rec.ourArrival)
	defer h.sink.handle(nil)
	raw, err := h.startRawWatch(ctx, configMaps, ns, rec.rawArrival)
	if err != nil {
		return p, err
	}
	defer raw.stop()

	finals := make([]string, objects)
	first := now()
	err = parallel(objects, objects, func(i int) error {
		name := "f-" + strconv.Itoa(i)
		for c := range perObject {
			patch := []byte(`{"data":{"seq":"` + strconv.Itoa(c) + `"}}`)
			start := now()
			cm, err := h.cs.CoreV1().ConfigMaps(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
			if err != nil {
				return err
			}
			rec.wrote(cm.ResourceVersion, start)
			finals[i] = cm.ResourceVersion
		}
		return nil
	})
	p.WriteSeconds = (now() - first).Seconds()
	if err != nil {
		return p, err
	}
	// The final states arrive at the latest a window (or the rate limit's backlog) later.
	waitCount(ctx, objects, s.window+10*time.Second, func() int { return rec.arrived(finals) })
	h.sink.handle(nil)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	p.In, p.Out, p.Accounted = len(rec.raw), rec.out, rec.accounted
	var ours, rawFinal []time.Duration
	for _, rv := range finals {
		if at, ok := rec.ours[rv]; ok {
			p.FinalStates++
			ours = append(ours, at-rec.starts[rv])
		}
		if at, ok := rec.raw[rv]; ok {
			rawFinal = append(rawFinal, at-rec.starts[rv])
		}
	}
	p.Final, p.RawFinal = summarize(ours), summarize(rawFinal)
	return p, nil
}

// flapRecorder keys everything by the resourceVersion of a change: the writer learns it
// from the API server's answer, the raw watch from the object, the sink from the event id
// (uid:resourceVersion:type).
type flapRecorder struct {
	mu sync.Mutex
	// starts: when the write that made each resourceVersion started.
	starts    map[string]time.Duration
	raw, ours map[string]time.Duration
	out       int
	accounted int
}

func (r *flapRecorder) wrote(rv string, at time.Duration) {
	r.mu.Lock()
	r.starts[rv] = at
	r.mu.Unlock()
}

func (r *flapRecorder) rawArrival(u *unstructured.Unstructured, at time.Duration) {
	r.mu.Lock()
	r.raw[u.GetResourceVersion()] = at
	r.mu.Unlock()
}

func (r *flapRecorder) ourArrival(d delivery) {
	parts := strings.Split(d.ID, ":")
	r.mu.Lock()
	defer r.mu.Unlock()
	r.out++
	r.accounted += max(d.Coalesced, 1)
	if len(parts) == 3 {
		if _, seen := r.ours[parts[1]]; !seen {
			r.ours[parts[1]] = d.At
		}
	}
}

// arrived counts the resourceVersions in rvs that reached the sink.
func (r *flapRecorder) arrived(rvs []string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rv := range rvs {
		if _, ok := r.ours[rv]; ok {
			n++
		}
	}
	return n
}
