package controller_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

// restrictedUser is who the operator runs as in this file, through impersonation by the
// admin of envtest.
const restrictedUser = "restricted-operator"

// operatorRules is what config/rbac/role.yaml (generated from the reconciler's markers)
// grants, without its wildcard rule for watched resources, plus list and watch on
// ConfigMaps: the shipped role must be enough for the operator's own work.
func operatorRules(t *testing.T) []rbacv1.PolicyRule {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(data, role); err != nil {
		t.Fatalf("role.yaml: %v", err)
	}
	var rules []rbacv1.PolicyRule
	for _, rule := range role.Rules {
		if !slices.Contains(rule.Resources, rbacv1.ResourceAll) {
			rules = append(rules, rule)
		}
	}
	if len(rules) == 0 || len(rules) == len(role.Rules) {
		t.Fatalf("role.yaml: expected rules of the operator and one wildcard rule, got %v", role.Rules)
	}
	return append(rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"},
		Verbs: []string{"list", "watch"}})
}

// mayList asks the API server's authorizer whether the restricted user may list resource
// in ns.
func mayList(g Gomega, resource, ns string) bool {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:               restrictedUser,
		Groups:             []string{"system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "list", Resource: resource},
	}}
	g.Expect(k8s.Create(context.Background(), sar)).To(Succeed())
	return sar.Status.Allowed
}

func TestForbiddenUntilRBACIsGranted(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)

	// Registered before the operator starts, so removed after it stops.
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: restrictedUser}, Rules: operatorRules(t)}
	create(t, role)
	create(t, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: restrictedUser},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: restrictedUser}},
	})
	// The binding reaches the authorizer through its informers: wait, and make sure the
	// API server enforces RBAC at all (with AlwaysAllow this test could not tell anything).
	g.Eventually(func(g Gomega) bool { return mayList(g, "configmaps", ns) }).WithTimeout(10 * time.Second).Should(BeTrue())
	g.Expect(mayList(g, "serviceaccounts", ns)).To(BeFalse(), "the API server must authorize with RBAC")

	restricted := rest.CopyConfig(cfg)
	restricted.Impersonate = rest.ImpersonationConfig{UserName: restrictedUser}
	startOperatorAs(t, restricted)
	sk := newSink(t)

	// ServiceAccounts, because the operator needs nothing of them itself (Secrets it
	// reads for sinks).
	denied := subscription(ns, "serviceaccounts", sk.URL)
	denied.Spec.Resource = notifyv1.ResourceRef{Version: "v1", Resource: "serviceaccounts"}
	create(t, denied)
	configMaps := subscription(ns, "configmaps", sk.URL)
	create(t, configMaps)

	cond := waitReason(t, denied, notifyv1.ReasonForbidden, 20*time.Second)
	g.Expect(cond.Status).To(Equal(metav1.ConditionFalse))
	g.Expect(cond.Message).To(And(ContainSubstring("v1/serviceaccounts"), ContainSubstring("namespace "+ns)))
	// The same operator works where it is allowed to.
	waitReason(t, configMaps, notifyv1.ReasonWatching, 20*time.Second)
	create(t, configMap(ns, "allowed", nil))
	g.Eventually(sk.summary).WithTimeout(10 * time.Second).Should(ContainElement(
		"added /api/v1/namespaces/" + ns + "/configmaps/allowed"))

	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(role), role)).To(Succeed())
	role.Rules = append(role.Rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"serviceaccounts"},
		Verbs: []string{"list", "watch"}})
	g.Expect(k8s.Update(ctx, role)).To(Succeed())
	granted := time.Now()
	// The informer's reflector retries with backoff (capped near 30s), not at once.
	waitReason(t, denied, notifyv1.ReasonWatching, 60*time.Second)
	t.Logf("Watching %v after the grant", time.Since(granted).Round(time.Millisecond))

	create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "after-grant"}})
	g.Eventually(sk.summary).WithTimeout(10 * time.Second).Should(ContainElement(
		"added /api/v1/namespaces/" + ns + "/serviceaccounts/after-grant"))
}
