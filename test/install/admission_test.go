package install

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

// defaultCondition is the match condition of config/admission/policy.yaml that lets the
// namespace's default ServiceAccount through; the chart leaves it out on request.
const defaultCondition = "default-serviceaccount-always-allowed"

// admissionPolicy returns the one ValidatingAdmissionPolicy of an installation and the one
// binding that binds it, with Deny, to every namespace.
func admissionPolicy(t *testing.T, objs []*unstructured.Unstructured) (
	*admissionregistrationv1.ValidatingAdmissionPolicy, *admissionregistrationv1.ValidatingAdmissionPolicyBinding) {
	t.Helper()
	policies, bindings := only(objs, "ValidatingAdmissionPolicy"), only(objs, "ValidatingAdmissionPolicyBinding")
	if len(policies) != 1 || len(bindings) != 1 {
		t.Fatalf("%d ValidatingAdmissionPolicies and %d bindings, want 1 of each", len(policies), len(bindings))
	}
	for _, o := range append(policies, bindings...) {
		if o.GetNamespace() != "" {
			t.Errorf("%s has a namespace, but is cluster-scoped", describe(o))
		}
	}
	policy := convert[admissionregistrationv1.ValidatingAdmissionPolicy](t, policies[0])
	binding := convert[admissionregistrationv1.ValidatingAdmissionPolicyBinding](t, bindings[0])
	if binding.Spec.PolicyName != policy.Name {
		t.Errorf("the binding binds %q, not the policy %q", binding.Spec.PolicyName, policy.Name)
	}
	deny := []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}
	if !slices.Equal(binding.Spec.ValidationActions, deny) ||
		binding.Spec.ParamRef != nil || binding.Spec.MatchResources != nil {
		t.Errorf("the binding is not Deny in every namespace: %+v", binding.Spec)
	}
	return policy, binding
}

// policyFile is config/admission/policy.yaml.
func policyFile(t *testing.T) *admissionregistrationv1.ValidatingAdmissionPolicy {
	t.Helper()
	data, err := os.ReadFile(repo("config", "admission", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{}
	if err := yaml.UnmarshalStrict(data, policy); err != nil {
		t.Fatalf("config/admission/policy.yaml: %v", err)
	}
	return policy
}

// The bundle and the chart carry config/admission/policy.yaml's policy, spec for spec; the
// chart and config/overlays/strict-serviceaccounts without the default ServiceAccount's
// exception when asked, the chart none when disabled.
func TestAdmissionPolicyIsTheSameInBundleAndChart(t *testing.T) {
	want := policyFile(t)
	if !slices.ContainsFunc(want.Spec.MatchConditions, func(c admissionregistrationv1.MatchCondition) bool {
		return c.Name == defaultCondition
	}) {
		t.Fatalf("config/admission/policy.yaml has no match condition %s", defaultCondition)
	}
	bundle, _ := admissionPolicy(t, kustomizeBuild(t, repo("config", "default")))
	if !equality.Semantic.DeepEqual(bundle.Spec, want.Spec) {
		t.Errorf("config/default's policy differs from config/admission/policy.yaml")
	}

	objs, err := renderChart(t, "")
	if err != nil {
		t.Fatal(err)
	}
	chart, _ := admissionPolicy(t, objs)
	if !equality.Semantic.DeepEqual(chart.Spec, want.Spec) {
		t.Errorf("the chart's policy differs from config/admission/policy.yaml (make helm-sync)")
	}

	objs, err = renderChart(t, `{admissionPolicy: {allowDefaultServiceAccount: false}}`)
	if err != nil {
		t.Fatal(err)
	}
	strict, _ := admissionPolicy(t, objs)
	wantStrict := want.Spec.DeepCopy()
	wantStrict.MatchConditions = slices.DeleteFunc(wantStrict.MatchConditions,
		func(c admissionregistrationv1.MatchCondition) bool { return c.Name == defaultCondition })
	if !equality.Semantic.DeepEqual(strict.Spec, *wantStrict) {
		t.Errorf("with allowDefaultServiceAccount false, the chart's policy is not "+
			"config/admission/policy.yaml without %s", defaultCondition)
	}

	overlay, _ := admissionPolicy(t, kustomizeBuild(t, repo("config", "overlays", "strict-serviceaccounts")))
	if !equality.Semantic.DeepEqual(overlay.Spec, *wantStrict) {
		t.Errorf("config/overlays/strict-serviceaccounts' policy is not config/admission/policy.yaml without %s",
			defaultCondition)
	}

	objs, err = renderChart(t, `{admissionPolicy: {enabled: false}}`)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(only(objs, "ValidatingAdmissionPolicy")) + len(only(objs, "ValidatingAdmissionPolicyBinding")); n != 0 {
		t.Errorf("%d admission policy objects rendered with admissionPolicy.enabled false", n)
	}
}

// The policy as shipped, against a real API server: a WatchSubscription may name only a
// ServiceAccount its author may impersonate. alice may create subscriptions and impersonate
// robot; bob may create subscriptions only; operator may only write their status, as the
// operator does.
func TestAdmissionPolicyNeedsImpersonationOfTheServiceAccount(t *testing.T) {
	bundle := kustomizeBuild(t, repo("config", "default"))
	chart, err := renderChart(t, "")
	if err != nil {
		t.Fatal(err)
	}
	strict, err := renderChart(t, `{admissionPolicy: {allowDefaultServiceAccount: false}}`)
	if err != nil {
		t.Fatal(err)
	}
	strictBundle := kustomizeBuild(t, repo("config", "overlays", "strict-serviceaccounts"))
	users := tenancyUsers(t)
	cases := []struct {
		name           string
		objs           []*unstructured.Unstructured
		defaultAllowed bool
	}{
		{"kustomize", bundle, true},
		{"helm", chart, true},
		{"helm without the default ServiceAccount allowed", strict, false},
		{"kustomize strict-serviceaccounts overlay", strictBundle, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			policy, binding := admissionPolicy(t, tc.objs)
			checkImpersonationPolicy(t, users, policy, binding, tc.defaultAllowed)
		})
	}
}

type tenancyClients struct{ alice, bob, operator client.Client }

func tenancyUsers(t *testing.T) tenancyClients {
	t.Helper()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = notifyv1.AddToScheme(scheme)
	user := func(name string) client.Client {
		u, err := testEnv.AddUser(envtest.User{Name: name}, nil)
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.New(u.Config(), client.Options{Scheme: scheme})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return tenancyClients{alice: user("alice"), bob: user("bob"), operator: user("operator")}
}

func checkImpersonationPolicy(t *testing.T, users tenancyClients,
	policy *admissionregistrationv1.ValidatingAdmissionPolicy,
	binding *admissionregistrationv1.ValidatingAdmissionPolicyBinding, defaultAllowed bool) {
	ctx := context.Background()
	ns := tenancyNamespace(t)
	subscription := func(name, serviceAccount string) *notifyv1.WatchSubscription {
		return &notifyv1.WatchSubscription{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: notifyv1.WatchSubscriptionSpec{
				Resource:           notifyv1.ResourceRef{Version: "v1", Resource: "configmaps"},
				ServiceAccountName: serviceAccount,
				Sink:               &notifyv1.Sink{Log: &notifyv1.LogSink{}},
			},
		}
	}
	denial := func(user, serviceAccount string) string {
		return fmt.Sprintf("spec.serviceAccountName: user %s may not impersonate ServiceAccount %s/%s",
			user, ns, serviceAccount)
	}
	// probe is bob naming robot, without storing anything.
	probe := func() error { return users.bob.Create(ctx, subscription("probe", "robot"), client.DryRunAll) }

	// RBAC alone lets bob name robot: what the policy is for.
	if err := probe(); err != nil {
		t.Fatalf("without the policy, bob may not create a subscription naming robot: %v", err)
	}

	for _, obj := range []client.Object{policy.DeepCopy(), binding.DeepCopy()} {
		if err := k8s.Create(ctx, obj); err != nil {
			t.Fatalf("%s: %v", obj.GetName(), err)
		}
	}
	defer removePolicy(t, policy, binding, probe)
	eventually(t, 30*time.Second, "the policy denies bob naming robot", func() error {
		err := probe()
		if err == nil || !strings.Contains(err.Error(), denial("bob", "robot")) {
			return fmt.Errorf("want a denial %q, got %v", denial("bob", "robot"), err)
		}
		return nil
	})

	mustDeny := func(err error, user, serviceAccount, what string) {
		t.Helper()
		switch {
		case err == nil:
			t.Errorf("%s: admitted", what)
		case !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), denial(user, serviceAccount)) ||
			!strings.Contains(err.Error(), "ValidatingAdmissionPolicy '"+policy.Name+"'"):
			t.Errorf("%s: want 403 from %s with %q, got %v", what, policy.Name, denial(user, serviceAccount), err)
		}
	}
	mustAdmit := func(err error, what string) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
	patch := func(c client.Client, name string, change func(*notifyv1.WatchSubscription)) error {
		ws := &notifyv1.WatchSubscription{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ws); err != nil {
			t.Fatalf("get %s: %v", name, err)
		}
		before := ws.DeepCopy()
		change(ws)
		return c.Patch(ctx, ws, client.MergeFrom(before))
	}
	setServiceAccount := func(name string) func(*notifyv1.WatchSubscription) {
		return func(ws *notifyv1.WatchSubscription) { ws.Spec.ServiceAccountName = name }
	}

	// Creating.
	mustAdmit(users.alice.Create(ctx, subscription("by-alice", "robot")), "alice names robot")
	mustDeny(users.bob.Create(ctx, subscription("by-bob", "robot")), "bob", "robot", "bob names robot")
	if err := k8s.Create(ctx, subscription("by-admin", "")); err != nil {
		t.Fatalf("the admin (system:masters) creates a subscription without serviceAccountName: %v", err)
	}
	if defaultAllowed {
		mustAdmit(users.bob.Create(ctx, subscription("bob-unnamed", "")), "bob names no ServiceAccount")
		mustAdmit(users.bob.Create(ctx, subscription("bob-default", "default")), "bob names default")
		mustAdmit(users.alice.Create(ctx, subscription("alice-unnamed", "")), "alice names no ServiceAccount")
	} else {
		mustDeny(users.bob.Create(ctx, subscription("bob-unnamed", "")), "bob", "default", "bob names no ServiceAccount")
		mustDeny(users.bob.Create(ctx, subscription("bob-default", "default")), "bob", "default", "bob names default")
		mustDeny(users.alice.Create(ctx, subscription("alice-unnamed", "")), "alice", "default",
			"alice names no ServiceAccount")
	}

	// Updating without changing the ServiceAccount: not checked, whoever names which.
	mustAdmit(patch(users.bob, "by-alice", func(ws *notifyv1.WatchSubscription) { ws.Spec.Suspend = true }),
		"bob suspends alice's subscription, which names robot")
	mustAdmit(patch(users.bob, "by-admin", setServiceAccount("default")),
		`bob spells out "default" on a subscription without serviceAccountName (the same account)`)
	// The operator's status writes (it may not impersonate robot), to a subscription naming robot.
	ws := &notifyv1.WatchSubscription{}
	if err := users.operator.Get(ctx, client.ObjectKey{Namespace: ns, Name: "by-alice"}, ws); err != nil {
		t.Fatal(err)
	}
	before := ws.DeepCopy()
	ws.Status.EventsObserved = 7
	mustAdmit(users.operator.Status().Patch(ctx, ws, client.MergeFrom(before)),
		"the operator writes the status of alice's subscription, which names robot")

	// Changing the ServiceAccount.
	mustDeny(patch(users.bob, "by-admin", setServiceAccount("robot")), "bob", "robot", "bob changes default to robot")
	mustAdmit(patch(users.alice, "by-admin", setServiceAccount("robot")), "alice changes default to robot")
	if defaultAllowed {
		mustAdmit(patch(users.bob, "by-alice", setServiceAccount("")), "bob changes robot to default")
	} else {
		mustDeny(patch(users.bob, "by-alice", setServiceAccount("")), "bob", "default", "bob changes robot to default")
	}

	// What was admitted was stored.
	byAlice, byAdmin := &notifyv1.WatchSubscription{}, &notifyv1.WatchSubscription{}
	for name, ws := range map[string]*notifyv1.WatchSubscription{"by-alice": byAlice, "by-admin": byAdmin} {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ws); err != nil {
			t.Fatal(err)
		}
	}
	if !byAlice.Spec.Suspend || byAlice.Status.EventsObserved != 7 {
		t.Errorf("by-alice: suspend %v, eventsObserved %d; want bob's and the operator's writes",
			byAlice.Spec.Suspend, byAlice.Status.EventsObserved)
	}
	if byAdmin.Spec.ServiceAccountName != "robot" {
		t.Errorf("by-admin names %q, want robot (alice's change)", byAdmin.Spec.ServiceAccountName)
	}
}

// tenancyNamespace creates a namespace with the ServiceAccount robot, where alice and bob may
// manage WatchSubscriptions, alice may impersonate robot and operator may read subscriptions
// and write their status; it returns once RBAC says so.
func tenancyNamespace(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "impersonation-"}}
	if err := k8s.Create(ctx, nsObj); err != nil {
		t.Fatal(err)
	}
	ns := nsObj.Name
	role := func(name string, rules ...rbacv1.PolicyRule) *rbacv1.Role {
		return &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Rules: rules}
	}
	binding := func(role string, users ...string) *rbacv1.RoleBinding {
		b := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: role},
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role}}
		for _, u := range users {
			b.Subjects = append(b.Subjects, rbacv1.Subject{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: u})
		}
		return b
	}
	group := notifyv1.GroupVersion.Group
	for _, obj := range []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "robot"}},
		role("subscriptions", rbacv1.PolicyRule{APIGroups: []string{group}, Resources: []string{"watchsubscriptions"},
			Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}}),
		binding("subscriptions", "alice", "bob"),
		role("impersonate-robot", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"serviceaccounts"},
			ResourceNames: []string{"robot"}, Verbs: []string{"impersonate"}}),
		binding("impersonate-robot", "alice"),
		role("status",
			rbacv1.PolicyRule{APIGroups: []string{group}, Resources: []string{"watchsubscriptions"}, Verbs: []string{"get"}},
			rbacv1.PolicyRule{APIGroups: []string{group}, Resources: []string{"watchsubscriptions/status"},
				Verbs: []string{"patch", "update"}}),
		binding("status", "operator"),
	} {
		if err := k8s.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}

	type access struct {
		user string
		attr authorizationv1.ResourceAttributes
		want bool
	}
	impersonate := func(sa string) authorizationv1.ResourceAttributes {
		return authorizationv1.ResourceAttributes{Namespace: ns, Resource: "serviceaccounts", Name: sa, Verb: "impersonate"}
	}
	create := authorizationv1.ResourceAttributes{Namespace: ns, Group: group, Resource: "watchsubscriptions",
		Verb: "create"}
	status := authorizationv1.ResourceAttributes{Namespace: ns, Group: group, Resource: "watchsubscriptions",
		Subresource: "status", Verb: "patch"}
	for _, a := range []access{
		{"alice", create, true}, {"bob", create, true},
		{"alice", impersonate("robot"), true}, {"bob", impersonate("robot"), false},
		{"alice", impersonate("default"), false}, {"bob", impersonate("default"), false},
		{"operator", status, true}, {"operator", impersonate("robot"), false},
	} {
		what := fmt.Sprintf("RBAC: %s may %s %s/%s: %v", a.user, a.attr.Verb, a.attr.Resource, a.attr.Name, a.want)
		eventually(t, 10*time.Second, what, func() error {
			review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: a.user, ResourceAttributes: &a.attr}}
			if err := k8s.Create(ctx, review); err != nil {
				return err
			}
			if review.Status.Allowed != a.want {
				return fmt.Errorf("allowed %v", review.Status.Allowed)
			}
			return nil
		})
	}
	return ns
}

// removePolicy deletes the policy and its binding and waits until probe, which the policy
// denied, is admitted again: the next test starts without it.
func removePolicy(t *testing.T, policy *admissionregistrationv1.ValidatingAdmissionPolicy,
	binding *admissionregistrationv1.ValidatingAdmissionPolicyBinding, probe func() error) {
	t.Helper()
	for _, obj := range []client.Object{binding.DeepCopy(), policy.DeepCopy()} {
		if err := k8s.Delete(context.Background(), obj); err != nil {
			t.Errorf("%s: %v", obj.GetName(), err)
		}
	}
	eventually(t, 30*time.Second, "the removed policy no longer denies", probe)
}

// eventually calls f every 100ms until it returns nil, and fails the test after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
