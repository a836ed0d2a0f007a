package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"k8s.io/client-go/rest"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/dynamic-notifier/dynamic-notifier/internal/operator"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

// operatorProcessEnv, set in the environment of this program (or its test binary), makes it
// run the operator alone instead of the benchmarks: a process whose resident memory is the
// operator's, not the control plane client's, the sink's and the baselines' too. Its value
// is a processSpec in JSON.
const operatorProcessEnv = "BENCH_OPERATOR_PROCESS"

// processSpec is what the operator process is told: where the API server is, and the
// operator's options that differ from operatorOptions.
type processSpec struct {
	Host                 string               `json:"host"`
	TLS                  rest.TLSClientConfig `json:"tls"`
	BearerToken          string               `json:"bearerToken,omitempty"`
	QPS                  float32              `json:"qps"`
	Burst                int                  `json:"burst"`
	CheckpointNamespace  string               `json:"checkpointNamespace"`
	DeliveryMemoryBudget int64                `json:"deliveryMemoryBudget"`
	// NaiveNamespace, when set, makes the process the naive baseline instead: one dynamic
	// informer on the namespace's ConfigMaps, started by POST /start (see naiveProcessMain).
	NaiveNamespace string `json:"naiveNamespace,omitempty"`
	// Sharding, when set, runs the operator as one of several replicas named ReplicaName,
	// its member Lease timed by the Member fields (the replicas scenario).
	Sharding            operator.Sharding `json:"sharding,omitempty"`
	ReplicaName         string            `json:"replicaName,omitempty"`
	MemberLeaseDuration time.Duration     `json:"memberLeaseDuration,omitempty"`
	MemberRenewDeadline time.Duration     `json:"memberRenewDeadline,omitempty"`
	MemberRetryPeriod   time.Duration     `json:"memberRetryPeriod,omitempty"`
}

// processStats is what the operator process reports on GET /stats.
type processStats struct {
	BudgetLimit int64 `json:"budgetLimit"`
	BudgetUsed  int64 `json:"budgetUsed"`
	// BudgetPeak is the most BudgetUsed was, sampled every millisecond since the start or
	// the last POST /reset.
	BudgetPeak int64 `json:"budgetPeak"`
	// HeapObjects is the heap's live and not yet swept objects (runtime/metrics), now and
	// at most, sampled every 10 ms.
	HeapObjects     uint64 `json:"heapObjects"`
	HeapObjectsPeak uint64 `json:"heapObjectsPeak"`
	// Counters are the operator's dynamicnotifier_* counters, keyed "metric namespace/subscription".
	Counters map[string]float64 `json:"counters"`
}

// counter is one of the operator's counters for one subscription.
func (s processStats) counter(metric, namespace, name string) float64 {
	return s.Counters[metric+" "+namespace+"/"+name]
}

// operatorProcessMain is main of the operator process: it starts the operator, serves its
// figures on loopback, prints the address on stdout and runs until stdin closes.
func operatorProcessMain(specJSON string) int {
	quietLogs()
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "operator process:", err)
		return 1
	}
	var spec processSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return fail(err)
	}
	cfg := &rest.Config{Host: spec.Host, TLSClientConfig: spec.TLS, BearerToken: spec.BearerToken,
		QPS: spec.QPS, Burst: spec.Burst}
	// As cmd/main.go does, for the naive baseline too: the same runtime limit.
	operator.UseContainerMemoryLimit()
	if spec.NaiveNamespace != "" {
		return naiveProcessMain(cfg, spec.NaiveNamespace)
	}
	opts := operatorOptions(spec.CheckpointNamespace)
	opts.DeliveryMemoryBudget = spec.DeliveryMemoryBudget
	opts.Sharding, opts.ReplicaName = spec.Sharding, spec.ReplicaName
	opts.MemberLeaseDuration, opts.MemberRenewDeadline, opts.MemberRetryPeriod = spec.MemberLeaseDuration,
		spec.MemberRenewDeadline, spec.MemberRetryPeriod
	r, err := launchOperator(cfg, opts)
	if err != nil {
		return fail(err)
	}
	if r.Budget == nil {
		return fail(errors.New("no delivery memory budget"))
	}

	var budgetPeak, heapPeak atomic.Int64
	heapObjects := func() uint64 {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	raise := func(peak *atomic.Int64, v int64) {
		for old := peak.Load(); v > old && !peak.CompareAndSwap(old, v); old = peak.Load() {
		}
	}
	go func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			<-tick.C
			raise(&budgetPeak, r.Budget.Used())
			if i%10 == 0 {
				raise(&heapPeak, int64(heapObjects()))
			}
		}
	}()

	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		s := processStats{BudgetLimit: r.Budget.Limit(), BudgetUsed: r.Budget.Used(), BudgetPeak: budgetPeak.Load(),
			HeapObjects: heapObjects(), HeapObjectsPeak: uint64(heapPeak.Load()), Counters: map[string]float64{}}
		families, err := ctrlmetrics.Registry.Gather()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		for _, f := range families {
			if !strings.HasPrefix(f.GetName(), "dynamicnotifier_") || f.GetMetric() == nil {
				continue
			}
			for _, m := range f.GetMetric() {
				if m.GetCounter() == nil {
					continue
				}
				var ns, name string
				for _, l := range m.GetLabel() {
					switch l.GetName() {
					case "namespace":
						ns = l.GetValue()
					case "subscription":
						name = l.GetValue()
					}
				}
				s.Counters[f.GetName()+" "+ns+"/"+name] += m.GetCounter().GetValue()
			}
		}
		reply(w, s)
	})
	// A reading after forced collections, as the in-process scenarios take theirs.
	mux.HandleFunc("GET /heap", func(w http.ResponseWriter, _ *http.Request) { reply(w, readHeap()) })
	mux.HandleFunc("GET /heap/profile", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		_ = pprof.Lookup("heap").WriteTo(w, 0)
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, _ *http.Request) {
		budgetPeak.Store(r.Budget.Used())
		heapPeak.Store(int64(heapObjects()))
		w.WriteHeader(http.StatusNoContent)
	})
	return serveProcess(mux, r.done, fail)
}

// serveProcess serves mux on loopback, prints its address on stdout, and returns when stdin
// closes (0) or stopped reports an error.
func serveProcess(mux *http.ServeMux, stopped <-chan error, fail func(error) int) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Println(ln.Addr().String())

	// The benchmark ends the process by closing stdin (or by dying, which closes it too).
	stdinClosed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	select {
	case <-stdinClosed:
		_ = srv.Close()
		return 0 // no graceful stop: a sink that never answers would hold the drain
	case err := <-stopped:
		return fail(fmt.Errorf("the manager stopped: %w", err))
	}
}

// operatorProcess is the benchmark's handle on a running operator process.
type operatorProcess struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	url    string
	log    *testenv.Buffer
	client *http.Client
	exited chan struct{}
}

// startOperatorProcess runs the operator in a process of its own, with a delivery memory
// budget, as in a container limited to containerLimit bytes, on the harness's control
// plane; checkpoints go to checkpointNS.
func (h *harness) startOperatorProcess(ctx context.Context, checkpointNS string,
	budget, containerLimit int64) (*operatorProcess, error) {
	return h.startProcess(ctx, processSpec{CheckpointNamespace: checkpointNS, DeliveryMemoryBudget: budget},
		containerLimit)
}

// startProcess runs this program as the process spec describes (its connection to the
// harness's control plane filled in), told its container's memory limit as the shipped
// Deployment tells the manager: the process sets GOMEMLIMIT from it, as the binary does.
func (h *harness) startProcess(ctx context.Context, s processSpec, containerLimit int64) (*operatorProcess, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	s.Host, s.TLS, s.BearerToken, s.QPS, s.Burst = h.opCfg.Host, h.opCfg.TLSClientConfig, h.opCfg.BearerToken,
		h.opCfg.QPS, h.opCfg.Burst
	spec, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	env := []string{operatorProcessEnv + "=" + string(spec),
		operator.ContainerMemoryLimitEnv + "=" + strconv.FormatInt(containerLimit, 10)}
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "GOMEMLIMIT", "GOGC", operator.ContainerMemoryLimitEnv, operatorProcessEnv:
		default:
			env = append(env, kv)
		}
	}
	p := &operatorProcess{cmd: exec.Command(exe), log: &testenv.Buffer{}, exited: make(chan struct{}),
		client: &http.Client{Timeout: time.Minute}}
	p.cmd.Env = env
	p.cmd.Stderr = p.log
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	addr := make(chan string, 1)
	read := make(chan struct{})
	go func() {
		defer close(read)
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		addr <- strings.TrimSpace(line)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		<-read // Wait closes stdout: only once it has been read to the end
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	select {
	case a := <-addr:
		if a == "" {
			p.stop()
			return nil, fmt.Errorf("the operator process did not start: %s", p.log.String())
		}
		p.url = "http://" + a
	case <-time.After(time.Minute):
		p.stop()
		return nil, errors.New("the operator process did not start within a minute")
	case <-ctx.Done():
		p.stop()
		return nil, ctx.Err()
	}
	return p, nil
}

func (p *operatorProcess) get(ctx context.Context, path string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+path, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("operator process %s: %w", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("operator process %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(into)
}

func (p *operatorProcess) stats(ctx context.Context) (processStats, error) {
	var s processStats
	return s, p.get(ctx, "/stats", &s)
}

// heap is the process's heap and RSS after forced collections.
func (p *operatorProcess) heap(ctx context.Context) (heap, error) {
	var hp heap
	return hp, p.get(ctx, "/heap", &hp)
}

// heapProfile, with -profile, writes the process's heap profile to <name>.heap.pb.gz.
func (p *operatorProcess) heapProfile(ctx context.Context, h *harness, name string) {
	if h.opts.ProfileDir == "" {
		return
	}
	err := os.MkdirAll(h.opts.ProfileDir, 0o755)
	var req *http.Request
	if err == nil {
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/heap/profile", nil)
	}
	var resp *http.Response
	if err == nil {
		resp, err = p.client.Do(req)
	}
	if err == nil {
		var data []byte
		data, err = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err == nil {
			err = os.WriteFile(filepath.Join(h.opts.ProfileDir, name+".heap.pb.gz"), data, 0o644)
		}
	}
	if err != nil {
		h.logf("heap profile %s: %v", name, err)
	}
}

// resetPeaks starts the peaks over: the kernel's peak RSS (VmHWM, through clear_refs; false
// when the kernel does not allow it) and the process's sampled ones.
func (p *operatorProcess) resetPeaks(ctx context.Context) (hwmReset bool, err error) {
	hwmReset = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.cmd.Process.Pid), []byte("5"), 0) == nil
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url+"/reset", nil)
	if err != nil {
		return hwmReset, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return hwmReset, err
	}
	_ = resp.Body.Close()
	return hwmReset, nil
}

// rss is the process's resident set now and at most (VmRSS, VmHWM), in bytes.
func (p *operatorProcess) rss() (now, peak uint64) {
	return procBytes(p.statusPath(), "VmRSS"), procBytes(p.statusPath(), "VmHWM")
}

// anonRSS is the process's resident anonymous memory (RssAnon), in bytes: what a container
// cannot give back under its memory limit, where the pages of the binary (RssFile) can be
// dropped and read again.
func (p *operatorProcess) anonRSS() uint64 { return procBytes(p.statusPath(), "RssAnon") }

func (p *operatorProcess) statusPath() string {
	return fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid)
}

// stop ends the process: stdin closed, then killed if it has not exited within 5 s.
func (p *operatorProcess) stop() {
	_ = p.stdin.Close()
	select {
	case <-p.exited:
		return
	case <-time.After(5 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}
