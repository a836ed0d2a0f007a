package v1alpha1_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

// kubectl runs the real kubectl against the test API server.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	kubeconfig, err := testenv.WriteKubeconfig(env, t.TempDir())
	if err != nil {
		t.Fatalf("kubeconfig: %v", err)
	}
	out, err := exec.Command("kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestKubectlShowsPrinterColumnsShortNameAndCategory(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ws := &notifyv1.WatchSubscription{
		ObjectMeta: metav1.ObjectMeta{Name: "printer", Namespace: "default"},
		Spec: notifyv1.WatchSubscriptionSpec{
			Resource: notifyv1.ResourceRef{Group: "apps", Version: "v1", Resource: "deployments"},
			Sink:     &notifyv1.Sink{Webhook: &notifyv1.WebhookSink{URL: "http://127.0.0.1:9/hook"}},
		},
	}
	g.Expect(k8s.Create(ctx, ws)).To(Succeed())
	t.Cleanup(func() { _ = k8s.Delete(ctx, ws) })

	ws.Status.Resource = "apps/v1/deployments"
	ws.Status.Sink = "webhook"
	meta.SetStatusCondition(&ws.Status.Conditions, metav1.Condition{
		Type: notifyv1.ConditionReady, Status: metav1.ConditionFalse,
		Reason: notifyv1.ReasonDeliveryFailing, Message: "sink answered 503",
	})
	g.Expect(k8s.Status().Update(ctx, ws)).To(Succeed())

	wide := kubectl(t, "get", "wsub", "-n", "default", "-o", "wide")
	lines := strings.Split(strings.TrimSpace(wide), "\n")
	g.Expect(lines).To(HaveLen(2), wide)
	g.Expect(strings.Fields(lines[0])).To(Equal([]string{"NAME", "RESOURCE", "SINK", "READY", "REASON", "AGE", "REPLICA", "MESSAGE"}))
	ws.Status.Replica = "manager-0"
	g.Expect(k8s.Status().Update(ctx, ws)).To(Succeed())
	wide = kubectl(t, "get", "wsub", "-n", "default", "-o", "wide")
	lines = strings.Split(strings.TrimSpace(wide), "\n")
	g.Expect(lines[1]).To(MatchRegexp(
		`^printer\s+apps/v1/deployments\s+webhook\s+False\s+DeliveryFailing\s+\S+\s+manager-0\s+sink answered 503$`))

	narrow := kubectl(t, "get", "notifier", "-n", "default")
	g.Expect(narrow).NotTo(ContainSubstring("MESSAGE"), "message column must be -o wide only")
	// The category holds the sink kinds too, so kubectl names each object's kind.
	g.Expect(narrow).To(MatchRegexp(`(?m)^watchsubscription\.notify\.dynamicnotifier\.io/printer\s+apps/v1/deployments\s+webhook\s+False\s+DeliveryFailing\s+\S+$`), "category lookup")
}
