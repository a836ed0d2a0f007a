// Command bench measures the operator end to end against a local control plane and reports
// every figure next to a baseline measured in the same run: a plain client-go watch (raw)
// or one dynamic informer factory per subscription (naive). `make bench` runs it; `-quick`
// is a small smoke run. See BENCHMARKS.md for the scenarios and the latest figures.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"go.uber.org/zap/zapcore"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

func main() {
	if spec := os.Getenv(operatorProcessEnv); spec != "" {
		os.Exit(operatorProcessMain(spec)) // started by the budgetflood, replicas and memory scenarios
	}
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if opts.ProfileDir != "" && (opts.selected("sharing") || opts.selected("memory")) {
		// Finer sampling than the default 512 KiB, so small retained structures show up in
		// the heap readings; it slows allocation and fills CPU profiles with the sampling's
		// own stack walks, so only the scenarios that read the heap get it.
		runtime.MemProfileRate = 4096
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, opts, os.Stderr)
	if res != nil {
		table := res.Markdown()
		fmt.Print(table)
		if opts.Markdown != "" {
			if werr := os.WriteFile(opts.Markdown, []byte(table), 0o644); werr != nil {
				err = errors.Join(err, werr)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "raw figures:", opts.Out)
}

// run starts a control plane, runs the selected scenarios and writes the JSON results.
// Progress goes to progress. Results gathered before an error are returned with it.
func run(ctx context.Context, opts options, progress io.Writer) (res *Results, err error) {
	quietLogs()
	started := time.Now()
	env, cfg, err := testenv.Start()
	if err != nil {
		return nil, err
	}
	defer func() {
		if stopErr := env.Stop(); stopErr != nil && err == nil {
			err = fmt.Errorf("stopping the control plane: %w", stopErr)
		}
	}()
	h, err := newHarness(cfg, opts, progress)
	if err != nil {
		return nil, err
	}
	defer h.close()

	res = newResults(opts, started)
	for _, sc := range scenarios {
		if !opts.selected(sc.name) {
			continue
		}
		h.logf("== %s", sc.name)
		t := time.Now()
		stopProfile := func() {}
		if h.profileWindows = sc.windows; !h.profileWindows {
			stopProfile = h.cpuProfile(sc.name)
		}
		rows, details, scErr := sc.run(ctx, h)
		stopProfile()
		res.add(sc.name, rows, details)
		if scErr != nil {
			return res, fmt.Errorf("%s: %w", sc.name, scErr)
		}
		h.logf("== %s done in %s", sc.name, time.Since(t).Round(time.Millisecond))
	}
	res.Duration = time.Since(started).Round(time.Second).String()
	res.Machine.LoadEnd = loadAverage()
	return res, res.write(opts.Out)
}

// scenario is one measured situation; it returns its table rows and its raw figures.
type scenario struct {
	name string
	run  func(ctx context.Context, h *harness) ([]Row, any, error)
	// windows: with -profile, the scenario profiles each of its timed windows rather than
	// being profiled whole (see harness.windowProfile).
	windows bool
}

// scenarios in the order they run. Memory comes last: it leaves its objects (up to
// 100,000, a minute to delete) to the control plane, which is stopped after it.
var scenarios = []scenario{
	{"sharing", runSharing, false},
	{"latency", runLatency, true},
	{"costlyneighbour", runCostlyNeighbour, false},
	{"throughput", runThroughput, true},
	{"drain", runDrain, false},
	{"flapping", runFlapping, false},
	{"convergence", runConvergence, false},
	{"crd", runCRD, false},
	{"budgetflood", runBudgetFlood, false},
	{"replicas", runReplicas, false},
	{"memory", runMemory, false},
}

// quietLogs keeps the operator's and client-go's logs to errors, so the report stays
// readable and logging costs nothing measurable.
func quietLogs() {
	level := zapcore.ErrorLevel
	if os.Getenv("BENCH_LOG") != "" {
		level = zapcore.Level(-2)
	}
	logger := zap.New(zap.WriteTo(os.Stderr), zap.Level(level))
	ctrl.SetLogger(logger)
	klog.SetLogger(logger)
}
