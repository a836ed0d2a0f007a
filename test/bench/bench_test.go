package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary be the operator process of the scenarios that run one, as
// the bench binary is.
func TestMain(m *testing.M) {
	if spec := os.Getenv(operatorProcessEnv); spec != "" {
		os.Exit(operatorProcessMain(spec))
	}
	os.Exit(m.Run())
}

// TestQuickRun runs the harness at tiny scales so it keeps working as the engine changes.
// It checks that every row and valid JSON come out, never the figures: timings on a shared
// machine are not something a test can assert.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane: not with -short")
	}
	opts, err := parseFlags([]string{"-quick"})
	if err != nil {
		t.Fatal(err)
	}
	opts.Out = filepath.Join(t.TempDir(), "results.json")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	progress := io.Discard
	if testing.Verbose() {
		progress = os.Stderr
	}
	res, err := run(ctx, opts, progress)
	if err != nil {
		t.Fatalf("quick run: %v", err)
	}

	data, err := os.ReadFile(opts.Out)
	if err != nil {
		t.Fatal(err)
	}
	var got Results
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("results are not valid JSON: %v\n%s", err, data)
	}
	ids := make([]string, len(got.Rows))
	for i, row := range got.Rows {
		ids[i] = row.ID
		if !slices.Contains([]string{met, missed, noGoal}, row.Result) {
			t.Errorf("row %s: result %q", row.ID, row.Result)
		}
		if (row.Target == "") != (row.Result == noGoal) {
			t.Errorf("row %s: target %q with result %q", row.ID, row.Target, row.Result)
		}
	}
	if !slices.Equal(ids, wantRows(opts)) {
		t.Errorf("rows\n got %v\nwant %v", ids, wantRows(opts))
	}
	for _, sc := range scenarios {
		name := sc.name
		if _, ok := got.Details[name]; !ok {
			t.Errorf("no raw figures for %s", name)
		}
	}

	table := res.Markdown()
	lines := 0
	for line := range strings.SplitSeq(table, "\n") {
		if strings.HasPrefix(line, "| ") {
			lines++
		}
	}
	if want := len(got.Rows) + 1; lines != want { // the header, then a line per row
		t.Errorf("Markdown has %d table lines, want %d:\n%s", lines, want, table)
	}
}

// wantRows are the row IDs a run with opts reports, in order.
func wantRows(opts options) []string {
	ids := make([]string, 0, 3*len(opts.ShareSubs)+6*len(opts.LatencySubs)+25+6*len(opts.ReplicaCounts)+
		3*len(opts.MemoryObjects))
	for _, n := range opts.ShareSubs {
		for _, fig := range []string{"watches", "heap", "rss"} {
			ids = append(ids, fmt.Sprintf("sharing/%d/%s", n, fig))
		}
	}
	for _, n := range opts.LatencySubs {
		for _, fig := range []string{"p50", "p95", "p99"} {
			ids = append(ids, fmt.Sprintf("latency/%d/%s", n, fig))
		}
		if n > 1 {
			ids = append(ids, fmt.Sprintf("latency/%d/status-writes", n), fmt.Sprintf("latency/%d/p50-vs-plain", n),
				fmt.Sprintf("latency/%d/p99-vs-plain", n), fmt.Sprintf("latency/%d/plain-p50-vs-raw", n),
				fmt.Sprintf("latency/%d/cpu-per-delivery", n))
		}
	}
	ids = append(ids, "costlyneighbour/p50", "costlyneighbour/p99", "costlyneighbour/over-budget",
		"costlyneighbour/under-budget/p50", "costlyneighbour/under-budget/p99")
	ids = append(ids, "throughput/rate", "throughput/fanout/rate", "throughput/fanout/time",
		"throughput/fanout/time-vs-plain", "throughput/fanout/plain-vs-raw", "throughput/fanout/cpu-per-delivery",
		"throughput/fanout-batched/rate", "throughput/fanout-batched/time", "drain/binary", "drain/batched",
		"flapping/plain/out", "flapping/plain/final", "flapping/coalesce/out", "flapping/coalesce/final",
		"flapping/ratelimit/out", "flapping/ratelimit/final",
		"convergence/ready", "convergence/ready-vs-least", "convergence/requests", "convergence/watches",
		"convergence/idle-status-writes", "convergence/teardown", "convergence/teardown-after-api",
		"crd/ready",
		"budgetflood/healthy", "budgetflood/dropped", "budgetflood/accounted", "budgetflood/rss-peak",
		"budgetflood/rss-peak-vs-limit", "budgetflood/rss-settled")
	for _, n := range opts.ReplicaCounts {
		for _, fig := range []string{"streams", "spread", "rss-mean", "rss-max", "rate", "backlog"} {
			ids = append(ids, fmt.Sprintf("replicas/%d/%s", n, fig))
		}
	}
	for _, n := range opts.MemoryObjects {
		ids = append(ids, fmt.Sprintf("memory/%d/rss-peak", n), fmt.Sprintf("memory/%d/rss-settled", n),
			fmt.Sprintf("memory/%d/heap", n))
	}
	return ids
}
