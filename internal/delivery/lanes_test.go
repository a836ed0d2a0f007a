package delivery

import (
	"strconv"
	"testing"
)

func TestLaneAssignments(t *testing.T) {
	type step struct {
		release bool
		object  string
		lane    int // the lane assign returns; unused for a release
	}
	assign := func(object string, lane int) step { return step{object: object, lane: lane} }
	release := func(object string) step { return step{release: true, object: object} }
	cases := []struct {
		name  string
		lanes int
		steps []step
	}{
		{name: "one change at a time stays on the first lane", lanes: 4,
			steps: []step{assign("a", 0), release("a"), assign("b", 0), release("b"), assign("a", 0)}},
		{name: "a backlog spreads over the least loaded lanes", lanes: 4,
			steps: []step{assign("a", 0), assign("b", 1), assign("c", 2), assign("d", 3), assign("e", 0),
				release("b"), assign("f", 1)}},
		{name: "an object keeps its lane while it has events", lanes: 4,
			steps: []step{assign("a", 0), assign("b", 1), assign("a", 0), release("a"), assign("a", 0),
				assign("c", 2)}},
		{name: "an object whose events all left may move", lanes: 4,
			steps: []step{assign("a", 0), assign("b", 1), release("a"), assign("c", 0), assign("a", 2)}},
		{name: "one lane", lanes: 1,
			steps: []step{assign("a", 0), assign("b", 0), release("a"), assign("a", 0)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newLaneAssignments(tc.lanes)
			for i, s := range tc.steps {
				ev := newEvent(s.object, i+1)
				if s.release {
					a.release(ev)
					continue
				}
				if got := a.assign(ev); got != s.lane {
					t.Fatalf("step %d: %s went to lane %d, want %d", i, s.object, got, s.lane)
				}
			}
		})
	}
}

// Every assigned event released leaves nothing behind: the map does not grow with the
// objects a pipeline has seen.
func TestLaneAssignmentsForgetObjectsWithoutEvents(t *testing.T) {
	a := newLaneAssignments(4)
	for i := range 100 {
		ev := newEvent("cm-"+strconv.Itoa(i%10), i+1)
		a.assign(ev)
		a.assign(ev)
		a.release(ev)
		a.release(ev)
	}
	if len(a.objects) != 0 {
		t.Fatalf("%d objects kept", len(a.objects))
	}
	for lane, n := range a.load {
		if n != 0 {
			t.Fatalf("lane %d counts %d events", lane, n)
		}
	}
}
