package install

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
)

// kustomizeBuild is `kustomize build dir` (what make build-installer writes to
// dist/install.yaml for config/default), through kustomize's Go API.
func kustomizeBuild(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	data, err := resources.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeManifests(data)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// generatedCRDs are the CRDs under config/crd/bases, by name.
func generatedCRDs(t *testing.T) map[string]*apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	files, err := filepath.Glob(repo("config", "crd", "bases", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in config/crd/bases: %v", err)
	}
	out := map[string]*apiextensionsv1.CustomResourceDefinition{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(data, crd); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[crd.Name] = crd
	}
	return out
}

// checkCRDs: the installation carries exactly the generated CRDs, spec for spec.
func checkCRDs(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	want := generatedCRDs(t)
	got := map[string]bool{}
	for _, o := range only(objs, "CustomResourceDefinition") {
		crd := convert[apiextensionsv1.CustomResourceDefinition](t, o)
		got[crd.Name] = true
		if w, ok := want[crd.Name]; !ok {
			t.Errorf("CRD %s is not generated from the API", crd.Name)
		} else if !equality.Semantic.DeepEqual(w.Spec, crd.Spec) {
			t.Errorf("CRD %s differs from config/crd/bases", crd.Name)
		}
	}
	for name := range want {
		if !got[name] {
			t.Errorf("CRD %s is missing", name)
		}
	}
}

// config/scaleout: the bundle with three active replicas, a PodDisruptionBudget and a
// preference for a node per replica.
func TestKustomizeScaleOut(t *testing.T) {
	objs := kustomizeBuild(t, repo("config", "scaleout"))
	dep := convert[appsv1.Deployment](t, only(objs, "Deployment")[0])
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 3 {
		t.Errorf("replicas %v, want 3", dep.Spec.Replicas)
	}
	args := managerContainer(t, dep).Args
	if !slices.Contains(args, "--sharding=Leases") || slices.Contains(args, "--leader-elect") {
		t.Errorf("want --sharding=Leases without --leader-elect: %q", args)
	}
	if a := dep.Spec.Template.Spec.Affinity; a == nil || a.PodAntiAffinity == nil {
		t.Errorf("no pod anti-affinity")
	}
	pdbs := only(objs, "PodDisruptionBudget")
	if len(pdbs) != 1 || pdbs[0].GetNamespace() != dep.Namespace {
		t.Fatalf("want one PodDisruptionBudget in %s, got %d", dep.Namespace, len(pdbs))
	}
	selector, _, _ := unstructured.NestedStringMap(pdbs[0].Object, "spec", "selector", "matchLabels")
	for k, v := range selector {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("the PodDisruptionBudget selects %s=%s, which the pods lack", k, v)
		}
	}
	applyAll(t, objs)
	want := defaults
	want.leaderElection = false
	checkInstallation(t, objs, want)
}

func TestKustomizeDefault(t *testing.T) {
	objs := kustomizeBuild(t, repo("config", "default"))
	for _, o := range objs {
		if slices.Contains(optionalKinds, o.GroupVersionKind().GroupKind()) {
			t.Errorf("config/default includes %s, which needs a CRD most clusters lack; keep it optional", describe(o))
		}
	}
	namespaces := only(objs, "Namespace")
	if len(namespaces) != 1 || namespaces[0].GetLabels()["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("the bundle's Namespace does not enforce the restricted Pod Security Standard")
	}
	checkCRDs(t, objs)
	applyAll(t, objs)
	checkInstallation(t, objs, defaults)
}

func TestKustomizeRestrictedWatchOverlay(t *testing.T) {
	objs := kustomizeBuild(t, repo("config", "overlays", "restricted-watch"))
	applyAll(t, objs)
	want := defaults
	want.clusterWideWatch = false
	checkInstallation(t, objs, want)
	dep := convert[appsv1.Deployment](t, only(objs, "Deployment")[0])
	cluster, _ := grants(t, objs, dep)
	for _, res := range []string{"configmaps", "namespaces", "pods"} {
		if !allows(cluster, "", res, "watch") || !allows(cluster, "", res, "list") {
			t.Errorf("the overlay does not grant list and watch on %s", res)
		}
	}
}

// renderChart renders the chart as `helm template` does, values validated against the
// chart's values.schema.json.
func renderChart(t *testing.T, values string) ([]*unstructured.Unstructured, error) {
	t.Helper()
	return renderChartWithRole(t, values, nil)
}

// renderChartWithRole renders the chart with role (nil: the chart's files/rbac/role.yaml) as
// the generated RBAC.
func renderChartWithRole(t *testing.T, values string, role []byte) ([]*unstructured.Unstructured, error) {
	t.Helper()
	files, err := renderChartFiles(t, values, role)
	if err != nil {
		return nil, err
	}
	var objs []*unstructured.Unstructured
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if !strings.HasSuffix(name, ".yaml") {
			continue // NOTES.txt, _helpers.tpl
		}
		docs, err := decodeManifests([]byte(files[name]))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		objs = append(objs, docs...)
	}
	return objs, nil
}

// renderChartFiles renders the chart's templates, NOTES.txt included, by file name.
func renderChartFiles(t *testing.T, values string, role []byte) (map[string]string, error) {
	t.Helper()
	chrt := loadChart(t)
	if role != nil {
		i := slices.IndexFunc(chrt.Files, func(f *chart.File) bool { return f.Name == "files/rbac/role.yaml" })
		if i < 0 {
			t.Fatal("the chart has no files/rbac/role.yaml")
		}
		chrt.Files[i].Data = role
	}
	vals, err := chartutil.ReadValues([]byte(values))
	if err != nil {
		t.Fatal(err)
	}
	renderValues, err := chartutil.ToRenderValues(chrt, vals,
		chartutil.ReleaseOptions{Name: "notifier", Namespace: chartNamespace, IsInstall: true, Revision: 1},
		chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	return engine.Render(chrt, renderValues)
}

const chartNamespace = "notifier-system"

func chartDir() string { return repo("charts", "dynamic-notifier") }

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	chrt, err := loader.Load(chartDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(chrt.CRDObjects()) > 0 {
		t.Errorf("the chart has a crds/ directory; CRDs are templated from files/crds")
	}
	return chrt
}

func TestHelmChart(t *testing.T) {
	// The release namespace enforces the restricted Pod Security Standard, as config/default's.
	ns := &unstructured.Unstructured{}
	ns.SetAPIVersion("v1")
	ns.SetKind("Namespace")
	ns.SetName(chartNamespace)
	ns.SetLabels(map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	ensureNamespace(t, ns)

	cases := []struct {
		name, values string
		want         expectations
		check        func(t *testing.T, objs []*unstructured.Unstructured)
	}{{
		name: "defaults",
		want: defaults,
		check: func(t *testing.T, objs []*unstructured.Unstructured) {
			checkCRDs(t, objs)
			for _, crd := range only(objs, "CustomResourceDefinition") {
				if crd.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
					t.Errorf("CRD %s is not kept on uninstall", crd.GetName())
				}
			}
		},
	}, {
		name: "narrow watch, plain metrics, no leader election",
		values: `
rbac:
  userRoles: false
  watch:
    clusterWide: false
    rules:
    - apiGroups: [""]
      resources: [configmaps, namespaces]
    namespaced:
    - namespace: team-a
      rules:
      - apiGroups: [apps]
        resources: [deployments]
metrics: {secure: false, port: 8080, serviceMonitor: {enabled: true}}
leaderElection: {enabled: false}
networkPolicy: {enabled: true}
logging: {level: info, encoder: json}
crds: {install: false}
subscriptions: {authorization: None, sinkDenyCIDRs: []}
`,
		want: expectations{metrics: "insecure", metricsPort: 8080, authorization: "None"},
		check: func(t *testing.T, objs []*unstructured.Unstructured) {
			dep := convert[appsv1.Deployment](t, only(objs, "Deployment")[0])
			cluster, namespaced := grants(t, objs, dep)
			if !allows(cluster, "", "namespaces", "watch") || !allows(cluster, "", "configmaps", "list") {
				t.Errorf("rbac.watch.rules not granted cluster-wide")
			}
			if allows(cluster, "apps", "deployments", "list") || !allows(namespaced["team-a"], "apps", "deployments", "watch") {
				t.Errorf("rbac.watch.namespaced not granted in team-a only")
			}
			if len(only(objs, "CustomResourceDefinition")) != 0 {
				t.Errorf("CRDs rendered with crds.install false")
			}
			if len(only(objs, "ServiceMonitor")) != 1 || len(only(objs, "NetworkPolicy")) != 1 {
				t.Errorf("ServiceMonitor or NetworkPolicy missing")
			}
			if args := managerContainer(t, dep).Args; !slices.Contains(args, "--sink-deny-cidrs=") {
				t.Errorf("an empty subscriptions.sinkDenyCIDRs does not pass --sink-deny-cidrs=: %q", args)
			}
		},
	}, {
		name:   "metrics off",
		values: `{metrics: {enabled: false}, replicaCount: 2}`,
		want:   expectations{leaderElection: true, metrics: "off", clusterWideWatch: true},
		check: func(t *testing.T, objs []*unstructured.Unstructured) {
			dep := convert[appsv1.Deployment](t, only(objs, "Deployment")[0])
			// The operator's own default applies: the chart keeps no copy of it.
			for _, arg := range managerContainer(t, dep).Args {
				if strings.HasPrefix(arg, "--sink-deny-cidrs") {
					t.Errorf("the chart passes %s without subscriptions.sinkDenyCIDRs set", arg)
				}
			}
		},
	}, {
		name:   "three active replicas",
		values: `{replicaCount: 3, sharding: Leases}`,
		want:   expectations{metrics: "secure", metricsPort: 8443, clusterWideWatch: true},
		check: func(t *testing.T, objs []*unstructured.Unstructured) {
			dep := convert[appsv1.Deployment](t, only(objs, "Deployment")[0])
			if args := managerContainer(t, dep).Args; !slices.Contains(args, "--sharding=Leases") {
				t.Errorf("sharding Leases does not pass --sharding=Leases: %q", args)
			}
			if !slices.ContainsFunc(managerContainer(t, dep).Env, func(e corev1.EnvVar) bool {
				return e.Name == "POD_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil &&
					e.ValueFrom.FieldRef.FieldPath == "metadata.name"
			}) {
				t.Errorf("no POD_NAME from metadata.name for --replica-name")
			}
			if a := dep.Spec.Template.Spec.Affinity; a == nil || a.PodAntiAffinity == nil ||
				len(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 {
				t.Errorf("no preferred pod anti-affinity with 3 replicas: %+v", a)
			}
			pdbs := only(objs, "PodDisruptionBudget")
			if len(pdbs) != 1 {
				t.Fatalf("%d PodDisruptionBudgets with 3 replicas, want 1", len(pdbs))
			}
			if n, _, _ := unstructured.NestedFieldNoCopy(pdbs[0].Object, "spec", "maxUnavailable"); fmt.Sprint(n) != "1" {
				t.Errorf("PodDisruptionBudget maxUnavailable %v, want 1", n)
			}
		},
	}, {
		name:   "own sink deny list",
		values: `{subscriptions: {sinkDenyCIDRs: [169.254.0.0/16, "fd00:ec2::254/128", 10.0.0.0/8]}}`,
		want:   defaults,
		check: func(t *testing.T, objs []*unstructured.Unstructured) {
			dep := convert[appsv1.Deployment](t, only(objs, "Deployment")[0])
			want := "--sink-deny-cidrs=169.254.0.0/16,fd00:ec2::254/128,10.0.0.0/8"
			if args := managerContainer(t, dep).Args; !slices.Contains(args, want) {
				t.Errorf("the chart does not pass %s: %q", want, args)
			}
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := renderChart(t, tc.values)
			if err != nil {
				t.Fatal(err)
			}
			applyAll(t, objs)
			checkInstallation(t, objs, tc.want)
			if tc.check != nil {
				tc.check(t, objs)
			}
		})
	}
}

func TestHelmChartRejectsBadValues(t *testing.T) {
	cases := map[string]string{
		"misspelt key":                   `{rbac: {watch: {clusterwide: false}}}`,
		"rules with clusterWide":         `{rbac: {watch: {rules: [{apiGroups: [""], resources: [pods]}]}}}`,
		"rule without resources":         `{rbac: {watch: {clusterWide: false, rules: [{apiGroups: [""]}]}}}`,
		"replicas without leader":        `{replicaCount: 2, leaderElection: {enabled: false}}`,
		"unknown sharding":               `{sharding: Hash}`,
		"service monitor without metric": `{metrics: {enabled: false, serviceMonitor: {enabled: true}}}`,
		"rules without metrics":          `{metrics: {enabled: false, prometheusRule: {enabled: true}}}`,
		"dashboard without metrics":      `{metrics: {enabled: false, grafanaDashboard: {enabled: true}}}`,
		"dashboard label not a string":   `{metrics: {grafanaDashboard: {enabled: true, labels: {grafana_dashboard: 1}}}}`,
		"bad port":                       `{metrics: {port: 0}}`,
		"unknown authorization":          `{subscriptions: {authorization: Maybe}}`,
		"sink deny not a CIDR":           `{subscriptions: {sinkDenyCIDRs: [metadata.internal]}}`,
	}
	for name, values := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := renderChart(t, values); err == nil {
				t.Errorf("rendered with %s", values)
			}
		})
	}
}

// The chart carries copies of generated files (make helm-sync); they must not drift.
func TestHelmChartCopiesAreCurrent(t *testing.T) {
	pairs := map[string]string{
		repo("config", "rbac", "role.yaml"):          filepath.Join(chartDir(), "files", "rbac", "role.yaml"),
		repo("config", "admission", "policy.yaml"):   filepath.Join(chartDir(), "files", "admission", "policy.yaml"),
		repo("config", "admission", "binding.yaml"):  filepath.Join(chartDir(), "files", "admission", "binding.yaml"),
		repo("config", "prometheus", "monitor.yaml"): filepath.Join(chartDir(), "files", "prometheus", "monitor.yaml"),
		repo("config", "prometheus", "alerts.yaml"):  filepath.Join(chartDir(), "files", "prometheus", "alerts.yaml"),
		repo("config", "grafana", "dashboard.json"):  filepath.Join(chartDir(), "files", "grafana", "dashboard.json"),
	}
	generated, _ := filepath.Glob(repo("config", "crd", "bases", "*.yaml"))
	for _, f := range generated {
		pairs[f] = filepath.Join(chartDir(), "files", "crds", filepath.Base(f))
	}
	copies, _ := filepath.Glob(filepath.Join(chartDir(), "files", "crds", "*.yaml"))
	if len(copies) != len(generated) {
		t.Errorf("the chart has %d CRD files, config/crd/bases %d: run make helm-sync", len(copies), len(generated))
	}
	for src, dst := range pairs {
		a, errA := os.ReadFile(src)
		b, errB := os.ReadFile(dst)
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("%s is not a copy of %s: run make helm-sync", dst, src)
		}
	}
}

// checkpointRole is what controller-gen appends to config/rbac/role.yaml for a marker such as
// +kubebuilder:rbac:groups="",namespace=system,resources=configmaps,verbs=get;list;watch;create;update;patch
// (the manager's checkpoint ConfigMap in its own namespace).
const checkpointRole = `---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: manager-role
  namespace: system
rules:
- apiGroups:
  - ""
  resources:
  - configmaps
  verbs:
  - create
  - get
  - list
  - patch
  - update
  - watch
`

// roleWithNamespacedRole is config/rbac/role.yaml with a namespaced Role after its
// ClusterRole: as it is once it has one, or with checkpointRole appended.
func roleWithNamespacedRole(t *testing.T) []byte {
	t.Helper()
	data := roleYAML(t, expectations{})
	if _, namespaced := generatedRBAC(t, data); len(namespaced) > 0 {
		return data
	}
	data = append(slices.Clone(data), checkpointRole...)
	if _, namespaced := generatedRBAC(t, data); len(namespaced[managerNamespace]) == 0 {
		t.Fatal("checkpointRole is not read as a Role in the manager namespace")
	}
	return data
}

// A role.yaml with a ClusterRole and a Role for the manager's namespace: the chart merges the
// ClusterRole into the manager's and creates the Role in the release namespace, bound to the
// manager, also without leader election (whose Role would otherwise cover ConfigMaps).
func TestHelmChartNamespacedRole(t *testing.T) {
	role := roleWithNamespacedRole(t)
	for name, values := range map[string]string{
		"defaults":           ``,
		"no leader election": `{leaderElection: {enabled: false}}`,
		"narrow watch, no CRD": `{crds: {install: false},
			rbac: {watch: {clusterWide: false, rules: [{apiGroups: [""], resources: [pods]}]}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			objs, err := renderChartWithRole(t, values, role)
			if err != nil {
				t.Fatal(err)
			}
			var roles []string
			for _, o := range only(objs, "Role") {
				roles = append(roles, o.GetNamespace()+"/"+o.GetName())
			}
			if !slices.Contains(roles, chartNamespace+"/notifier-dynamic-notifier-manager") {
				t.Errorf("no Role notifier-dynamic-notifier-manager in the release namespace: %q", roles)
			}
			applyAll(t, objs)
			dep := convert[appsv1.Deployment](t, only(objs, "Deployment")[0])
			want := expectations{
				leaderElection:   !strings.Contains(values, "leaderElection"),
				metrics:          "secure",
				metricsPort:      8443,
				clusterWideWatch: !strings.Contains(values, "clusterWide: false"),
				roleYAML:         role,
			}
			checkInstallation(t, objs, want)
			// Bound in the release namespace, whatever else grants ConfigMaps there.
			_, namespaced := grants(t, objs, dep)
			for _, verb := range []string{"get", "create", "update"} {
				if !allows(namespaced[chartNamespace], "", "configmaps", verb) {
					t.Errorf("the manager may not %s configmaps in the release namespace", verb)
				}
			}
		})
	}
}

// The same role.yaml through kustomize: the Role lands in the manager's namespace.
func TestKustomizeNamespacedRole(t *testing.T) {
	role := roleWithNamespacedRole(t)
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(repo("config"))); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rbac", "role.yaml"), role, 0o644); err != nil {
		t.Fatal(err)
	}
	objs := kustomizeBuild(t, filepath.Join(dir, "default"))
	dep := convert[appsv1.Deployment](t, only(objs, "Deployment")[0])
	var inManagerNamespace bool
	for _, o := range only(objs, "Role") {
		if o.GetName() == "dynamic-notifier-manager-role" && o.GetNamespace() == dep.Namespace {
			inManagerNamespace = true
		}
	}
	if !inManagerNamespace {
		t.Errorf("the generated Role is not in the manager's namespace %s", dep.Namespace)
	}
	applyAll(t, objs)
	want := defaults
	want.roleYAML = role
	checkInstallation(t, objs, want)
}
