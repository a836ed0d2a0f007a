package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

var (
	configMaps = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	secrets    = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
)

// harness holds what every scenario uses: clients on the control plane and the sink.
type harness struct {
	opts     options
	progress io.Writer
	start    time.Time

	// cfg is the admin config; opCfg the operator's (rate limit as the binary has it).
	cfg, opCfg *rest.Config
	// k8s creates and lists WatchSubscriptions; cs writes objects, unthrottled so the API
	// server, not the client, sets the pace; dyn serves the baselines.
	k8s client.Client
	cs  kubernetes.Interface
	dyn dynamic.Interface
	// admin reads the API server's /metrics through one long-lived connection.
	admin kubernetes.Interface
	sink  *sinkServer
	// operatorNS is the operator's own namespace, where it keeps its checkpoints.
	operatorNS string
	// profileWindows, with -profile, has the scenario running profile each timed window
	// on its own instead of the whole scenario: ours and the plain fan-out apart.
	profileWindows bool
}

func newHarness(cfg *rest.Config, opts options, progress io.Writer) (*harness, error) {
	h := &harness{opts: opts, progress: progress, start: time.Now(), cfg: cfg}
	h.opCfg = rest.CopyConfig(cfg)
	h.opCfg.QPS, h.opCfg.Burst = opts.OperatorQPS, 0
	if opts.OperatorQPS > 0 {
		h.opCfg.Burst = int(2 * opts.OperatorQPS)
	}
	writerCfg := rest.CopyConfig(cfg)
	writerCfg.QPS = -1
	scheme := apiruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := notifyv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	var err error
	if h.k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return nil, err
	}
	if h.cs, err = kubernetes.NewForConfig(writerCfg); err != nil {
		return nil, err
	}
	if h.admin, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	// The baselines get the operator's rate limit, so neither side is favoured by it.
	if h.dyn, err = dynamic.NewForConfig(h.opCfg); err != nil {
		return nil, err
	}
	if err := h.createWatchAllRole(context.Background()); err != nil {
		return nil, err
	}
	if h.operatorNS, err = h.namespace(context.Background(), "dynamic-notifier-system"); err != nil {
		return nil, err
	}
	if h.sink, err = startSink(); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *harness) close() { h.sink.close() }

func (h *harness) logf(format string, args ...any) {
	_, _ = fmt.Fprintf(h.progress, "%7.1fs  %s\n", time.Since(h.start).Seconds(), fmt.Sprintf(format, args...))
}

// namespace creates a fresh namespace, where the default ServiceAccount, which the
// subscriptions use, may list and watch everything: the operator checks that as the binary
// does. envtest has no namespace controller, so scenarios delete what they created in it
// rather than the namespace itself.
func (h *harness) namespace(ctx context.Context, prefix string) (string, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: prefix + "-" + rand.String(5)}}
	if err := h.k8s.Create(ctx, ns); err != nil {
		return "", fmt.Errorf("namespace: %w", err)
	}
	if err := h.k8s.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "default-watch-all"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: watchAllRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns.Name, Name: "default"}},
	}); err != nil {
		return "", fmt.Errorf("namespace %s: role binding: %w", ns.Name, err)
	}
	return ns.Name, nil
}

// watchAllRole may list and watch every resource; the harness binds it in its namespaces.
const watchAllRole = "dynamic-notifier-bench-watch-all"

func (h *harness) createWatchAllRole(ctx context.Context) error {
	err := h.k8s.Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: watchAllRole},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"},
			Verbs: []string{"list", "watch"}}},
	})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("cluster role %s: %w", watchAllRole, err)
	}
	return nil
}

// deleteConfigMaps removes a scenario's ConfigMaps, so later scenarios run against an API
// server and etcd of the same size.
func (h *harness) deleteConfigMaps(ctx context.Context, ns string) error {
	return h.cs.CoreV1().ConfigMaps(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
}

// heap is the live heap after two forced collections and returning freed memory to the OS,
// so a delta between two readings is what stayed reachable in between. RSS is the process's
// resident set read at the same moment: it also holds what the Go runtime keeps for itself
// and pages the kernel has not taken back yet, so it is noisier than the heap.
type heap struct {
	HeapInuse  uint64 `json:"heapInuse"`
	StackInuse uint64 `json:"stackInuse"`
	RSS        uint64 `json:"rss"`
	Goroutines int    `json:"goroutines"`
}

func readHeap() heap {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return heap{HeapInuse: m.HeapInuse, StackInuse: m.StackInuse, RSS: readRSS(), Goroutines: runtime.NumGoroutine()}
}

// readRSS is VmRSS of /proc/self/status in bytes; 0 where there is none.
func readRSS() uint64 { return procBytes("/proc/self/status", "VmRSS") }

// settledHeap lets in-flight work (status writes, closing connections) finish and returns
// the smallest of a few readings: garbage can only inflate a reading. With -profile, a heap
// profile named after the reading is written too.
func (h *harness) settledHeap(ctx context.Context, name string) heap {
	defer h.heapProfile(name)
	sleep(ctx, h.opts.Settle)
	best := readHeap()
	for range h.opts.HeapReadings - 1 {
		sleep(ctx, 200*time.Millisecond)
		if hp := readHeap(); hp.HeapInuse < best.HeapInuse {
			best = hp
		}
	}
	return best
}

// cpuProfile, with -profile, profiles the CPU of the whole process (operator, baselines,
// harness) until the returned function is called.
func (h *harness) cpuProfile(name string) (stop func()) {
	if h.opts.ProfileDir == "" {
		return func() {}
	}
	err := os.MkdirAll(h.opts.ProfileDir, 0o755)
	var f *os.File
	if err == nil {
		f, err = os.Create(filepath.Join(h.opts.ProfileDir, name+".cpu.pb.gz"))
	}
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			_ = f.Close()
		}
	}
	if err != nil {
		h.logf("cpu profile %s: %v", name, err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			h.logf("cpu profile %s: %v", name, err)
		}
	}
}

// windowProfile is cpuProfile for a timed window of a scenario that profiles its windows.
func (h *harness) windowProfile(name string) (stop func()) {
	if !h.profileWindows {
		return func() {}
	}
	return h.cpuProfile(name)
}

// apiServerProfile, with -profile, has the API server profile its own CPU for the next
// seconds (its /debug/pprof endpoint) into <name>.apiserver.cpu.pb.gz; wait returns when
// the file is written.
func (h *harness) apiServerProfile(ctx context.Context, name string, seconds int) (wait func()) {
	if h.opts.ProfileDir == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		raw, err := h.admin.Discovery().RESTClient().Get().AbsPath("/debug/pprof/profile").
			Param("seconds", strconv.Itoa(seconds)).DoRaw(ctx)
		if err == nil {
			if err = os.MkdirAll(h.opts.ProfileDir, 0o755); err == nil {
				err = os.WriteFile(filepath.Join(h.opts.ProfileDir, name+".apiserver.cpu.pb.gz"), raw, 0o644)
			}
		}
		if err != nil {
			h.logf("API server profile %s: %v", name, err)
		}
	}()
	return func() { <-done }
}

func (h *harness) heapProfile(name string) {
	if h.opts.ProfileDir == "" {
		return
	}
	err := os.MkdirAll(h.opts.ProfileDir, 0o755)
	if err == nil {
		var f *os.File
		if f, err = os.Create(filepath.Join(h.opts.ProfileDir, name+".heap.pb.gz")); err == nil {
			err = errors.Join(pprof.Lookup("heap").WriteTo(f, 0), f.Close())
		}
	}
	if err != nil {
		h.logf("heap profile %s: %v", name, err)
	}
}

func heapDelta(before, after heap) int64 { return int64(after.HeapInuse) - int64(before.HeapInuse) }

func rssDelta(before, after heap) int64 { return int64(after.RSS) - int64(before.RSS) }

// watches counts the WATCH requests the API server holds open on the resources, in any
// scope (one namespace or all of them), from its own apiserver_longrunning_requests gauge.
// (apiserver_registered_watchers, which older API servers had, is gone from 1.37.) The API
// server keeps watches of its own on some resources, so callers compare against a count
// taken before.
func (h *harness) watches(ctx context.Context, gvrs ...schema.GroupVersionResource) (int, error) {
	matches := make([]map[string]string, len(gvrs))
	for i, gvr := range gvrs {
		matches[i] = map[string]string{labelVerb: "WATCH", "group": gvr.Group, labelResource: gvr.Resource}
	}
	n, err := h.apiMetric(ctx, "apiserver_longrunning_requests", matches...)
	return int(n), err
}

// Labels of the API server's metrics.
const (
	labelResource    = "resource"
	labelSubresource = "subresource"
	labelVerb        = "verb"
	// resourceSubscriptions is our resource as the API server's metrics name it.
	resourceSubscriptions = "watchsubscriptions"
	// subresourceStatus is the subresource of status writes.
	subresourceStatus = "status"
)

// apiMetric sums the API server's own metric name over the series whose labels include
// every pair of one of matches.
func (h *harness) apiMetric(ctx context.Context, name string, matches ...map[string]string) (float64, error) {
	has := func(series string, match map[string]string) bool {
		for k, v := range match {
			if labelValue(series, k) != v {
				return false
			}
		}
		return true
	}
	total := 0.0
	err := h.scanAPIMetric(ctx, name, func(series string, value float64) {
		if slices.ContainsFunc(matches, func(m map[string]string) bool { return has(series, m) }) {
			total += value
		}
	})
	return total, err
}

// scanAPIMetric calls each with every series of the API server's metric name: its name and
// labels as exposed, and its value.
func (h *harness) scanAPIMetric(ctx context.Context, name string, each func(series string, value float64)) error {
	raw, err := h.admin.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("reading the API server's metrics: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		space := strings.LastIndex(line, " ")
		n, err := strconv.ParseFloat(line[space+1:], 64)
		if err != nil {
			return err
		}
		each(line[:space], n)
	}
	return sc.Err()
}

// apiRequests counts the requests on resources the API server has answered, watches
// aside, by verb and resource ("PATCH watchsubscriptions/status").
func (h *harness) apiRequests(ctx context.Context) (map[string]float64, error) {
	counts := map[string]float64{}
	err := h.scanAPIMetric(ctx, "apiserver_request_total", func(series string, value float64) {
		verb, resource := labelValue(series, labelVerb), labelValue(series, labelResource)
		if resource == "" || verb == "WATCH" {
			return
		}
		if sub := labelValue(series, labelSubresource); sub != "" {
			resource += "/" + sub
		}
		counts[verb+" "+resource] += value
	})
	return counts, err
}

// labelValue is the value of label in a series as the API server exposes it, "" without it.
func labelValue(series, label string) string {
	for _, sep := range []string{"{", ","} {
		if i := strings.Index(series, sep+label+`="`); i >= 0 {
			value := series[i+len(sep)+len(label)+2:]
			return value[:strings.IndexByte(value, '"')]
		}
	}
	return ""
}

// waitWatches waits until the API server holds want watches on the resources, and returns
// the last count seen when it does not within timeout (a figure to report, not an error).
func (h *harness) waitWatches(ctx context.Context, want int, timeout time.Duration,
	gvrs ...schema.GroupVersionResource) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		n, err := h.watches(ctx, gvrs...)
		if err != nil || n == want || time.Now().After(deadline) {
			return n, err
		}
		sleep(ctx, 100*time.Millisecond)
	}
}

// poll calls cond every interval until it is true, fails, or timeout passes.
func poll(ctx context.Context, interval, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		sleep(ctx, interval)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
