package resilience

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// TestExpectationCatchesLossStormsAndStrays checks the id comparison itself, without a
// cluster: a suite that cannot fail proves nothing.
func TestExpectationCatchesLossStormsAndStrays(t *testing.T) {
	l := newLedger("ns")
	add := func(name string, uid types.UID, changes ...change) {
		o := &object{cm: &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: uid}}}
		l.objects[name], l.byUID[uid] = o, o
		for _, c := range changes {
			c.Name, c.UID = name, uid
			if c.Type == "Deleted" {
				c.ID = eventID(uid, "?", "Deleted")
			} else {
				c.ID = eventID(uid, c.RV, c.Type)
			}
			l.changes = append(l.changes, c)
		}
	}
	add("a", "uid-a", change{Type: "Added", RV: "10", Phase: "p"}, change{Type: "Updated", RV: "12", Phase: "p"})
	add("b", "uid-b", change{Type: "Added", RV: "11", Phase: "p"}, change{Type: "Deleted", Phase: "p"})
	add("c", "uid-c", change{Type: "Added", RV: "20", Phase: "gap"}, change{Type: "Updated", RV: "21", Phase: "gap"})

	ev := func(id, typ string) delivery { return delivery{ID: id, Type: typ} }
	gapAdded := ev("uid-c:21:Added", typeAdded)
	complete := []delivery{
		ev("uid-a:10:Added", typeAdded), ev("uid-a:12:Updated", typeUpdated), ev("uid-a:12:Updated", typeUpdated),
		ev("uid-b:11:Added", typeAdded), ev("uid-b:13:Deleted", typeDeleted),
		ev("resync:x", typeResync),
	}
	exp := newExpectation(l)
	exp.requireAll(l.changes[:4])
	exp.requireFinalStates(l.changes[4:])

	cases := []struct {
		name string
		got  []delivery
		want []string // substrings of the report; none means a match
	}{
		{"complete, duplicates allowed, gap as Added", slices.Concat(complete, []delivery{gapAdded}), nil},
		{"complete, gap as Updated", slices.Concat(complete, []delivery{ev("uid-c:21:Updated", typeUpdated)}), nil},
		{"a lost update", slices.Concat(complete[:1], complete[3:]),
			[]string{"missing (2)", "uid-a:12:Updated  ns/a: p", "uid-c:21:Updated | uid-c:21:Added"}},
		{"a lost deletion", slices.Concat(complete[:4], []delivery{gapAdded}),
			[]string{"missing (1)", "uid-b:*:Deleted"}},
		{"an Added storm", slices.Concat(complete, []delivery{gapAdded, ev("uid-a:12:Added", typeAdded)}),
			[]string{"unexpected (1)", "uid-a:12:Added  ns/a: Added for an object that already existed (Added storm)"}},
		{"the gap's changes one by one", slices.Concat(complete, []delivery{ev("uid-c:20:Added", typeAdded), gapAdded}), nil},
		{"a state no write produced", slices.Concat(complete, []delivery{gapAdded, ev("uid-c:19:Updated", typeUpdated)}),
			[]string{"unexpected (1)",
				"uid-c:19:Updated  ns/c: Updated at resourceVersion 19, which no write of the test produced"}},
		{"two ids for one deletion", slices.Concat(complete, []delivery{gapAdded, ev("uid-b:14:Deleted", typeDeleted)}),
			[]string{"more than one distinct Deleted id"}},
		{"a wrong ce-type", slices.Concat(complete, []delivery{ev("uid-c:21:Added", typeUpdated)}),
			[]string{`ce-type "io.dynamicnotifier.resource.updated" does not match`}},
		{"an object nobody wrote", slices.Concat(complete, []delivery{gapAdded, ev("uid-z:1:Added", typeAdded)}),
			[]string{"an object the test did not write"}},
	}
	for _, tc := range cases {
		report := exp.check(tc.got)
		if len(tc.want) == 0 && report != "" {
			t.Errorf("%s: want a match, got:\n%s", tc.name, report)
		}
		for _, w := range tc.want {
			if !strings.Contains(report, w) {
				t.Errorf("%s: report lacks %q:\n%s", tc.name, w, report)
			}
		}
	}
}
