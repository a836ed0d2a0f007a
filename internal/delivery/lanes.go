package delivery

import (
	"sync"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// laneAssignments keep an object on one lane while it has events in the pipeline (queued
// or in flight), so its events keep their order; an object with none goes to the lane with
// the fewest events, the first of equals. Lanes thus fill only under backlog: one change
// at a time keeps a subscription on its first lane and its one warm worker, where spreading
// objects by hash woke a cold worker for most changes (about 9% more CPU per delivery in
// BenchmarkFanOut100PipelinesToHTTPSink).
type laneAssignments struct {
	mu sync.Mutex
	// objects are the objects with events in the pipeline, by event.ObjectPath: the same
	// string for all of an object's events, computed once per change.
	objects map[string]assignment
	// load counts the events of each lane.
	load []int
}

type assignment struct{ lane, events int }

func newLaneAssignments(lanes int) *laneAssignments {
	return &laneAssignments{objects: map[string]assignment{}, load: make([]int, lanes)}
}

// assign picks the lane of ev, which is to be queued.
func (a *laneAssignments) assign(ev *event.Event) int {
	if len(a.load) == 1 {
		return 0
	}
	key := ev.ObjectPath()
	a.mu.Lock()
	defer a.mu.Unlock()
	as, ok := a.objects[key]
	if !ok {
		as.lane = leastLoaded(a.load)
	}
	as.events++
	a.objects[key] = as
	a.load[as.lane]++
	return as.lane
}

// release tells that ev, assigned before, left the pipeline.
func (a *laneAssignments) release(ev *event.Event) {
	if len(a.load) == 1 {
		return
	}
	key := ev.ObjectPath()
	a.mu.Lock()
	defer a.mu.Unlock()
	as, ok := a.objects[key]
	if !ok {
		return
	}
	a.load[as.lane]--
	if as.events--; as.events == 0 {
		delete(a.objects, key)
		return
	}
	a.objects[key] = as
}

// leastLoaded is the index of the smallest count, the first of equals.
func leastLoaded(load []int) int {
	least := 0
	for i, n := range load {
		if n < load[least] {
			least = i
		}
	}
	return least
}
