package install

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dynamic-notifier/dynamic-notifier/internal/operator"
)

// expectations are the settings an installation was rendered with.
type expectations struct {
	leaderElection bool
	// metrics is "secure" (HTTPS with authn/authz), "insecure" (HTTP) or "off".
	metrics     string
	metricsPort int32
	// clusterWideWatch: the */* list/watch rule is granted.
	clusterWideWatch bool
	// authorization is the --subscription-authorization flag; empty: not set (the binary's
	// default, SubjectAccessReview).
	authorization string
	// roleYAML is the config/rbac/role.yaml the installation was rendered from; nil: the
	// repository's.
	roleYAML []byte
}

var defaults = expectations{leaderElection: true, metrics: "secure", metricsPort: 8443, clusterWideWatch: true}

const healthPort = 8081

// checkInstallation checks the manager Deployment, its RBAC and its metrics Service in a
// rendered installation, and that its Pod passes the restricted Pod Security admission.
func checkInstallation(t *testing.T, objs []*unstructured.Unstructured, want expectations) {
	t.Helper()
	deployments := only(objs, "Deployment")
	if len(deployments) != 1 {
		t.Fatalf("%d Deployments, want 1", len(deployments))
	}
	dep := convert[appsv1.Deployment](t, deployments[0])
	checkDeployment(t, dep, want)
	checkRBAC(t, objs, dep, want)
	checkMetricsService(t, objs, dep, want)
	checkPodSecurity(t, dep)
}

func managerContainer(t *testing.T, dep *appsv1.Deployment) corev1.Container {
	t.Helper()
	for _, c := range dep.Spec.Template.Spec.Containers {
		if c.Name == "manager" {
			return c
		}
	}
	t.Fatalf("Deployment %s has no manager container", dep.Name)
	return corev1.Container{}
}

// portNumber resolves a probe or Service target port against the container's ports.
func portNumber(c corev1.Container, port intstr.IntOrString) int32 {
	if port.Type == intstr.Int {
		return port.IntVal
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return p.ContainerPort
		}
	}
	return -1
}

func checkDeployment(t *testing.T, dep *appsv1.Deployment, want expectations) {
	t.Helper()
	c := managerContainer(t, dep)
	checkArgs(t, dep, c, want)
	checkProbes(t, c)
	checkSecurityContext(t, dep.Spec.Template.Spec.SecurityContext, c.SecurityContext)

	// The manager keeps its checkpoint ConfigMap and leader-election Lease in its own
	// namespace, which --checkpoint-namespace takes from POD_NAMESPACE.
	i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "POD_NAMESPACE" })
	if i < 0 || c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.FieldRef == nil ||
		c.Env[i].ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
		t.Errorf("the manager has no POD_NAMESPACE from the downward API (fieldRef metadata.namespace): %+v", c.Env)
	}

	// The manager sets GOMEMLIMIT to 90% of its container's limit. GOMEMLIMIT at the whole
	// limit let RSS past it under a flood (BENCHMARKS.md, budgetflood).
	if slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMEMLIMIT" }) {
		t.Errorf("the manager's GOMEMLIMIT is set by the Deployment; it should be left to the manager: %+v", c.Env)
	}
	i = slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == operator.ContainerMemoryLimitEnv })
	if i < 0 || c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.ResourceFieldRef == nil ||
		c.Env[i].ValueFrom.ResourceFieldRef.Resource != "limits.memory" ||
		c.Env[i].ValueFrom.ResourceFieldRef.ContainerName != c.Name {
		t.Errorf("the manager has no %s from the downward API (resourceFieldRef limits.memory): %+v",
			operator.ContainerMemoryLimitEnv, c.Env)
	}

	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := c.Resources.Requests[res]; !ok || q.IsZero() {
			t.Errorf("no %s request", res)
		}
		if q, ok := c.Resources.Limits[res]; !ok || q.IsZero() {
			t.Errorf("no %s limit", res)
		}
	}
	if dep.Spec.Template.Spec.ServiceAccountName == "" {
		t.Errorf("no serviceAccountName")
	}
}

// checkArgs checks the manager's flags against the settings.
func checkArgs(t *testing.T, dep *appsv1.Deployment, c corev1.Container, want expectations) {
	t.Helper()
	args := append(slices.Clone(c.Command), c.Args...)
	has := func(flags ...string) bool {
		return slices.ContainsFunc(flags, func(f string) bool { return slices.Contains(args, f) })
	}

	if want.leaderElection != has("--leader-elect", "--leader-elect=true") {
		t.Errorf("leader election: want %v, args %q", want.leaderElection, args)
	}
	if want.leaderElection && dep.Spec.Replicas != nil && *dep.Spec.Replicas < 1 {
		t.Errorf("replicas %d", *dep.Spec.Replicas)
	}
	bind := fmt.Sprintf("--metrics-bind-address=:%d", want.metricsPort)
	switch want.metrics {
	case "secure":
		if !has(bind) || has("--metrics-secure=false") {
			t.Errorf("secure metrics on :%d: args %q", want.metricsPort, args)
		}
	case "insecure":
		if !has(bind) || !has("--metrics-secure=false") {
			t.Errorf("plain metrics on :%d: args %q", want.metricsPort, args)
		}
	case "off":
		if hasPrefix(args, "--metrics-bind-address=") && !has("--metrics-bind-address=0") {
			t.Errorf("metrics off: args %q", args)
		}
	}
	if !has(fmt.Sprintf("--health-probe-bind-address=:%d", healthPort)) {
		t.Errorf("health probes not on :%d: args %q", healthPort, args)
	}
	switch {
	case want.authorization == "" && hasPrefix(args, "--subscription-authorization="):
		t.Errorf("--subscription-authorization set: args %q", args)
	case want.authorization != "" && !has("--subscription-authorization="+want.authorization):
		t.Errorf("want --subscription-authorization=%s: args %q", want.authorization, args)
	}
}

func checkProbes(t *testing.T, c corev1.Container) {
	t.Helper()
	for name, probe := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if probe == nil || probe.HTTPGet == nil {
			t.Errorf("no HTTP probe for %s", name)
			continue
		}
		if probe.HTTPGet.Path != name || portNumber(c, probe.HTTPGet.Port) != healthPort {
			t.Errorf("probe %s on %s port %s", name, probe.HTTPGet.Path, probe.HTTPGet.Port.String())
		}
	}
}

// checkSecurityContext spells out the restricted Pod Security Standard (checkPodSecurity has
// the API server judge it too).
func checkSecurityContext(t *testing.T, pod *corev1.PodSecurityContext, sc *corev1.SecurityContext) {
	t.Helper()
	dropsAll := func(c *corev1.Capabilities) bool {
		return c != nil && slices.Equal(c.Drop, []corev1.Capability{"ALL"}) && len(c.Add) == 0
	}
	switch {
	case pod == nil || pod.RunAsNonRoot == nil || !*pod.RunAsNonRoot:
		t.Errorf("pod securityContext.runAsNonRoot is not true")
	case pod.SeccompProfile == nil || pod.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Errorf("pod seccompProfile is not RuntimeDefault")
	case sc == nil:
		t.Errorf("manager has no securityContext")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("readOnlyRootFilesystem is not true")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("allowPrivilegeEscalation is not false")
	case !dropsAll(sc.Capabilities):
		t.Errorf("capabilities are not drop [ALL]: %+v", sc.Capabilities)
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
		t.Errorf("container runAsNonRoot is not true")
	case sc.Privileged != nil && *sc.Privileged:
		t.Errorf("privileged")
	}
}

// grants collects the rules bound to the Deployment's ServiceAccount: cluster-wide (through
// ClusterRoleBindings) and per namespace (through RoleBindings).
func grants(t *testing.T, objs []*unstructured.Unstructured, dep *appsv1.Deployment) (
	cluster []rbacv1.PolicyRule, namespaced map[string][]rbacv1.PolicyRule) {
	t.Helper()
	sa := dep.Spec.Template.Spec.ServiceAccountName
	isManager := func(subjects []rbacv1.Subject) bool {
		return slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
			return s.Kind == rbacv1.ServiceAccountKind && s.Name == sa && s.Namespace == dep.Namespace
		})
	}
	rules := func(kind, namespace, name string) []rbacv1.PolicyRule {
		for _, o := range only(objs, kind) {
			if o.GetName() == name && o.GetNamespace() == namespace {
				if kind == "Role" {
					return convert[rbacv1.Role](t, o).Rules
				}
				return convert[rbacv1.ClusterRole](t, o).Rules
			}
		}
		t.Errorf("%s %s/%s is bound to the manager but not part of the installation", kind, namespace, name)
		return nil
	}
	for _, o := range only(objs, "ClusterRoleBinding") {
		if b := convert[rbacv1.ClusterRoleBinding](t, o); isManager(b.Subjects) {
			cluster = append(cluster, rules(b.RoleRef.Kind, "", b.RoleRef.Name)...)
		}
	}
	namespaced = map[string][]rbacv1.PolicyRule{}
	for _, o := range only(objs, "RoleBinding") {
		if b := convert[rbacv1.RoleBinding](t, o); isManager(b.Subjects) {
			ns := ""
			if b.RoleRef.Kind == "Role" {
				ns = b.Namespace
			}
			namespaced[b.Namespace] = append(namespaced[b.Namespace], rules(b.RoleRef.Kind, ns, b.RoleRef.Name)...)
		}
	}
	return cluster, namespaced
}

func allows(rules []rbacv1.PolicyRule, group, resource, verb string) bool {
	in := func(list []string, v string) bool { return slices.Contains(list, v) || slices.Contains(list, "*") }
	return slices.ContainsFunc(rules, func(r rbacv1.PolicyRule) bool {
		return in(r.APIGroups, group) && in(r.Resources, resource) && in(r.Verbs, verb)
	})
}

func wildcardWatch(rules []rbacv1.PolicyRule) bool {
	return slices.ContainsFunc(rules, func(r rbacv1.PolicyRule) bool {
		return slices.Contains(r.Resources, "*") && (slices.Contains(r.Verbs, "list") || slices.Contains(r.Verbs, "*"))
	})
}

// managerNamespace is the namespace controller-gen writes for RBAC markers that name the
// manager's own namespace (kustomize and the chart move it to the real one).
const managerNamespace = "system"

// generatedRBAC reads role.yaml, generated by controller-gen from the code's RBAC markers: the
// rules of its ClusterRole, and those of its Roles by namespace.
func generatedRBAC(t *testing.T, role []byte) (
	cluster []rbacv1.PolicyRule, namespaced map[string][]rbacv1.PolicyRule) {
	t.Helper()
	objs, err := decodeManifests(role)
	if err != nil {
		t.Fatalf("role.yaml: %v", err)
	}
	namespaced = map[string][]rbacv1.PolicyRule{}
	for _, o := range objs {
		switch o.GetKind() {
		case "ClusterRole":
			cluster = append(cluster, convert[rbacv1.ClusterRole](t, o).Rules...)
		case "Role":
			r := convert[rbacv1.Role](t, o)
			namespaced[r.Namespace] = append(namespaced[r.Namespace], r.Rules...)
		default:
			t.Fatalf("role.yaml holds a %s", describe(o))
		}
	}
	if len(cluster) == 0 {
		t.Fatalf("role.yaml has no ClusterRole rules")
	}
	return cluster, namespaced
}

// roleYAML is config/rbac/role.yaml, unless the installation was rendered from another.
func roleYAML(t *testing.T, want expectations) []byte {
	t.Helper()
	if want.roleYAML != nil {
		return want.roleYAML
	}
	data, err := os.ReadFile(repo("config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// requireRules fails for every permission of rules that granted does not allow. Rules on
// every resource are skipped: the watch rule may be narrowed.
func requireRules(t *testing.T, rules, granted []rbacv1.PolicyRule, where string) {
	t.Helper()
	for _, r := range rules {
		if slices.Contains(r.Resources, "*") {
			continue
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					if !allows(granted, g, res, v) {
						t.Errorf("the manager may not %s %s.%s %s (config/rbac/role.yaml asks for it)", v, res, g, where)
					}
				}
			}
		}
	}
}

func checkRBAC(t *testing.T, objs []*unstructured.Unstructured, dep *appsv1.Deployment, want expectations) {
	t.Helper()
	cluster, namespaced := grants(t, objs, dep)

	// Everything the code's RBAC markers ask for, except that the watch rule may be narrowed:
	// the ClusterRole's rules cluster-wide, a Role's in its namespace ("system" is the
	// manager's own).
	generatedCluster, generatedNamespaced := generatedRBAC(t, roleYAML(t, want))
	requireRules(t, generatedCluster, cluster, "cluster-wide")
	for ns, rules := range generatedNamespaced {
		if ns == managerNamespace {
			ns = dep.Namespace
		}
		requireRules(t, rules, append(slices.Clone(cluster), namespaced[ns]...), "in namespace "+ns)
	}
	if got := wildcardWatch(cluster); got != want.clusterWideWatch {
		t.Errorf("list/watch on */* granted: %v, want %v", got, want.clusterWideWatch)
	}
	for ns, rules := range namespaced {
		if wildcardWatch(rules) {
			t.Errorf("list/watch on * granted in namespace %s", ns)
		}
	}

	// Leases: for leader election and for the member and claim Leases of --sharding=Leases,
	// granted by the code's markers whatever the mode.
	leases := allows(namespaced[dep.Namespace], "coordination.k8s.io", "leases", "update") &&
		allows(namespaced[dep.Namespace], "coordination.k8s.io", "leases", "create") &&
		allows(namespaced[dep.Namespace], "coordination.k8s.io", "leases", "delete")
	if !leases {
		t.Errorf("leases in %s not granted (leader election %v)", dep.Namespace, want.leaderElection)
	}

	metricsAuth := allows(cluster, "authentication.k8s.io", "tokenreviews", "create") &&
		allows(cluster, "authorization.k8s.io", "subjectaccessreviews", "create")
	if want.metrics == "secure" && !metricsAuth {
		t.Errorf("secure metrics need TokenReviews and SubjectAccessReviews")
	}
	if want.metrics != "secure" && allows(cluster, "authentication.k8s.io", "tokenreviews", "create") {
		t.Errorf("TokenReviews granted without secure metrics")
	}
	if want.metrics == "secure" {
		reader := slices.ContainsFunc(only(objs, "ClusterRole"), func(o *unstructured.Unstructured) bool {
			return slices.ContainsFunc(convert[rbacv1.ClusterRole](t, o).Rules, func(r rbacv1.PolicyRule) bool {
				return slices.Contains(r.NonResourceURLs, "/metrics") && slices.Contains(r.Verbs, "get")
			})
		})
		if !reader {
			t.Errorf("no ClusterRole to bind scrapers to (get /metrics)")
		}
	}
}

func checkMetricsService(t *testing.T, objs []*unstructured.Unstructured, dep *appsv1.Deployment, want expectations) {
	t.Helper()
	c := managerContainer(t, dep)
	podLabels := labels.Set(dep.Spec.Template.Labels)
	var found bool
	for _, o := range only(objs, "Service") {
		svc := convert[corev1.Service](t, o)
		if svc.Namespace != dep.Namespace || !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
			continue
		}
		for _, p := range svc.Spec.Ports {
			if portNumber(c, p.TargetPort) == want.metricsPort {
				found = true
			}
		}
	}
	if found != (want.metrics != "off") {
		t.Errorf("a Service for the metrics port %d: %v, metrics %s", want.metricsPort, found, want.metrics)
	}
}

// checkPodSecurity creates (dry-run) the Deployment's Pod in a namespace that enforces the
// restricted Pod Security Standard: the API server's PodSecurity admission judges it.
func checkPodSecurity(t *testing.T, dep *appsv1.Deployment) {
	t.Helper()
	pod := &corev1.Pod{ObjectMeta: dep.Spec.Template.ObjectMeta, Spec: dep.Spec.Template.Spec}
	pod.Name = dep.Name + "-pod-security"
	pod.Namespace = restrictedNamespace(t)
	if err := k8s.Create(context.Background(), pod, client.DryRunAll); err != nil {
		t.Errorf("the manager Pod is not admitted under the restricted Pod Security Standard: %v", err)
	}
}

// restrictedNamespace returns a namespace that enforces the restricted Pod Security Standard.
func restrictedNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{}
	ns.Name = "pod-security-restricted"
	ns.Labels = map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}
	err := k8s.Create(context.Background(), ns)
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	return ns.Name
}

// The Pod Security check above must be able to fail: an ordinary Pod is refused.
func TestPodSecurityAdmissionIsEnforced(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	pod.Name = "not-restricted"
	pod.Namespace = restrictedNamespace(t)
	err := k8s.Create(context.Background(), pod, client.DryRunAll)
	if err == nil || !strings.Contains(err.Error(), "restricted") {
		t.Fatalf("a Pod without a securityContext was not refused by PodSecurity admission: %v", err)
	}
}
