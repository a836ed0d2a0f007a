package resilience

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timing of leader election in the tests: short, so a failover fits the package's budget.
const (
	leaseDuration = 4 * time.Second
	renewDeadline = 3 * time.Second
	retryPeriod   = 1 * time.Second
	// memberLeaseDuration and memberRenewDeadline time the member Leases of the scale-out
	// test: five managers and the API server share two cores, and a renewal late by the
	// renew deadline stops a replica.
	memberLeaseDuration = 8 * time.Second
	memberRenewDeadline = 6 * time.Second
	// shutdownGrace is what the graceful test gives the manager to drain.
	shutdownGrace = 3 * time.Second
	// checkpointInterval is how often the managers save checkpoints.
	checkpointInterval = time.Second
)

// managerOptions are the flags of one manager process.
type managerOptions struct {
	checkpointNamespace string
	leaderElect         bool
	// shutdownGrace, when set, is passed as --shutdown-grace.
	shutdownGrace time.Duration
	// replicaName, when set, runs the manager with --sharding=Leases under that name, its
	// member Lease timed like leader election in these tests.
	replicaName string
	// authorizationInterval, when set, is passed as --subscription-authorization-interval
	// (binaries before it was added reject the flag, so it is left out otherwise).
	authorizationInterval time.Duration
}

func (o managerOptions) args() []string {
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--checkpoint-namespace=" + o.checkpointNamespace,
		"--checkpoint-interval=" + checkpointInterval.String(),
		// The binary's default authorization (SubjectAccessReview) applies: each scenario
		// grants its subscriptions' ServiceAccount what they watch.
		// Two managers run side by side: no listeners besides the sink's clients.
		"--metrics-bind-address=0",
		"--health-probe-bind-address=0",
	}
	if o.leaderElect {
		args = append(args, "--leader-elect",
			"--leader-elect-lease-duration="+leaseDuration.String(),
			"--leader-elect-renew-deadline="+renewDeadline.String(),
			"--leader-elect-retry-period="+retryPeriod.String())
	}
	if o.replicaName != "" {
		args = append(args, "--sharding=Leases", "--replica-name="+o.replicaName,
			"--leader-elect-lease-duration="+memberLeaseDuration.String(),
			"--leader-elect-renew-deadline="+memberRenewDeadline.String(),
			"--leader-elect-retry-period="+retryPeriod.String())
	}
	if o.shutdownGrace > 0 {
		args = append(args, "--shutdown-grace="+o.shutdownGrace.String())
	}
	if o.authorizationInterval > 0 && managerHasFlag("subscription-authorization-interval") {
		args = append(args, "--subscription-authorization-interval="+o.authorizationInterval.String())
	}
	// RESILIENCE_MANAGER_ARGS adds flags to every manager, such as --zap-log-level=debug
	// when looking into a failure.
	return append(args, strings.Fields(os.Getenv("RESILIENCE_MANAGER_ARGS"))...)
}

var (
	helpOnce sync.Once
	helpText string
)

// managerHasFlag tells whether the manager binary knows --name, from its -help. A binary
// built before a flag was added (RESILIENCE_MANAGER_BIN) then runs with its own default,
// which startManager logs.
func managerHasFlag(name string) bool {
	helpOnce.Do(func() {
		out, _ := exec.Command(managerBin, "-help").CombinedOutput()
		helpText = string(out)
	})
	return strings.Contains(helpText, "-"+name+" ")
}

// manager is one manager process. Its stdout and stderr are kept line by line and written
// to the test log when the test fails.
type manager struct {
	name    string
	cmd     *exec.Cmd
	log     *lineLog
	started time.Time

	done     chan struct{} // closed when the process has exited
	exitErr  error
	exitedAt time.Time
}

// startManager starts the manager binary; it is killed at test end if still running, and
// its output goes to the test log if the test failed.
func startManager(t *testing.T, name string, opts managerOptions) *manager {
	t.Helper()
	m := &manager{name: name, log: &lineLog{}, done: make(chan struct{})}
	args := opts.args()
	if opts.authorizationInterval > 0 && !managerHasFlag("subscription-authorization-interval") {
		t.Logf("%s does not know --subscription-authorization-interval: it trusts authorization answers for "+
			"its own default interval instead of %s", managerBin, opts.authorizationInterval)
	}
	m.cmd = exec.Command(managerBin, args...)
	m.cmd.Stdout = m.log
	m.cmd.Stderr = m.log
	// Its own process group: a signal to the test does not reach it, and ours reach only it.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	m.started = time.Now()
	go func() {
		m.exitErr = m.cmd.Wait()
		m.exitedAt = time.Now()
		close(m.done)
	}()
	t.Logf("%s started (pid %d): %s %s", name, m.cmd.Process.Pid, "manager", strings.Join(args[1:], " "))
	t.Cleanup(func() {
		if m.running() {
			_ = m.cmd.Process.Kill()
			<-m.done
		}
		if t.Failed() {
			t.Logf("---- %s output (%s) ----\n%s", name, m.describeExit(), m.log.tail(400))
		}
	})
	return m
}

func (m *manager) running() bool {
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// alive is nil while the process runs, otherwise an error saying how it ended, with a hint
// when it rejected a flag of the contract.
func (m *manager) alive() error {
	if m.running() {
		return nil
	}
	msg := fmt.Sprintf("%s exited unexpectedly after %s: %s", m.name,
		m.exitedAt.Sub(m.started).Round(time.Millisecond), m.describeExit())
	if line := m.log.find("flag provided but not defined"); line != "" {
		msg += "\n  the engine does not implement the contract's flags yet: " + line
	}
	return errors.New(msg + "\n  last output:\n" + m.log.tail(30))
}

func (m *manager) describeExit() string {
	if m.running() {
		return "still running"
	}
	if sig, ok := m.endedBySignal(); ok {
		return "ended by signal: " + sig.String()
	}
	if exit, ok := errors.AsType[*exec.ExitError](m.exitErr); ok {
		return fmt.Sprintf("exit code %d", exit.ExitCode())
	}
	if m.exitErr != nil {
		return m.exitErr.Error()
	}
	return "exit code 0"
}

// endedBySignal is the signal that ended the process, if it did not handle one.
func (m *manager) endedBySignal() (syscall.Signal, bool) {
	if exit, ok := errors.AsType[*exec.ExitError](m.exitErr); ok {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return ws.Signal(), true
		}
	}
	return 0, false
}

// kill sends SIGKILL and waits for the process to be gone.
func (m *manager) kill(t *testing.T) {
	t.Helper()
	if err := m.alive(); err != nil {
		t.Fatalf("cannot kill %s: %v", m.name, err)
	}
	if err := m.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL %s: %v", m.name, err)
	}
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s still running 10s after SIGKILL", m.name)
	}
	t.Logf("%s killed (SIGKILL) after running %s", m.name, m.exitedAt.Sub(m.started).Round(time.Millisecond))
}

// terminate sends SIGTERM and returns how long the process took to exit, waiting at most
// limit before it kills the process and fails the test.
func (m *manager) terminate(t *testing.T, limit time.Duration) time.Duration {
	t.Helper()
	if err := m.alive(); err != nil {
		t.Fatalf("cannot terminate %s: %v", m.name, err)
	}
	sent := time.Now()
	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", m.name, err)
	}
	select {
	case <-m.done:
		took := m.exitedAt.Sub(sent)
		t.Logf("%s exited %s after SIGTERM (%s)", m.name, took.Round(time.Millisecond), m.describeExit())
		return took
	case <-time.After(limit):
		_ = m.cmd.Process.Kill()
		<-m.done
		t.Fatalf("%s did not exit within %s of SIGTERM; killed it", m.name, limit)
		return 0
	}
}

// lineLog is an io.Writer keeping complete lines, safe for concurrent writers.
type lineLog struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

// count is the number of complete lines so far.
func (l *lineLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

// linesFrom returns the lines from index i on.
func (l *lineLog) linesFrom(i int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i > len(l.lines) {
		return nil
	}
	return append([]string(nil), l.lines[i:]...)
}

// find returns the first line containing s, ignoring case, or "".
func (l *lineLog) find(s string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s = strings.ToLower(s)
	for _, line := range l.lines {
		if strings.Contains(strings.ToLower(line), s) {
			return line
		}
	}
	if strings.Contains(strings.ToLower(string(l.partial)), s) {
		return string(l.partial)
	}
	return ""
}

// tail returns the last n lines (and the unterminated rest) as one string.
func (l *lineLog) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := l.lines
	var b strings.Builder
	if len(lines) > n {
		fmt.Fprintf(&b, "... %d earlier lines omitted ...\n", len(lines)-n)
		lines = lines[len(lines)-n:]
	}
	for _, line := range lines {
		b.WriteString(line)
		b.WriteByte('\n')
	}
	if len(l.partial) > 0 {
		b.Write(l.partial)
		b.WriteByte('\n')
	}
	return b.String()
}
