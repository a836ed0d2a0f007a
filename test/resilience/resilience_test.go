package resilience

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// The stream of the kill and failover tests: 200 changes by 4 writers, each creating 5
// ConfigMaps, updating them round-robin (so every survivor is updated after its create and a
// re-sent Added would carry a new id) and deleting its last one.
const (
	streamWriters   = 4
	streamPerWriter = 50
	killAfter       = 50 // deliveries of the stream before the manager dies
)

var streamReached = fmt.Sprintf("%d changes of the stream reach the sink", killAfter)

// writeStream writes streamWriters*streamPerWriter changes to ConfigMaps named prefix-w<i>-<j>,
// one goroutine per writer over disjoint objects.
func writeStream(ctx context.Context, led *ledger, prefix, phase string) error {
	const objects = 5
	var wg sync.WaitGroup
	errs := make([]error, streamWriters)
	for w := range streamWriters {
		wg.Go(func() {
			name := func(j int) string { return fmt.Sprintf("%s-w%d-%d", prefix, w, j) }
			n := 0
			do := func(err error) bool {
				n++
				if err != nil && errs[w] == nil {
					errs[w] = err
				}
				return err == nil
			}
			for j := range objects {
				if !do(led.create(ctx, name(j), phase)) {
					return
				}
			}
			for i := 0; n < streamPerWriter-1; i++ {
				if !do(led.update(ctx, name(i%objects), phase)) {
					return
				}
			}
			do(led.remove(ctx, name(objects-1), phase))
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// writeWhileDown changes what the stream left: every live ConfigMap named prefix-* is
// updated, four new ones are created and updated, and the first two are deleted.
func writeWhileDown(ctx context.Context, led *ledger, prefix, phase string) error {
	var live []string
	for _, name := range led.live() {
		if strings.HasPrefix(name, prefix+"-") {
			live = append(live, name)
		}
	}
	for _, name := range live {
		if err := led.update(ctx, name, phase); err != nil {
			return err
		}
	}
	for j := range 4 {
		name := fmt.Sprintf("%s-late-%d", prefix, j)
		if err := led.create(ctx, name, phase); err != nil {
			return err
		}
		if err := led.update(ctx, name, phase); err != nil {
			return err
		}
	}
	for _, name := range live[:2] {
		if err := led.remove(ctx, name, phase); err != nil {
			return err
		}
	}
	return nil
}

// TestManagerKilledMidStream: SIGKILL the manager while 200 changes are in flight, keep
// writing while it is down, start a new one: every change arrives at least once with its
// deterministic id, no existing object is re-sent as Added.
func TestManagerKilledMidStream(t *testing.T) {
	s := newScenario(t, "kill")
	s.subscribe("sub")
	m1 := startManager(t, "manager-1", s.managerOptions())
	s.waitReady(m1)
	s.probe(30*time.Second, m1)
	s.waitCheckpoint(m1)

	base := s.sink.count("sub")
	written := make(chan error, 1)
	go func() { written <- writeStream(s.ctx, s.led, "cm", "stream in flight at the kill") }()
	s.waitDeliveries("sub", base, killAfter, streamReached, m1)
	m1.kill(t)
	requireNoError(t, <-written)
	t.Logf("at the kill: %d of %d stream changes delivered", s.sink.count("sub")-base, streamWriters*streamPerWriter)

	requireNoError(t, writeWhileDown(s.ctx, s.led, "cm", "written while no manager ran"))

	m2 := startManager(t, "manager-2", s.managerOptions())
	restarted := time.Now()
	s.awaitExpected(90*time.Second, []*manager{m2}, map[string]*expectation{"sub": s.expectAll()})
	t.Logf("caught up %s after the restart", time.Since(restarted).Round(time.Millisecond))
}

// TestLeaderKilledMidStream: two managers with leader election; SIGKILL the leader while 200
// changes are in flight and keep writing: the standby takes the Lease within the lease
// duration and every change arrives, without an Added storm.
func TestLeaderKilledMidStream(t *testing.T) {
	s := newScenario(t, "failover")
	s.subscribe("sub")
	opts := s.managerOptions()
	opts.leaderElect = true

	a := startManager(t, "manager-a", opts)
	var lease, holderA string
	s.eventually(30*time.Second, []*manager{a}, "manager-a holds the leader-election Lease in "+s.cpNS, func() error {
		holders, err := s.leaseHolders()
		if err != nil {
			return err
		}
		if len(holders) != 1 {
			return fmt.Errorf("Leases with a holder: %v", holders)
		}
		for lease, holderA = range holders {
		}
		return nil
	})
	t.Logf("manager-a leads: Lease %s/%s held by %s", s.cpNS, lease, holderA)
	b := startManager(t, "manager-b", opts)
	s.eventually(30*time.Second, []*manager{a, b}, "manager-b is up as a standby", func() error {
		if b.log.find("attempting to acquire leader lease") == "" {
			return errors.New("manager-b has not tried to acquire the Lease yet")
		}
		return nil
	})
	s.waitReady(a, b)
	s.probe(30*time.Second, a, b)
	s.waitCheckpoint(a, b)

	base := s.sink.count("sub")
	written := make(chan error, 1)
	go func() { written <- writeStream(s.ctx, s.led, "cm", "stream in flight at the failover") }()
	s.waitDeliveries("sub", base, killAfter, streamReached, a, b)
	holders, err := s.leaseHolders()
	requireNoError(t, err)
	if holders[lease] != holderA {
		t.Fatalf("the Lease moved before the leader was killed: %v (manager-a was %s)", holders, holderA)
	}
	a.kill(t)
	killed := time.Now()
	allWritten := make(chan error, 1)
	go func() {
		if err := <-written; err != nil {
			allWritten <- err
			return
		}
		allWritten <- writeWhileDown(s.ctx, s.led, "cm", "written during the failover")
	}()

	// The standby takes over once the lease expires: at most a lease duration after the last
	// renewal, plus its retry period (jittered up to 2.2x by client-go), plus a margin.
	bound := leaseDuration + 22*retryPeriod/10 + 2*time.Second
	takeover := "manager-b takes over the Lease within " + bound.String() + " of the kill"
	s.eventually(bound-time.Since(killed), []*manager{b}, takeover, func() error {
		holders, err := s.leaseHolders()
		if err != nil {
			return err
		}
		if h := holders[lease]; h == "" || h == holderA {
			return fmt.Errorf("Lease %s held by %q", lease, h)
		}
		return nil
	})
	t.Logf("manager-b took over %s after the kill", time.Since(killed).Round(time.Millisecond))
	requireNoError(t, <-allWritten)

	s.awaitExpected(90*time.Second, []*manager{b}, map[string]*expectation{"sub": s.expectAll()})
}

// apiOutage is how long the API server stays down in TestAPIServerRestart once it has
// exited (it takes up to apiServerStopGrace to exit, and seconds to start again).
const apiOutage = 5 * time.Second

// maxOutageLogLines bounds what the manager may log while the API server is down and until
// its watch delivers again: reconnecting with backoff is a few lines per informer, a retry
// loop without backoff is hundreds.
const maxOutageLogLines = 200

// TestAPIServerRestart: stop the kube-apiserver process (etcd keeps running) and start it
// again: the manager neither crashes nor floods its log while it is down, reconnects, and
// every change made after it reconnected arrives.
func TestAPIServerRestart(t *testing.T) {
	s := newScenario(t, "apiserver")
	s.subscribe("sub")
	m := startManager(t, "manager", s.managerOptions())
	s.waitReady(m)
	s.probe(30*time.Second, m)

	for i := range 10 {
		requireNoError(t, s.led.create(s.ctx, fmt.Sprintf("cm-%d", i), "before the outage"))
	}
	for range 2 {
		for i := range 10 {
			requireNoError(t, s.led.update(s.ctx, fmt.Sprintf("cm-%d", i), "before the outage"))
		}
	}
	s.waitReceived(60*time.Second, []*manager{m}, "sub", s.expectAll(), "changes before the outage reach the sink")

	logFrom := m.log.count()
	outage := restartAPIServer(t, func() {
		// The outage itself: the manager must keep running all along.
		end := time.Now().Add(apiOutage)
		for time.Now().Before(end) {
			if err := m.alive(); err != nil {
				t.Fatalf("while the API server was down: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	reconnect := time.Now()
	// What the subscription's status says until the watch delivers again (logged: the
	// manager cannot write status while the API server is down, so this is what is left).
	stopWatching := s.watchReady("sub", nil)
	// Its watch delivers again: a probe written after the restart arrives.
	s.probe(90*time.Second, m)
	t.Logf("API server unavailable for %s; manager delivers again %s after it came back; Ready meanwhile: %s",
		outage.Round(time.Millisecond), time.Since(reconnect).Round(time.Millisecond), stopWatching())
	outageLog := m.log.linesFrom(logFrom)
	t.Logf("manager logged %d lines from the outage until it delivered again:\n%s",
		len(outageLog), summarizeLog(outageLog))
	if len(outageLog) > maxOutageLogLines {
		t.Errorf("error storm: the manager logged %d lines (more than %d) during a %s API server outage; the first:\n%s",
			len(outageLog), maxOutageLogLines, outage.Round(time.Second),
			strings.Join(outageLog[:min(40, len(outageLog))], "\n"))
	}

	after := s.led.len()
	for i := range 10 {
		requireNoError(t, s.led.update(s.ctx, fmt.Sprintf("cm-%d", i), "after the API server restart"))
	}
	for i := range 3 {
		requireNoError(t, s.led.create(s.ctx, fmt.Sprintf("late-%d", i), "after the API server restart"))
		requireNoError(t, s.led.update(s.ctx, fmt.Sprintf("late-%d", i), "after the API server restart"))
	}
	for i := range 2 {
		requireNoError(t, s.led.remove(s.ctx, fmt.Sprintf("cm-%d", i), "after the API server restart"))
	}
	t.Logf("%d changes written after the restart", s.led.len()-after)

	// Everything before the outage was delivered already; a resync after the restart may
	// re-send it (same ids). Everything after must arrive.
	s.awaitExpected(60*time.Second, []*manager{m}, map[string]*expectation{"sub": s.expectAll()})
	if err := m.alive(); err != nil {
		t.Error(err)
	}
	if n := len(s.resyncs("sub")); n > 0 {
		t.Logf("the manager resynced after the restart (%d resync events)", n)
	}
}

// summarizeLog counts log records by level and message: zap's JSON (the binary's production
// format: level, logger, msg) or its console format (time, level, logger, message, fields,
// tab-separated); other lines (stack traces) are counted together.
func summarizeLog(lines []string) string {
	counts := map[string]int{}
	var order []string
	for _, line := range lines {
		key := "(continuation lines: stack traces)"
		var rec struct{ Level, Logger, Msg string }
		if strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), &rec) == nil && rec.Msg != "" {
			key = strings.Join(slices.DeleteFunc([]string{rec.Level, rec.Logger, rec.Msg},
				func(s string) bool { return s == "" }), " ")
		} else if f := strings.Split(line, "\t"); len(f) >= 3 && line[0] >= '0' && line[0] <= '9' {
			key = f[1]
			for _, part := range f[2:] {
				if strings.HasPrefix(part, "{") {
					break
				}
				key += " " + part
			}
		}
		if counts[key] == 0 {
			order = append(order, key)
		}
		counts[key]++
	}
	var b strings.Builder
	for _, key := range order {
		fmt.Fprintf(&b, "  %4d  %s\n", counts[key], key)
	}
	return b.String()
}

// TestCheckpointBeyondWatchWindow: stop the manager, change objects, then restart the API
// server and compact etcd so the checkpoint is answered 410 Gone. The new manager sends one
// resync event per subscription, delivers the objects changed in the gap (as Updated or
// Added, their final state), re-sends nothing as Added, and sets status.lastResyncTime.
func TestCheckpointBeyondWatchWindow(t *testing.T) {
	s := newScenario(t, "gone")
	s.subscribe("sub-a")
	s.subscribe("sub-b")
	m1 := startManager(t, "manager-1", s.managerOptions())
	s.waitReady(m1)
	s.probe(30*time.Second, m1)

	const objects = 12
	for i := range objects {
		requireNoError(t, s.led.create(s.ctx, fmt.Sprintf("cm-%d", i), "before the checkpoint"))
	}
	for i := range objects {
		// Updated after its create: an Added re-sent for it would carry a new id.
		requireNoError(t, s.led.update(s.ctx, fmt.Sprintf("cm-%d", i), "before the checkpoint"))
	}
	before := s.expectAll()
	for _, sub := range s.subs {
		s.waitReceived(60*time.Second, []*manager{m1}, sub, before, "changes before the checkpoint reach "+sub)
	}
	s.waitCheckpoint(m1)
	// Stopped gracefully, the manager saves a checkpoint covering everything delivered.
	m1.terminate(t, 40*time.Second)
	checkpointRV := s.led.lastRV()

	gap := s.led.len()
	for i := range 4 {
		requireNoError(t, s.led.update(s.ctx, fmt.Sprintf("cm-%d", i), "changed while no manager ran"))
	}
	for i := range 3 {
		requireNoError(t, s.led.create(s.ctx, fmt.Sprintf("gap-%d", i), "created while no manager ran"))
	}
	for i := 4; i < 6; i++ {
		requireNoError(t, s.led.remove(s.ctx, fmt.Sprintf("cm-%d", i), "deleted while no manager ran"))
	}
	gapChanges := s.led.since(gap)

	// The fault: a fresh watch cache starts at the API server's restart, and etcd forgets
	// everything before its current revision.
	restartAPIServer(t, func() { t.Logf("etcd compacted at revision %d", compactEtcd(t)) })
	requireNoError(t, watchGone(s.ns, checkpointRV))
	t.Logf("a watch of %s from resourceVersion %s (the checkpoint's at most) is answered 410 Gone", s.ns, checkpointRV)

	m2 := startManager(t, "manager-2", s.managerOptions())
	for _, sub := range s.subs {
		s.eventually(60*time.Second, []*manager{m2}, "a resync event reaches "+sub, func() error {
			if len(s.resyncs(sub)) == 0 {
				return errors.New("no resync event yet")
			}
			return nil
		})
	}

	after := s.led.len()
	requireNoError(t, s.led.update(s.ctx, "cm-6", "after the resync"))
	requireNoError(t, s.led.update(s.ctx, "cm-7", "after the resync"))
	requireNoError(t, s.led.create(s.ctx, "late-0", "after the resync"))

	exps := map[string]*expectation{}
	for _, sub := range s.subs {
		e := s.expect(s.led.since(0)[:gap])
		e.requireFinalStates(gapChanges)
		e.requireAll(s.led.since(after))
		exps[sub] = e
	}
	s.awaitExpected(60*time.Second, []*manager{m2}, exps)

	for _, sub := range s.subs {
		resyncs := s.resyncs(sub)
		ids := map[string]bool{}
		for _, d := range resyncs {
			ids[d.ID] = true
			if d.Type != typeResync || !strings.HasPrefix(d.ID, "resync:") {
				t.Errorf("%s: resync event with ce-type %q and ce-id %q; want %s and resync:...", sub, d.Type, d.ID, typeResync)
			}
		}
		if len(ids) != 1 {
			t.Errorf("%s: %d distinct resync events, want exactly one: %v", sub, len(ids), ids)
		}
		t.Logf("%s: resync %v (%d deliveries)", sub, keys(ids), len(resyncs))
		s.eventually(30*time.Second, []*manager{m2}, sub+" reports status.lastResyncTime", func() error {
			v, err := s.lastResyncTime(sub)
			if err != nil {
				return err
			}
			if v == "" {
				return errors.New("status.lastResyncTime is not set")
			}
			return nil
		})
	}
}

// watchGone checks that the API server no longer serves a watch of ns's ConfigMaps from rv.
func watchGone(ns, rv string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w, err := clientset.CoreV1().ConfigMaps(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: rv})
	if err != nil {
		if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			return nil
		}
		return fmt.Errorf("watch from %s: %w", rv, err)
	}
	defer w.Stop()
	ev, ok := <-w.ResultChan()
	switch {
	case !ok:
		return fmt.Errorf("fault injection failed: a watch from resourceVersion %s was neither served nor refused", rv)
	case ev.Type != watch.Error:
		return fmt.Errorf("fault injection failed: a watch from resourceVersion %s is still served (%s event)", rv, ev.Type)
	}
	if err := apierrors.FromObject(ev.Object); apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
		return nil
	}
	return fmt.Errorf("watch from %s: error event %v", rv, ev.Object)
}

func keys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }

// TestGracefulShutdownWithSlowSink: SIGTERM the manager while a sink answering in 200 ms has
// far more events queued than it can take within the grace period: the manager exits by
// itself within the grace period, and a new manager delivers whatever was left, so nothing
// is lost.
func TestGracefulShutdownWithSlowSink(t *testing.T) {
	s := newScenario(t, "graceful")
	s.subscribe("sub")
	opts := s.managerOptions()
	opts.shutdownGrace = shutdownGrace
	m1 := startManager(t, "manager-1", opts)
	s.waitReady(m1)
	s.probe(30*time.Second, m1)
	s.waitCheckpoint(m1)

	// 4 objects x 50 changes: at most 4 deliveries in flight (one per object), 20 a second
	// at 200 ms each, so the queue needs about 10s: several times the grace period.
	const objects, perObject = 4, 50
	s.sink.setDelay(200 * time.Millisecond)
	base := s.sink.count("sub")
	stream := s.led.len()
	for i := range objects {
		requireNoError(t, s.led.create(s.ctx, fmt.Sprintf("cm-%d", i), "queued at SIGTERM"))
	}
	for range perObject - 1 {
		for i := range objects {
			requireNoError(t, s.led.update(s.ctx, fmt.Sprintf("cm-%d", i), "queued at SIGTERM"))
		}
	}
	written := s.led.len() - stream
	s.waitDeliveries("sub", base, 10, "the slow sink receives 10 events", m1)
	atTerm := s.sink.count("sub") - base
	took := m1.terminate(t, shutdownGrace+30*time.Second)
	if limit := shutdownGrace + 2*time.Second; took > limit {
		t.Errorf("the manager took %s to exit after SIGTERM; want within its grace period %s (+2s)",
			took.Round(time.Millisecond), shutdownGrace)
	}
	if _, bySignal := m1.endedBySignal(); bySignal {
		t.Errorf("the manager did not handle SIGTERM: %s", m1.describeExit())
	}
	atExit := s.sink.count("sub") - base
	t.Logf("of %d changes, %d delivered at SIGTERM, %d when the manager had exited", written, atTerm, atExit)

	for i := range objects {
		requireNoError(t, s.led.update(s.ctx, fmt.Sprintf("cm-%d", i), "written while no manager ran"))
	}
	s.sink.setDelay(0)
	m2 := startManager(t, "manager-2", opts)
	s.awaitExpected(60*time.Second, []*manager{m2}, map[string]*expectation{"sub": s.expectAll()})
}
