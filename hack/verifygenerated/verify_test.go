package verifygenerated

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// repoRoot is the repository this package is in (go test runs in the package directory).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// env is the test's environment plus extra, without what would tie a command to the
// repository or to a make that runs this test (make test does): git's repository variables,
// make's job server, the Makefile's variables.
func env(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "GIT_"), name == "MAKEFLAGS", name == "MFLAGS", name == "MAKELEVEL",
			name == "CI", name == "LOCALBIN", name == "CONTROLLER_GEN", name == "YEAR":
			continue
		}
		out = append(out, kv)
	}
	out = append(out,
		"GIT_AUTHOR_NAME=test", "GIT_AUTHOR_EMAIL=test@example.invalid",
		"GIT_COMMITTER_NAME=test", "GIT_COMMITTER_EMAIL=test@example.invalid",
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	return append(out, extra...)
}

func run(t *testing.T, dir string, extraEnv []string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = env(extraEnv...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustRun(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	out, err := run(t, dir, nil, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// cloneTracked copies the repository's tracked files, as they are in its working tree, into a
// new git repository with one commit: a clean clone of what would be committed, without bin/.
func cloneTracked(t *testing.T, root string) string {
	t.Helper()
	ls := exec.Command("git", "ls-files", "-z")
	ls.Dir, ls.Env = root, env()
	out, err := ls.Output()
	if err != nil {
		t.Skipf("%s is not a git checkout (git ls-files: %v)", root, err)
	}
	files := string(out)
	dir := t.TempDir()
	for name := range strings.SplitSeq(strings.TrimSuffix(files, "\x00"), "\x00") {
		src := filepath.Join(root, name)
		info, err := os.Lstat(src)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted in the working tree, not yet in the index
		}
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(src)
			if err == nil {
				err = os.Symlink(target, dst)
			}
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, info.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	// Outside CI make test does not tidy go.mod: a working tree with an untidy one is not what
	// this test is about (in CI, make verify-generated fails on it before any test runs).
	mustRun(t, dir, "go", "mod", "tidy")
	mustRun(t, dir, "git", "init", "-q")
	commit(t, dir, "copy")
	return dir
}

func commit(t *testing.T, dir, message string) {
	t.Helper()
	mustRun(t, dir, "git", "add", "-A")
	mustRun(t, dir, "git", "-c", "commit.gpgsign=false", "commit", "-q", "--no-verify", "-m", message)
}

// verify runs make verify-generated in dir as CI does (CI=true), with the controller-gen of
// the repository's bin/ (installed there first if missing: nothing is built twice).
func verify(t *testing.T, root, dir string) (string, error) {
	t.Helper()
	start := time.Now()
	out, err := run(t, dir, []string{"CI=true", "LOCALBIN=" + filepath.Join(root, "bin")},
		"make", "--no-print-directory", "verify-generated")
	t.Logf("make verify-generated: %s", time.Since(start).Round(100*time.Millisecond))
	return out, err
}

func edit(t *testing.T, path string, change func(string) string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	changed := change(string(data))
	if changed == string(data) {
		t.Fatalf("%s: the edit changed nothing; update this test", path)
	}
	if err := os.WriteFile(path, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
}

// In CI, make verify-generated (which make test runs before any test) passes on a clean copy
// of the repository and fails, naming each file, on a commit with a stale generated CRD and
// chart copy, an untidy go.mod, unformatted Go and a missing generated file. Outside CI it
// does not fail.
func TestVerifyGeneratedInCI(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the generators twice")
	}
	root := repoRoot(t)
	dir := cloneTracked(t, root)

	if out, err := verify(t, root, dir); err != nil {
		t.Fatalf("CI=true make verify-generated fails on an unmodified copy: %v\n%s", err, out)
	}
	if status := mustRun(t, dir, "git", "status", "--porcelain"); status != "" {
		t.Fatalf("verification passed, but the copy changed:\n%s", status)
	}

	// A doc comment changed without regenerating: the CRD and the chart's copy are stale.
	crdName := "notify.dynamicnotifier.io_watchsubscriptions.yaml"
	edit(t, filepath.Join(dir, "api", "v1alpha1", "watchsubscription_types.go"), func(s string) string {
		return strings.Replace(s, "type WatchSubscriptionSpec struct {\n\t// ",
			"type WatchSubscriptionSpec struct {\n\t// Stale: ", 1)
	})
	// A direct requirement marked indirect: go mod tidy changes go.mod.
	edit(t, filepath.Join(dir, "go.mod"), func(s string) string {
		direct := regexp.MustCompile(`(?m)^\t[^\s/]+\.[^\s]+ v[^\s]+$`).FindStringIndex(s)
		if direct == nil {
			return s
		}
		return s[:direct[1]] + " // indirect" + s[direct[1]:]
	})
	// Unformatted Go.
	unformatted := filepath.Join("internal", "stale", "stale.go")
	if err := os.MkdirAll(filepath.Join(dir, "internal", "stale"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, unformatted), []byte("package stale\nvar  X=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A chart copy not committed: make helm-sync creates it.
	binding := filepath.Join("charts", "dynamic-notifier", "files", "admission", "binding.yaml")
	if err := os.Remove(filepath.Join(dir, binding)); err != nil {
		t.Fatal(err)
	}
	commit(t, dir, "stale")

	out, err := verify(t, root, dir)
	if err == nil {
		t.Fatalf("CI=true make verify-generated passes on stale files:\n%s", out)
	}
	for _, want := range []string{
		filepath.Join("config", "crd", "bases", crdName),
		filepath.Join("charts", "dynamic-notifier", "files", "crds", crdName),
		"go.mod",
		unformatted,
		binding,
		"files changed", // the diff stat
		"make manifests generate helm-sync fmt",
		"go mod tidy",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the failure does not mention %q:\n%s", want, out)
		}
	}
	if t.Failed() {
		return
	}

	// Outside CI the script lets make test go on with the regenerated files.
	for _, ci := range []string{"", "false"} {
		out, err := run(t, dir, []string{"CI=" + ci}, filepath.Join(dir, "hack", "verify-generated.sh"))
		if err != nil || out != "" {
			t.Errorf("CI=%q: hack/verify-generated.sh fails or prints (%v):\n%s", ci, err, out)
		}
	}
}
