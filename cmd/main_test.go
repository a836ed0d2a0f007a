package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLogsAreJSONByDefault: the binary as shipped logs JSON at info level, as production log
// pipelines expect; --zap-devel and the other --zap-* flags change it.
func TestLogsAreJSONByDefault(t *testing.T) {
	bin := buildManager(t)
	// No kubeconfig to be found: the manager logs why and exits.
	cmd := exec.Command(bin, "--kubeconfig="+filepath.Join(t.TempDir(), "missing"))
	cmd.Env = []string{"HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the manager ran without a kubeconfig:\n%s", out)
	}
	lines := 0
	for line := range strings.Lines(string(out)) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		lines++
		var record map[string]any
		if err := json.Unmarshal([]byte(line), &record); err != nil {
			t.Errorf("not a JSON log record: %q", line)
			continue
		}
		if record["level"] == nil || record["msg"] == nil {
			t.Errorf("a JSON log record without level or msg: %q", line)
		}
	}
	if lines == 0 {
		t.Fatalf("the manager logged nothing before exiting: %v", err)
	}
}

// A bad --concurrent-reconciles stops the manager before it looks for a cluster, with the
// flag named.
func TestNoReconcileWorkersIsRefused(t *testing.T) {
	bin := buildManager(t)
	for _, value := range []string{"0", "-1"} {
		cmd := exec.Command(bin, "--concurrent-reconciles="+value, "--kubeconfig="+filepath.Join(t.TempDir(), "missing"))
		cmd.Env = []string{"HOME=" + t.TempDir()}
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("--concurrent-reconciles=%s: the manager ran:\n%s", value, out)
		}
		if !strings.Contains(string(out), "Invalid --concurrent-reconciles") {
			t.Errorf("--concurrent-reconciles=%s: the manager exited without naming the flag:\n%s", value, out)
		}
	}
}

// buildManager builds the manager binary into a temporary directory.
func buildManager(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "manager")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
