package resilience

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dynamic-notifier/dynamic-notifier/internal/operator"
)

// inFlightDelivery is how long the sink takes to answer the delivery that is in flight when
// etcd freezes in TestShutdownBoundedWhenEtcdHangs: less than the shutdown grace, so the
// drain finishes it and the checkpoint then has something new to save.
const inFlightDelivery = 1500 * time.Millisecond

// TestShutdownBoundedWhenEtcdHangs: shutdown is bounded. etcd freezes (SIGSTOP), so the API
// server takes every request and answers none, and the manager is sent SIGTERM: once while
// it runs with a delivery in flight, once while it is still starting, its cache not synced.
// Each time it must exit within its shutdown grace plus the slack the binary documents
// (operator.ShutdownSlack), saying what it could not do; a manager started once etcd is back
// delivers everything, the change whose checkpoint could not be saved at least once.
func TestShutdownBoundedWhenEtcdHangs(t *testing.T) {
	s := newScenario(t, "etcdhang")
	s.subscribe("sub")
	opts := s.managerOptions()
	opts.shutdownGrace = shutdownGrace
	m1 := startManager(t, "manager-1", opts)
	s.waitReady(m1)
	s.probe(30*time.Second, m1)
	s.waitCheckpoint(m1)

	// A change whose delivery is in flight when etcd freezes: once delivered, its checkpoint
	// needs a save that cannot succeed.
	s.sink.setDelay(inFlightDelivery)
	arrived := s.sink.arrivals()
	requireNoError(t, s.led.create(s.ctx, "in-flight", "in flight when etcd froze"))
	s.eventually(30*time.Second, []*manager{m1}, "the delivery of the last change is in flight", func() error {
		if s.sink.arrivals() == arrived {
			return errors.New("no request at the sink yet")
		}
		return nil
	})
	thaw := freezeEtcd(t)
	terminateBounded(t, m1, "while running with a delivery in flight")
	thaw()

	s.sink.setDelay(0)
	m2 := startManager(t, "manager-2", opts)
	s.awaitExpected(60*time.Second, []*manager{m2}, map[string]*expectation{"sub": s.expectAll()})
	m2.terminate(t, 40*time.Second)

	// The manager starts with etcd frozen: its cache cannot sync, and SIGTERM comes then.
	thaw = freezeEtcd(t)
	m3 := startManager(t, "manager-3", opts)
	// Some binaries install their signal handler just after logging "Starting manager"; a
	// SIGTERM before it ends the process at once, which proves nothing. A second after that
	// line the manager is in its start, waiting for its cache.
	var starting time.Time
	s.eventually(30*time.Second, []*manager{m3}, "manager-3 has been starting for a second", func() error {
		if starting.IsZero() && m3.log.find("Starting manager") != "" {
			starting = time.Now()
		}
		if starting.IsZero() || time.Since(starting) < time.Second {
			return errors.New(`not a second since "Starting manager" in its log`)
		}
		return nil
	})
	terminateBounded(t, m3, "while starting, its cache not synced")
	thaw()
}

// terminateBounded sends m SIGTERM while etcd is frozen and checks that it exits within
// the shutdown grace plus the binary's slack (and 2s), and says what it could not do.
func terminateBounded(t *testing.T, m *manager, when string) {
	t.Helper()
	bound := shutdownGrace + operator.ShutdownSlack + 2*time.Second
	from := m.log.count()
	// Waits well past the bound before killing it, so a hang's length is measured.
	took := m.terminate(t, bound+time.Minute)
	if took > bound {
		t.Errorf("%s took %s to exit after SIGTERM %s, etcd frozen; want within %s (--shutdown-grace=%s, slack %s, +2s)",
			m.name, took.Round(time.Millisecond), when, bound, shutdownGrace, operator.ShutdownSlack)
	}
	if _, bySignal := m.endedBySignal(); bySignal {
		t.Errorf("%s did not handle SIGTERM %s: %s", m.name, when, m.describeExit())
	}
	var said string
	for _, line := range m.log.linesFrom(from) {
		if strings.Contains(line, "The last checkpoints could not be saved") ||
			strings.Contains(line, "Shutdown did not finish in time") {
			said = line
		}
	}
	if said == "" {
		t.Errorf("%s exited (SIGTERM %s, etcd frozen) without saying what it could not do: no \"The last checkpoints "+
			"could not be saved\" nor \"Shutdown did not finish in time\"; its last lines:\n%s", m.name, when, m.log.tail(12))
		return
	}
	t.Logf("%s said: %s", m.name, said)
}

// freezeEtcd stops the package's etcd with SIGSTOP and returns a function that resumes it
// (SIGCONT) and waits until the API server answers again; it also runs at test end, so
// later tests find etcd running whatever happened.
func freezeEtcd(t *testing.T) (thaw func()) {
	t.Helper()
	pid := etcdPID(t)
	var once sync.Once
	thaw = func() {
		once.Do(func() {
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("SIGCONT etcd (pid %d): %v", pid, err)
				return
			}
			start := time.Now()
			if err := waitAPIServer(60 * time.Second); err != nil {
				t.Errorf("the API server does not answer %s after etcd resumed: %v", time.Since(start).Round(time.Millisecond), err)
				return
			}
			t.Logf("etcd resumed; the API server answers again after %s", time.Since(start).Round(time.Millisecond))
		})
	}
	t.Cleanup(thaw)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP etcd (pid %d): %v", pid, err)
	}
	t.Logf("etcd (pid %d) frozen with SIGSTOP", pid)
	return thaw
}

// etcdPID finds the package's etcd: a child of this process named etcd, listening on the
// control plane's etcd address.
func etcdPID(t *testing.T) int {
	t.Helper()
	addr := env.ControlPlane.Etcd.URL.Host
	entries, err := os.ReadDir("/proc")
	requireNoError(t, err)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if filepath.Base(args[0]) != "etcd" || !strings.Contains(string(cmdline), addr) {
			continue
		}
		if parentPID(pid) == os.Getpid() {
			return pid
		}
	}
	t.Fatalf("no etcd process serving %s among the children of this test (pid %d)", addr, os.Getpid())
	return 0
}

// parentPID reads a process's parent from /proc/<pid>/stat; -1 when it cannot.
func parentPID(pid int) int {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// pid (comm) state ppid ...: comm may hold spaces, so split after its closing paren.
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
	fields := strings.Fields(rest)
	if len(fields) < 2 {
		return -1
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return -1
	}
	return ppid
}

// waitAPIServer waits until the API server answers a ConfigMap list (from etcd), or timeout.
func waitAPIServer(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		// A consistent list reads etcd: it answers only once etcd does.
		err := k8s.List(ctx, &corev1.ConfigMapList{}, client.InNamespace("default"), client.Limit(1))
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}
