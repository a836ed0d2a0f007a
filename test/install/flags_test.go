package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/dynamic-notifier/dynamic-notifier/internal/operator"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

// managerFlag is a flag of the manager binary as its -h prints it.
type managerFlag struct {
	// kind is the type word -h prints ("string", "duration", "value"); empty for booleans.
	kind string
	// def is the default value, the zero value of its kind when -h prints none.
	def string
}

var defaultInUsage = regexp.MustCompile(`\(default (.+)\)$`)

// parseUsage reads the flags of a Go program's -h output (flag.PrintDefaults).
func parseUsage(t *testing.T, usage string) map[string]managerFlag {
	t.Helper()
	flags := map[string]managerFlag{}
	texts := map[string]string{}
	var current string
	for line := range strings.Lines(usage) {
		line = strings.TrimRight(line, "\n")
		if rest, ok := strings.CutPrefix(line, "  -"); ok {
			name, kind, _ := strings.Cut(strings.Replace(rest, "\t", " ", 1), " ")
			current = name
			flags[name] = managerFlag{kind: strings.TrimSpace(kind)}
			continue
		}
		if current != "" && strings.HasPrefix(line, "    \t") {
			texts[current] += " " + strings.TrimSpace(line)
		}
	}
	for name, f := range flags {
		m := defaultInUsage.FindStringSubmatch(texts[name])
		switch {
		case m != nil && f.kind == "string":
			def, err := strconv.Unquote(m[1])
			if err != nil {
				t.Fatalf("-%s: default %s: %v", name, m[1], err)
			}
			f.def = def
		case m != nil:
			f.def = m[1]
		case f.kind == "":
			f.def = "false"
		case f.kind == "duration":
			f.def = "0s"
		}
		flags[name] = f
	}
	return flags
}

// same reports whether two values of a flag mean the same.
func (f managerFlag) same(a, b string) bool {
	switch f.kind {
	case "":
		x, errX := strconv.ParseBool(a)
		y, errY := strconv.ParseBool(b)
		return errX == nil && errY == nil && x == y
	case "duration":
		x, errX := time.ParseDuration(a)
		y, errY := time.ParseDuration(b)
		return errX == nil && errY == nil && x == y
	}
	return a == b
}

// buildManagerFlags builds the manager and returns the flags its -h lists.
func buildManagerFlags(t *testing.T) map[string]managerFlag {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "manager")
	build := exec.Command("go", "build", "-o", bin, "./cmd")
	build.Dir = repo()
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd: %v\n%s", err, out)
	}
	t.Logf("built the manager in %s", time.Since(start).Round(100*time.Millisecond))
	help := exec.Command(bin, "-h")
	// --checkpoint-namespace defaults to $POD_NAMESPACE.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "POD_NAMESPACE=") {
			help.Env = append(help.Env, kv)
		}
	}
	out, err := help.CombinedOutput()
	if err != nil {
		t.Fatalf("manager -h: %v\n%s", err, out)
	}
	flags := parseUsage(t, string(out))
	if len(flags) < 10 || flags["leader-elect"].kind != "" || flags["shutdown-grace"].kind != "duration" {
		t.Fatalf("manager -h is not read right (%v):\n%s", flags, out)
	}
	return flags
}

// managerArgs are the manager container's flags in a rendered installation, by name: the
// value each sets (true for a boolean flag without one). Arguments that do not parse as
// flags the binary has, or that name a flag twice, are errors.
func managerArgs(t *testing.T, flags map[string]managerFlag, dep *appsv1.Deployment) map[string]string {
	t.Helper()
	c := managerContainer(t, dep)
	if len(c.Command) != 1 || c.Command[0] != "/manager" {
		t.Errorf("the manager container runs %q, not /manager", c.Command)
	}
	args := map[string]string{}
	for _, arg := range c.Args {
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		f, known := flags[name]
		switch {
		case !strings.HasPrefix(arg, "-"):
			t.Errorf("argument %q is not a flag", arg)
			continue
		case !known:
			t.Errorf("%s: the manager has no flag -%s", arg, name)
			continue
		case !hasValue && f.kind != "":
			t.Errorf("%s: pass the value as --%s=<value>", arg, name)
			continue
		case !hasValue:
			value = "true"
		}
		if _, twice := args[name]; twice {
			t.Errorf("--%s is passed twice: %q", name, c.Args)
		}
		args[name] = value
	}
	return args
}

// effective is the value each flag takes: its argument, or the binary's default.
func effective(flags map[string]managerFlag, args map[string]string) map[string]string {
	out := map[string]string{}
	for name, f := range flags {
		out[name] = f.def
		if v, ok := args[name]; ok {
			out[name] = v
		}
	}
	return out
}

// checkShutdownRoom: the kubelet waits terminationGracePeriodSeconds after SIGTERM before
// it kills the manager, which may take --shutdown-grace plus operator.ShutdownSlack.
func checkShutdownRoom(t *testing.T, dep *appsv1.Deployment, grace string) {
	t.Helper()
	shutdownGrace, err := time.ParseDuration(grace)
	if err != nil {
		t.Fatalf("--shutdown-grace=%s: %v", grace, err)
	}
	need := shutdownGrace + operator.ShutdownSlack
	period := 30 * time.Second // the API server's default
	if p := dep.Spec.Template.Spec.TerminationGracePeriodSeconds; p != nil {
		period = time.Duration(*p) * time.Second
	}
	if period < need {
		t.Errorf("terminationGracePeriodSeconds is %s: the manager may take --shutdown-grace %s + %s = %s to stop",
			period, shutdownGrace, operator.ShutdownSlack, need)
	}
}

// alwaysPassed are flags the chart passes even with the binary's default value, and why.
var alwaysPassed = map[string]string{
	"health-probe-bind-address": "the container port and the probes use the same port",
}

// The chart and the kustomize bundle pass the manager only flags it has. The chart passes
// none with the binary's default value (a value it leaves unset is the binary's, defined
// once), and what it leaves out is what its other objects assume: the binary's defaults are
// the operator's constants, metrics are secure unless the chart says otherwise. The
// termination grace period covers the manager's shutdown.
func TestManagerFlags(t *testing.T) {
	flags := buildManagerFlags(t)
	for flag, value := range map[string]string{
		"subscription-authorization": string(operator.DefaultAuthorization),
		"shutdown-grace":             operator.DefaultShutdownGrace.String(),
		"sink-deny-cidrs":            sink.FormatCIDRs(sink.DefaultDeny),
		"checkpoint-interval":        operator.DefaultCheckpointInterval.String(),
	} {
		if f := flags[flag]; !f.same(f.def, value) {
			t.Errorf("the binary's --%s defaults to %q, the operator's constant is %q", flag, f.def, value)
		}
	}

	cases := []struct {
		name, values string
		// want: the effective value of these flags.
		want map[string]string
		// defaults: the values are the chart's defaults, so no flag may repeat the binary's.
		defaults bool
	}{{
		name:     "defaults",
		defaults: true,
		want: map[string]string{
			"metrics-bind-address": ":8443", "metrics-secure": "true", "leader-elect": "true",
			"health-probe-bind-address": ":8081", "subscription-authorization": "SubjectAccessReview",
			"shutdown-grace": operator.DefaultShutdownGrace.String(),
		},
	}, {
		name:   "metrics and leader election off",
		values: `{metrics: {enabled: false}, leaderElection: {enabled: false}}`,
		want:   map[string]string{"metrics-bind-address": "0", "leader-elect": "false"},
	}, {
		name: "every value set",
		values: `{metrics: {secure: false, port: 8080}, healthProbe: {port: 9440},
			logging: {level: debug, encoder: console},
			subscriptions: {authorization: None, sinkDenyCIDRs: [10.0.0.0/8]},
			extraArgs: ["--shutdown-grace=60s"], terminationGracePeriodSeconds: 75}`,
		want: map[string]string{
			"metrics-bind-address": ":8080", "metrics-secure": "false", "health-probe-bind-address": ":9440",
			"zap-log-level": "debug", "zap-encoder": "console", "subscription-authorization": "None",
			"sink-deny-cidrs": "10.0.0.0/8", "shutdown-grace": "1m0s",
		},
	}, {
		name:   "authorization set to the default",
		values: `{subscriptions: {authorization: SubjectAccessReview}}`,
		want:   map[string]string{"subscription-authorization": "SubjectAccessReview"},
	}}
	for _, tc := range cases {
		t.Run("chart/"+tc.name, func(t *testing.T) {
			objs, err := renderChart(t, tc.values)
			if err != nil {
				t.Fatal(err)
			}
			dep := convert[appsv1.Deployment](t, only(objs, "Deployment")[0])
			args := managerArgs(t, flags, dep)
			got := effective(flags, args)
			for name, value := range tc.want {
				if f := flags[name]; !f.same(got[name], value) {
					t.Errorf("--%s is %q, want %q (args %q)", name, got[name], value, managerContainer(t, dep).Args)
				}
			}
			if tc.defaults {
				for name, value := range args {
					if f := flags[name]; f.same(value, f.def) && alwaysPassed[name] == "" {
						t.Errorf("the chart's defaults pass --%s=%s, the binary's default: leave it out", name, value)
					}
				}
			}
			checkShutdownRoom(t, dep, got["shutdown-grace"])
		})
	}

	for _, dir := range []string{"default", "overlays/restricted-watch", "overlays/strict-serviceaccounts"} {
		t.Run("kustomize/"+dir, func(t *testing.T) {
			objs := kustomizeBuild(t, repo("config", filepath.FromSlash(dir)))
			deployments := only(objs, "Deployment")
			if len(deployments) != 1 {
				t.Fatalf("%d Deployments", len(deployments))
			}
			dep := convert[appsv1.Deployment](t, deployments[0])
			got := effective(flags, managerArgs(t, flags, dep))
			checkShutdownRoom(t, dep, got["shutdown-grace"])
		})
	}
}

// NOTES.txt explains per-subscription authorization unless the chart turns it off: left
// unset, the binary's default (SubjectAccessReview) applies.
func TestHelmChartNotesFollowAuthorization(t *testing.T) {
	const note = "Each subscription acts as its spec.serviceAccountName"
	for values, want := range map[string]bool{
		``: true,
		`{subscriptions: {authorization: SubjectAccessReview}}`: true,
		`{subscriptions: {authorization: None}}`:                false,
	} {
		files, err := renderChartFiles(t, values, nil)
		if err != nil {
			t.Fatal(err)
		}
		var notes string
		for name, text := range files {
			if strings.HasSuffix(name, "/NOTES.txt") {
				notes = text
			}
		}
		if strings.Contains(notes, note) != want {
			t.Errorf("values %q: NOTES.txt explains subscription authorization: %v, want %v", values, !want, want)
		}
	}
}
