package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Result of a row against its target.
const (
	met    = "met"
	missed = "missed"
	noGoal = "-"
)

// Row is one line of the table: a figure for the operator next to the same figure for a
// baseline measured in the same run.
type Row struct {
	// ID is stable across runs, e.g. "latency/100/p99", for tools comparing results.
	ID       string  `json:"id"`
	Scenario string  `json:"scenario"`
	Figure   string  `json:"figure"`
	Unit     string  `json:"unit"`
	Ours     float64 `json:"ours"`
	Baseline float64 `json:"baseline"`
	// BaselineName says which baseline: raw, naive, or what else was measured.
	BaselineName string `json:"baselineName"`
	// Ratio is Ours/Baseline; 0 when either is negative or the baseline is 0 (a delta
	// of RSS can come out negative: it has no meaningful ratio).
	Ratio  float64 `json:"ratio"`
	Target string  `json:"target,omitempty"`
	Result string  `json:"result"`
	Note   string  `json:"note,omitempty"`
}

func newRow(id, scenarioLabel, figure, unit string, ours, baseline float64, baselineName string) Row {
	r := Row{ID: id, Scenario: scenarioLabel, Figure: figure, Unit: unit, Ours: ours, Baseline: baseline,
		BaselineName: baselineName, Result: noGoal}
	if r.hasRatio() {
		r.Ratio = ours / baseline
	}
	return r
}

func (r Row) hasRatio() bool { return r.Baseline > 0 && r.Ours >= 0 }

// goal sets the row's target and whether it was met.
func (r Row) goal(target string, ok bool) Row {
	r.Target = target
	r.Result = missed
	if ok {
		r.Result = met
	}
	return r
}

// note adds a remark to the row's result.
func (r Row) note(format string, args ...any) Row {
	if r.Note != "" {
		r.Note += "; "
	}
	r.Note += fmt.Sprintf(format, args...)
	return r
}

// Results is everything a run measured; written as JSON, printed as Markdown.
type Results struct {
	Started  time.Time      `json:"started"`
	Duration string         `json:"duration"`
	Machine  machine        `json:"machine"`
	Options  options        `json:"options"`
	Rows     []Row          `json:"rows"`
	Details  map[string]any `json:"details"`
}

type machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpuModel"`
	Memory    string `json:"memory"`
	GoVersion string `json:"goVersion"`
	OS        string `json:"os"`
	// Load averages (1, 5, 15 min) when the run started and ended: the machine may be
	// shared, and figures taken under load are slower across the board.
	LoadStart string `json:"loadStart"`
	LoadEnd   string `json:"loadEnd"`
}

func newResults(opts options, started time.Time) *Results {
	return &Results{Started: started.UTC().Truncate(time.Second), Options: opts, Details: map[string]any{},
		Machine: machine{CPUs: runtime.NumCPU(), CPUModel: procField("/proc/cpuinfo", "model name"),
			Memory: procField("/proc/meminfo", "MemTotal"), GoVersion: runtime.Version(),
			OS: runtime.GOOS + "/" + runtime.GOARCH, LoadStart: loadAverage()}}
}

func (r *Results) add(name string, rows []Row, details any) {
	r.Rows = append(r.Rows, rows...)
	if details != nil {
		r.Details[name] = details
	}
}

// write stores the results as JSON at path, creating its directory.
func (r *Results) write(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// Markdown renders the table, then the machine it ran on.
func (r *Results) Markdown() string {
	var b strings.Builder
	b.WriteString("| Scenario | Figure | Ours | Baseline | Ours / baseline | Target | Result |\n")
	b.WriteString("|---|---|---:|---:|---:|---|---|\n")
	for _, row := range r.Rows {
		ratio := "-"
		if row.hasRatio() {
			ratio = fmt.Sprintf("%.2f", row.Ratio)
		}
		result := row.Result
		if result == missed {
			result = "**missed**"
		}
		if row.Note != "" {
			result += " (" + row.Note + ")"
		}
		target := row.Target
		if target == "" {
			target = "-"
		}
		baseline := format(row.Baseline, row.Unit) + " " + row.BaselineName
		if row.BaselineName == "-" {
			baseline = "-"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", row.Scenario, row.Figure,
			format(row.Ours, row.Unit), baseline, ratio, target, result)
	}
	m := r.Machine
	fmt.Fprintf(&b, "\n%d CPUs (%s), %s, %s %s; started %s, took %s; load average %s at the start, %s at the end.\n",
		m.CPUs, m.CPUModel, m.Memory, m.GoVersion, m.OS, r.Started.Format(time.RFC3339), r.Duration, m.LoadStart, m.LoadEnd)
	return b.String()
}

// format prints a value in its unit with three significant digits or so.
func format(v float64, unit string) string {
	switch unit {
	case "ms":
		return trim(v) + " ms"
	case "s":
		return trim(v) + " s"
	case "bytes":
		switch {
		case math.Abs(v) >= 1<<20:
			return trim(v/(1<<20)) + " MiB"
		case math.Abs(v) >= 1<<10:
			return trim(v/(1<<10)) + " KiB"
		}
		return trim(v) + " B"
	case "":
		return trim(v)
	}
	return trim(v) + " " + unit
}

func trim(v float64) string {
	switch a := math.Abs(v); {
	case a == math.Trunc(a) && a < 1e6:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1 || a == 0:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

// subs is "1 sub" or "n subs".
func subs(n int) string {
	if n == 1 {
		return "1 sub"
	}
	return strconv.Itoa(n) + " subs"
}

// loadAverage is the first three fields of /proc/loadavg.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	return strings.Join(f[:min(3, len(f))], " ")
}

// procBytes reads a field of a /proc file counted in kB ("VmRSS: 1024 kB"), in bytes; 0
// where there is none.
func procBytes(path, name string) uint64 {
	kb, _ := strconv.ParseUint(strings.TrimSuffix(procField(path, name), " kB"), 10, 64)
	return kb << 10
}

// procField reads "name : value" from a /proc file; empty where there is none.
func procField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
