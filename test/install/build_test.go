package install

import (
	"bufio"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// makeDryRun prints the commands make would run for a target, without running them.
func makeDryRun(t *testing.T, target string) []string {
	t.Helper()
	cmd := exec.Command("make", "--no-print-directory", "-n", target)
	cmd.Dir = repo()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("make -n %s: %v", target, err)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// dockerfile returns the Dockerfile's instructions, continuation lines joined.
func dockerfile(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(repo("Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	var cur string
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if cur == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if rest, ok := strings.CutSuffix(line, "\\"); ok {
			cur += rest + " "
			continue
		}
		out = append(out, cur+line)
		cur = ""
	}
	return out
}

// The image is built by `make manager`, the same recipe `make build` runs, into a distroless
// nonroot image whose entrypoint the manifests call.
func TestDockerfileBuildsWithMake(t *testing.T) {
	steps := dockerfile(t)
	var runs, froms []string
	for _, s := range steps {
		switch {
		case strings.HasPrefix(s, "RUN "):
			runs = append(runs, s)
		case strings.HasPrefix(s, "FROM "):
			froms = append(froms, s)
		}
	}
	if len(froms) != 2 || !strings.HasSuffix(froms[0], " AS builder") {
		t.Errorf("want two stages, a builder and the image: %q", froms)
	}
	build := regexp.MustCompile(`^RUN GOOS=\$\{TARGETOS:-linux\} GOARCH=\$\{TARGETARCH\} make manager$`)
	if !slices.ContainsFunc(runs, build.MatchString) {
		t.Errorf("no RUN step matching %s in %q", build, runs)
	}
	for _, want := range []string{
		"FROM gcr.io/distroless/static:nonroot",
		"COPY --from=builder /workspace/bin/manager .",
		"USER 65532:65532", // numeric, so that runAsNonRoot can verify it
		`ENTRYPOINT ["/manager"]`,
	} {
		if !slices.Contains(steps, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}

	manager := makeDryRun(t, "manager")
	if len(manager) != 1 || !strings.Contains(manager[0], "CGO_ENABLED=0 go build") ||
		!strings.Contains(manager[0], "-o bin/manager ./cmd") {
		t.Fatalf("make manager runs %q", manager)
	}
	if !slices.Contains(makeDryRun(t, "build"), manager[0]) {
		t.Errorf("make build does not run make manager's %q", manager[0])
	}
}

// dockerIgnored reports whether .dockerignore keeps path (slash-separated, relative to the
// repository) out of the build context: the last matching pattern wins, "!" re-includes, a
// pattern matching a parent directory matches what is inside it.
func dockerIgnored(patterns []string, path string) bool {
	ignored := false
	for _, p := range patterns {
		negate := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(p, "!")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(p); i++ {
			switch {
			case strings.HasPrefix(p[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(p[i:], "**"):
				re.WriteString(".*")
				i++
			case p[i] == '*':
				re.WriteString("[^/]*")
			case p[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(p[i : i+1]))
			}
		}
		re.WriteString("(/.*)?$")
		if regexp.MustCompile(re.String()).MatchString(path) {
			ignored = !negate
		}
	}
	return ignored
}

// Everything `make manager` reads is in the Docker build context.
func TestDockerBuildContextHasWhatMakeManagerNeeds(t *testing.T) {
	f, err := os.Open(repo(".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var patterns []string
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		if line := strings.TrimSpace(scanner.Text()); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, filepath.ToSlash(filepath.Clean(line)))
		}
	}
	if !dockerIgnored(patterns, "README.md") || !dockerIgnored(patterns, "internal/x/x_test.go") {
		t.Fatalf(".dockerignore no longer excludes by default; update this test")
	}

	cmd := exec.Command("go", "list", "-deps", "-f",
		`{{if .Module}}{{if .Module.Main}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}`+
			`{{range .EmbedFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{end}}{{end}}`, "./cmd")
	cmd.Dir = repo()
	cmd.Env = append(os.Environ(), "GOOS=linux", "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	files := strings.Fields(string(out))
	needed := append(make([]string, 0, len(files)+3), "Makefile", "go.mod", "go.sum")
	for _, file := range files {
		rel, err := filepath.Rel(repo(), file)
		if err != nil {
			t.Fatal(err)
		}
		needed = append(needed, filepath.ToSlash(rel))
	}
	for _, path := range needed {
		if dockerIgnored(patterns, path) {
			t.Errorf(".dockerignore leaves %s out of the image build, which make manager needs", path)
		}
	}
}

// make manager's recipe builds a static binary: no interpreter, no dynamic section, so it
// runs on distroless/static. The recipe runs as make prints it, into a temporary directory.
func TestMakeManagerBuildsStaticBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the manager")
	}
	recipe := makeDryRun(t, "manager")[0]
	out := filepath.Join(t.TempDir(), "manager")
	command := strings.Replace(recipe, "-o bin/manager", "-o "+out, 1)
	cmd := exec.Command("bash", "-ec", command)
	cmd.Dir = repo()
	// As the Dockerfile runs it: GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH}.
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+runtime.GOARCH)
	start := time.Now()
	if output, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", command, err, output)
	}
	t.Logf("built in %s", time.Since(start).Round(time.Second))

	bin, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bin.Close() }()
	for _, prog := range bin.Progs {
		if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
			t.Errorf("the manager has a %s program header: it is dynamically linked", prog.Type)
		}
	}
	if libs, err := bin.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("the manager needs shared libraries %q (%v)", libs, err)
	}
	if bin.Section(".symtab") != nil {
		t.Errorf("the manager has a symbol table; -ldflags=-s strips it")
	}
}
