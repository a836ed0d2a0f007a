package controller_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/operator"
)

func TestSubscriptionActsAsItsServiceAccount(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	opts := testOptions()
	opts.Authorization = operator.AuthorizationSubjectAccessReview
	opts.AuthorizationInterval = 300 * time.Millisecond
	startOperatorWith(t, cfg, opts)
	tenant, other := newNamespace(t), newNamespace(t)
	sk := newSink(t)
	ws := subscription(tenant, "peek", sk.URL)
	ws.Spec.Namespaces = []notifyv1.NamespaceName{notifyv1.NamespaceName(other)}
	create(t, ws)
	cond := waitReason(t, ws, notifyv1.ReasonForbidden, 10*time.Second)
	g.Expect(cond.Message).To(ContainSubstring(fmt.Sprintf("ServiceAccount %s/default may not list configmaps in namespace %s", tenant, other)))
	create(t, configMap(other, "while-denied", nil))

	// The owner of the other namespace grants read access to the tenant's ServiceAccount.
	create(t, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: other, Name: "read-configmaps"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"list", "watch"}}}})
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: other, Name: "tenant-reads"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "read-configmaps"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: tenant, Name: "default"}}}
	create(t, binding)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	create(t, configMap(other, "granted", nil))
	g.Eventually(sk.summary).WithTimeout(10*time.Second).Should(Equal([]string{
		"added /api/v1/namespaces/" + other + "/configmaps/granted"}), "nothing from while it was denied")

	// Revoked: the subscription stops within the interval.
	g.Expect(k8s.Delete(ctx, binding)).To(Succeed())
	waitReason(t, ws, notifyv1.ReasonForbidden, 10*time.Second)
	create(t, configMap(other, "after-revoke", nil))
	g.Consistently(sk.summary).WithTimeout(500 * time.Millisecond).Should(HaveLen(1))
}

// TestSinkSecretsAreReadAsTheServiceAccount: the operator may read every Secret, the author of
// a subscription may not. A Secret the subscription's ServiceAccount may not get is neither
// read nor sent (Forbidden, naming it); the same for a Service sink in another namespace.
func TestSinkSecretsAreReadAsTheServiceAccount(t *testing.T) {
	g := NewWithT(t)
	opts := testOptions()
	opts.AuthorizationInterval = 300 * time.Millisecond
	startOperatorWith(t, cfg, opts)
	ns, elsewhere := newNamespace(t), newNamespace(t)
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "team-token"},
		StringData: map[string]string{"Authorization": "Bearer not-yours"}})
	sk := newSink(t)
	ws := subscription(ns, "exfiltrate", sk.URL)
	ws.Spec.Sink.Webhook.HeadersFrom = &notifyv1.HeadersFrom{SecretRef: notifyv1.LocalSecretReference{Name: "team-token"}}
	create(t, ws)
	cond := waitReason(t, ws, notifyv1.ReasonForbidden, 10*time.Second)
	g.Expect(cond.Message).To(Equal(fmt.Sprintf("spec.sink.headersFrom.secretRef: ServiceAccount %s/default may not "+
		"get secrets team-token in namespace %s", ns, ns)))
	create(t, configMap(ns, "while-forbidden", nil))

	grantSecrets(t, ns, "team-token")
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	create(t, configMap(ns, "granted", nil))
	g.Eventually(sk.summary).WithTimeout(10*time.Second).Should(Equal([]string{
		"added /api/v1/namespaces/" + ns + "/configmaps/granted"}), "nothing was sent while it was forbidden")
	g.Expect(sk.Events()[0].Header.Get("Authorization")).To(Equal("Bearer not-yours"))

	svc := &notifyv1.WatchSubscription{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "other-service"},
		Spec: notifyv1.WatchSubscriptionSpec{Resource: notifyv1.ResourceRef{Version: "v1", Resource: "configmaps"},
			Sink: &notifyv1.Sink{Service: &notifyv1.ServiceSink{Name: "hook", Namespace: elsewhere}}}}
	create(t, svc)
	cond = waitReason(t, svc, notifyv1.ReasonForbidden, 10*time.Second)
	g.Expect(cond.Message).To(ContainSubstring("may not get services hook in namespace " + elsewhere))
}

func TestSecretValuesAreRedactedUnlessOptedIn(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	redacted, revealed := newSink(t), newSink(t)
	wsRedacted := subscription(ns, "redacted", redacted.URL)
	wsRedacted.Spec.Resource.Resource = "secrets"
	wsRevealed := subscription(ns, "revealed", revealed.URL)
	wsRevealed.Spec.Resource.Resource = "secrets"
	wsRevealed.Spec.Payload = &notifyv1.PayloadSpec{IncludeSecretData: true}
	for _, ws := range []*notifyv1.WatchSubscription{wsRedacted, wsRevealed} {
		create(t, ws)
		waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	}

	create(t, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db", Annotations: map[string]string{
			"kubectl.kubernetes.io/last-applied-configuration": `{"data":{"password":"aHVudGVyMg=="}}`, "team": "a"}},
		Data: map[string][]byte{"password": []byte("hunter2")}})
	for _, sk := range []*sink{redacted, revealed} {
		g.Eventually(func() int { return len(sk.Events()) }).WithTimeout(10 * time.Second).Should(Equal(1))
	}
	g.Expect(redacted.Events()[0].Data).NotTo(ContainSubstring(base64.StdEncoding.EncodeToString([]byte("hunter2"))))
	g.Expect(redacted.Events()[0].Data).NotTo(ContainSubstring("aHVudGVyMg"))
	var obj map[string]any
	g.Expect(json.Unmarshal([]byte(redacted.Events()[0].Data), &obj)).To(Succeed())
	g.Expect(obj["data"]).To(Equal(map[string]any{"password": "<redacted>"}), "keys kept, values gone")
	ann := obj["metadata"].(map[string]any)["annotations"].(map[string]any)
	g.Expect(ann).To(HaveKeyWithValue("kubectl.kubernetes.io/last-applied-configuration", "<redacted>"))
	g.Expect(ann).To(HaveKeyWithValue("team", "a"))
	g.Expect(revealed.Events()[0].Data).To(ContainSubstring(base64.StdEncoding.EncodeToString([]byte("hunter2"))))
}

func TestSignedDeliveries(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("shared-signing-key-of-team-a"))
	// As kubectl create secret --from-file leaves it: with a newline.
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "signing"},
		Data: map[string][]byte{"key": []byte(secret + "\n")}})
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "garbled"},
		Data: map[string][]byte{"key": []byte("whsec_s3cr3t!")}})
	verifier, err := standardwebhooks.NewWebhook(secret)
	g.Expect(err).NotTo(HaveOccurred())

	// A receiver as the README describes it: verify, then read the event from the body.
	type delivery struct {
		verified             error
		contentType, ceType  string
		typ, subject, hookID string
	}
	deliveries := make(chan delivery, 10)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		d := delivery{verified: verifier.Verify(body, r.Header), contentType: r.Header.Get("Content-Type"),
			ceType: r.Header.Get("Ce-Type"), hookID: r.Header.Get("webhook-id")}
		var ev struct{ Type, Subject string }
		_ = json.Unmarshal(body, &ev)
		d.typ, d.subject = ev.Type, ev.Subject
		deliveries <- d
	}))
	t.Cleanup(receiver.Close)

	grantSecrets(t, ns, "signing", "garbled")
	signed := subscription(ns, "signed", receiver.URL) // contentMode binary, the default
	signed.Spec.Sink.Webhook.SigningSecretRef = &notifyv1.SigningKeyReference{Name: "signing"}
	garbled := subscription(ns, "garbled", receiver.URL)
	garbled.Spec.Sink.Webhook.SigningSecretRef = &notifyv1.SigningKeyReference{Name: "garbled"}
	create(t, signed)
	create(t, garbled)
	waitReason(t, signed, notifyv1.ReasonWatching, 10*time.Second)
	cond := waitReason(t, garbled, notifyv1.ReasonInvalidSink, 10*time.Second)
	g.Expect(cond.Message).To(Equal(`spec.sink.signingSecretRef: Secret garbled, key "key": ` +
		"the signing key starts with whsec_ but the rest is not base64"))

	cm := configMap(ns, "c", nil)
	create(t, cm)
	var d delivery
	g.Eventually(deliveries).WithTimeout(10 * time.Second).Should(Receive(&d))
	g.Expect(d.verified).NotTo(HaveOccurred())
	g.Expect(d.contentType).To(Equal("application/cloudevents+json"), "signed binary goes structured")
	g.Expect(d.ceType).To(BeEmpty())
	g.Expect(d.typ).To(Equal("io.dynamicnotifier.resource.added"))
	g.Expect(d.subject).To(Equal("/api/v1/namespaces/" + ns + "/configmaps/c"))
	g.Expect(d.hookID).To(Equal(string(cm.UID) + ":" + cm.ResourceVersion + ":Added"))
}

func TestDeniedSinkAddressesAndRedirectsAreRefused(t *testing.T) {
	g := NewWithT(t)
	opts := testOptions()
	opts.SinkDeny = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	startOperatorWith(t, cfg, opts)
	ns := newNamespace(t)

	// A sink on the denied address, and an allowed one that redirects there.
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	g.Expect(err).NotTo(HaveOccurred())
	denied := &sink{status: func() int { return http.StatusOK }}
	srv := httptest.NewUnstartedServer(nil)
	srv.Listener = ln
	startSinkOn(t, srv, denied)
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, denied.URL, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirect.Close)
	_, port, err := net.SplitHostPort(ln.Addr().String())
	g.Expect(err).NotTo(HaveOccurred())

	want := map[string]string{
		"direct":     "127.0.0.2 is in 127.0.0.2/32: address denied by the operator's sink policy",
		"decimal":    "2130706434 (127.0.0.2) is in 127.0.0.2/32: address denied by the operator's sink policy",
		"redirected": "the sink answered 307 Temporary Redirect, a redirect to " + denied.URL + ": redirects are not followed",
	}
	urls := map[string]string{"direct": denied.URL, "decimal": "http://2130706434:" + port, "redirected": redirect.URL}
	subs := make([]*notifyv1.WatchSubscription, 0, len(urls))
	for name, url := range urls {
		ws := subscription(ns, name, url)
		ws.Spec.Delivery = fastRetry(3)
		create(t, ws)
		waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
		subs = append(subs, ws)
	}
	create(t, configMap(ns, "c", nil))
	for _, ws := range subs {
		cond := waitReason(t, ws, notifyv1.ReasonDeliveryFailing, 10*time.Second)
		g.Expect(cond.Message).To(ContainSubstring(want[ws.Name]), ws.Name)
		g.Eventually(func(g Gomega) { g.Expect(status(g, ws).EventsFailed).To(BeEquivalentTo(1)) }).Should(Succeed(),
			"%s is final: no retries", ws.Name)
	}
	g.Expect(denied.Events()).To(BeEmpty())
}

func TestOddObjects(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	sk := newSink(t)
	ws := subscription(ns, "odd", sk.URL)
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)

	big := configMap(ns, "big", nil)
	big.Data = map[string]string{"blob": strings.Repeat("x", 1000*1024)} // just under the 1 MiB limit
	create(t, big)
	labels := map[string]string{}
	for i := range 60 {
		labels[fmt.Sprintf("example.com/label-%02d", i)] = fmt.Sprintf("v%d", i)
	}
	odd := configMap(ns, strings.Repeat("a", 200)+".b-c.0", labels)
	create(t, odd)

	g.Eventually(func() int { return len(sk.Events()) }).WithTimeout(10 * time.Second).Should(Equal(2))
	bySubject := map[string]string{}
	for _, e := range sk.Events() {
		bySubject[e.Subject[strings.LastIndex(e.Subject, "/")+1:]] = e.Data
	}
	g.Expect(strings.Contains(bySubject["big"], strings.Repeat("x", 1000*1024))).To(BeTrue(), "the 1 MiB object arrives whole")
	g.Expect(bySubject).To(HaveKey(odd.Name))
	g.Expect(bySubject[odd.Name]).To(ContainSubstring("example.com/label-59"))
}
