package resilience

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ledger records every change the test writes to ConfigMaps, with the event id the
// contract derives from it: uid:resourceVersion:Added|Updated|Deleted. A Deleted id carries
// the resourceVersion of the deletion, which the API does not return to the deleting client,
// so deletions are matched by uid.
//
// Objects are named "name" in the ledger's namespace or "namespace/name" in another one.
// Writes go through the package's client unless use switched to another API server.
type ledger struct {
	ns string

	mu      sync.Mutex
	cl      client.Client         // nil: the package's k8s
	objects map[string]*object    // by the name the test gave: name or namespace/name
	byUID   map[types.UID]*object // for readable diffs
	changes []change
}

type object struct {
	cm      *corev1.ConfigMap
	deleted bool
}

// change is one write and the event it must produce.
type change struct {
	Name      string // as the test named it: name or namespace/name
	Namespace string
	UID       types.UID
	Type      string // Added, Updated or Deleted
	ID        string // uid:rv:Type; for Deleted uid:?:Deleted
	RV        string
	Phase     string // what the test was doing, for failure messages
}

func newLedger(ns string) *ledger {
	return &ledger{ns: ns, objects: map[string]*object{}, byUID: map[types.UID]*object{}}
}

func eventID(uid types.UID, rv, typ string) string { return string(uid) + ":" + rv + ":" + typ }

// use sends the ledger's writes through c from now on; nil goes back to the package's client.
func (l *ledger) use(c client.Client) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cl = c
}

func (l *ledger) client() client.Client {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cl != nil {
		return l.cl
	}
	return k8s
}

// key is where the object the test calls name lives.
func (l *ledger) key(name string) (namespace, objName string) {
	if ns, n, ok := strings.Cut(name, "/"); ok {
		return ns, n
	}
	return l.ns, name
}

func (l *ledger) record(c change) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changes = append(l.changes, c)
}

// recordWrite records a create or update of cm (the test's name for it), whose event id it
// carries.
func (l *ledger) recordWrite(name string, cm *corev1.ConfigMap, typ, phase string) {
	l.record(change{Name: name, Namespace: cm.Namespace, UID: cm.UID, Type: typ, RV: cm.ResourceVersion,
		ID: eventID(cm.UID, cm.ResourceVersion, typ), Phase: phase})
}

// liveObject is the object called name, which the ledger created and has not deleted.
func (l *ledger) liveObject(op, name string) (*object, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if o := l.objects[name]; o != nil && !o.deleted {
		return o, nil
	}
	return nil, fmt.Errorf("%s %s: not a live object of the ledger", op, name)
}

// create writes a new ConfigMap.
func (l *ledger) create(ctx context.Context, name, phase string) error {
	ns, objName := l.key(name)
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: objName},
		Data:       map[string]string{"n": "0"},
	}
	if err := l.client().Create(ctx, cm); err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	l.mu.Lock()
	o := &object{cm: cm}
	l.objects[name] = o
	l.byUID[cm.UID] = o
	l.mu.Unlock()
	l.recordWrite(name, cm, "Added", phase)
	return nil
}

// update changes the data of a ConfigMap the ledger created. Each object has one writer at
// a time, so the update carries the last resourceVersion as a precondition.
func (l *ledger) update(ctx context.Context, name, phase string) error {
	o, err := l.liveObject("update", name)
	if err != nil {
		return err
	}
	cm := o.cm.DeepCopy()
	var n int
	_, _ = fmt.Sscan(cm.Data["n"], &n)
	cm.Data["n"] = fmt.Sprint(n + 1)
	if err := l.client().Update(ctx, cm); err != nil {
		return fmt.Errorf("update %s: %w", name, err)
	}
	l.mu.Lock()
	o.cm = cm
	l.mu.Unlock()
	l.recordWrite(name, cm, "Updated", phase)
	return nil
}

// remove deletes a ConfigMap the ledger created, with its last resourceVersion as precondition.
func (l *ledger) remove(ctx context.Context, name, phase string) error {
	o, err := l.liveObject("delete", name)
	if err != nil {
		return err
	}
	rv := o.cm.ResourceVersion
	if err := l.client().Delete(ctx, o.cm.DeepCopy(), client.Preconditions{ResourceVersion: &rv}); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	l.mu.Lock()
	o.deleted = true
	l.mu.Unlock()
	l.record(change{Name: name, Namespace: o.cm.Namespace, UID: o.cm.UID, Type: "Deleted",
		ID: eventID(o.cm.UID, "?", "Deleted"), Phase: phase})
	return nil
}

// live returns the names of objects that exist, sorted.
func (l *ledger) live() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var names []string
	for name, o := range l.objects {
		if !o.deleted {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// lastRV is the resourceVersion of the newest write.
func (l *ledger) lastRV() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range slices.Backward(l.changes) {
		if c.RV != "" {
			return c.RV
		}
	}
	return ""
}

// lastRVIn is the resourceVersion of the newest write in namespace ns.
func (l *ledger) lastRVIn(ns string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range slices.Backward(l.changes) {
		if c.RV != "" && c.Namespace == ns {
			return c.RV
		}
	}
	return ""
}

// since returns the changes from index i on (len() marks a point in time).
func (l *ledger) since(i int) []change {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.changes[i:])
}

// last is the newest change.
func (l *ledger) last() change {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changes[len(l.changes)-1]
}

func (l *ledger) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.changes)
}

func (l *ledger) describe(uid types.UID) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if o := l.byUID[uid]; o != nil {
		return o.cm.Namespace + "/" + o.cm.Name
	}
	return "unknown object"
}

// expectation is the set of event ids a subscription must receive (required), of which it
// must receive at least one per group (oneOf), and may receive (optional). Anything else it
// receives is unexpected. Deleted ids are matched by uid.
type expectation struct {
	l *ledger

	required map[string]string // id -> why
	optional map[string]string
	oneOf    []oneOfGroup
	// deleted uids: required (true) or optional (false).
	deleted map[types.UID]bool
	delWhy  map[types.UID]string
}

type oneOfGroup struct {
	ids []string
	why string
}

func newExpectation(l *ledger) *expectation {
	return &expectation{l: l, required: map[string]string{}, optional: map[string]string{},
		deleted: map[types.UID]bool{}, delWhy: map[types.UID]string{}}
}

// requireAll requires the event of every change.
func (e *expectation) requireAll(changes []change) {
	for _, c := range changes {
		if c.Type == "Deleted" {
			e.deleted[c.UID] = true
			e.delWhy[c.UID] = c.Phase
			continue
		}
		e.required[c.ID] = c.Phase
		delete(e.optional, c.ID)
	}
}

// allowAll accepts the event of every change without requiring it.
func (e *expectation) allowAll(changes []change) {
	for _, c := range changes {
		if c.Type == "Deleted" {
			if _, ok := e.deleted[c.UID]; !ok {
				e.deleted[c.UID] = false
				e.delWhy[c.UID] = c.Phase
			}
			continue
		}
		if _, ok := e.required[c.ID]; !ok {
			e.optional[c.ID] = c.Phase
		}
	}
}

// requireFinalStates is what a re-list can deliver for changes it did not see one by one:
// per object, its last state as Updated or Added (either is fine); a deletion may be
// reported or not. The changes' own ids are accepted too: they are genuine.
func (e *expectation) requireFinalStates(changes []change) {
	e.allowAll(changes)
	last := map[types.UID]change{}
	var order []types.UID
	for _, c := range changes {
		if _, ok := last[c.UID]; !ok {
			order = append(order, c.UID)
		}
		last[c.UID] = c
	}
	for _, uid := range order {
		c := last[uid]
		if c.Type == "Deleted" {
			if _, ok := e.deleted[uid]; !ok {
				e.deleted[uid] = false
				e.delWhy[uid] = c.Phase + " (deletions in the gap may be missing)"
			}
			continue
		}
		e.oneOf = append(e.oneOf, oneOfGroup{
			ids: []string{eventID(uid, c.RV, "Updated"), eventID(uid, c.RV, "Added")},
			why: c.Phase + " (final state, as Updated or Added)",
		})
	}
}

// parseID splits uid:rv:type.
func parseID(id string) (uid types.UID, rv, typ string, ok bool) {
	parts := strings.Split(id, ":")
	if len(parts) != 3 {
		return "", "", "", false
	}
	return types.UID(parts[0]), parts[1], parts[2], true
}

// isResync tells resync events apart from changes.
func isResync(d delivery) bool { return d.Type == typeResync || strings.HasPrefix(d.ID, "resync:") }

// diff compares the distinct ids of the changes received (resync events excluded) with the
// expectation: the ids missing and the ids nobody expected, each with a reason.
func (e *expectation) diff(got []delivery) (missing, unexpected []string) {
	received := map[string]int{}
	for _, d := range got {
		if isResync(d) {
			continue
		}
		received[d.ID]++
		if _, _, typ, ok := parseID(d.ID); ok && d.Type != ceType(typ) {
			unexpected = append(unexpected, e.line(d.ID, fmt.Sprintf("ce-type %q does not match the id", d.Type)))
		}
	}
	for id, why := range e.required {
		if received[id] == 0 {
			missing = append(missing, e.line(id, why))
		}
	}
	for _, g := range e.oneOf {
		if !slices.ContainsFunc(g.ids, func(id string) bool { return received[id] > 0 }) {
			missing = append(missing, e.line(strings.Join(g.ids, " | "), g.why))
		}
	}
	deletedSeen := map[types.UID][]string{}
	for id := range received {
		if _, ok := e.required[id]; ok {
			continue
		}
		if _, ok := e.optional[id]; ok {
			continue
		}
		if slices.ContainsFunc(e.oneOf, func(g oneOfGroup) bool { return slices.Contains(g.ids, id) }) {
			continue
		}
		uid, _, typ, ok := parseID(id)
		if ok && typ == "Deleted" {
			if _, known := e.deleted[uid]; known {
				deletedSeen[uid] = append(deletedSeen[uid], id)
				continue
			}
		}
		unexpected = append(unexpected, e.line(id, e.whyUnexpected(id)))
	}
	for uid, required := range e.deleted {
		if required && len(deletedSeen[uid]) == 0 {
			missing = append(missing, e.line(eventID(uid, "*", "Deleted"), e.delWhy[uid]))
		}
		if len(deletedSeen[uid]) > 1 {
			slices.Sort(deletedSeen[uid])
			unexpected = append(unexpected, e.line(strings.Join(deletedSeen[uid], " and "),
				"more than one distinct Deleted id for one deletion"))
		}
	}
	slices.Sort(missing)
	slices.Sort(unexpected)
	return missing, unexpected
}

// check is diff as a readable report; "" when the ids match.
func (e *expectation) check(got []delivery) string {
	missing, unexpected := e.diff(got)
	if len(missing) == 0 && len(unexpected) == 0 {
		return ""
	}
	distinct, total := distinctIDs(got)
	var b strings.Builder
	fmt.Fprintf(&b, "received %d distinct change ids in %d deliveries; expected %d ids, %d one-of groups, %d deletions\n",
		distinct, total, len(e.required), len(e.oneOf), len(e.deleted))
	if len(missing) > 0 {
		fmt.Fprintf(&b, "missing (%d):\n  %s\n", len(missing), strings.Join(limit(missing, 40), "\n  "))
	}
	if len(unexpected) > 0 {
		fmt.Fprintf(&b, "unexpected (%d):\n  %s\n", len(unexpected), strings.Join(limit(unexpected, 40), "\n  "))
	}
	return b.String()
}

// limit keeps a failure message readable.
func limit(lines []string, n int) []string {
	if len(lines) <= n {
		return lines
	}
	return append(slices.Clone(lines[:n]), fmt.Sprintf("... and %d more", len(lines)-n))
}

// ceType is the CloudEvents type of a change type.
func ceType(typ string) string {
	switch typ {
	case "Added":
		return typeAdded
	case "Updated":
		return typeUpdated
	case "Deleted":
		return typeDeleted
	}
	return "?"
}

func (e *expectation) line(id, why string) string {
	uid, _, _, _ := parseID(strings.Split(id, " ")[0])
	return fmt.Sprintf("%s  %s: %s", id, e.l.describe(uid), why)
}

// whyUnexpected names the likely cause of an id nobody wrote.
func (e *expectation) whyUnexpected(id string) string {
	uid, rv, typ, ok := parseID(id)
	if !ok {
		return "not a uid:resourceVersion:type id"
	}
	e.l.mu.Lock()
	_, known := e.l.byUID[uid]
	var created string
	for _, c := range e.l.changes {
		if c.UID == uid && c.Type == "Added" {
			created = c.RV
		}
	}
	e.l.mu.Unlock()
	switch {
	case !known:
		return "an object the test did not write"
	case typ == "Added" && rv != created:
		return "Added for an object that already existed (Added storm)"
	default:
		return fmt.Sprintf("%s at resourceVersion %s, which no write of the test produced", typ, rv)
	}
}

// distinctIDs counts distinct ids and all deliveries of changes (resync excluded).
func distinctIDs(got []delivery) (distinct, total int) {
	seen := map[string]bool{}
	for _, d := range got {
		if isResync(d) {
			continue
		}
		total++
		seen[d.ID] = true
	}
	return len(seen), total
}

// requireNoError fails the test on a write error.
func requireNoError(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
