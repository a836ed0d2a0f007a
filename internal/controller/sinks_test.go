package controller_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

// byRef is a subscription on ConfigMaps that names a sink object instead of writing one.
func byRef(ns, name string, kind notifyv1.SinkKind, sinkName string) *notifyv1.WatchSubscription {
	ws := subscription(ns, name, "")
	ws.Spec.Sink = nil
	ws.Spec.SinkRef = &notifyv1.SinkReference{Kind: kind, Name: sinkName}
	return ws
}

// sinkCondition reads a condition of a sink object.
func sinkCondition(g Gomega, obj client.Object, conditions func() []metav1.Condition, typ string) *metav1.Condition {
	g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)).To(Succeed())
	return meta.FindStatusCondition(conditions(), typ)
}

// TestWatchSinkIsNamedByItsSubscriptions: a WatchSink holds the address, the headers from a
// Secret and delivery defaults; subscriptions name it. Its status lists them and tells
// whether they deliver, a missing one is SinkNotFound until it exists, and changing the
// sink reconfigures its subscriptions.
func TestWatchSinkIsNamedByItsSubscriptions(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	startOperator(t)
	ns := newNamespace(t)
	first, second := newSink(t), newSink(t)

	early := byRef(ns, "early", "", "team-hook")
	create(t, early)
	cond := waitReason(t, early, notifyv1.ReasonSinkNotFound, 10*time.Second)
	g.Expect(cond.Message).To(Equal("spec.sinkRef: WatchSink team-hook not found in namespace " + ns))

	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hook-auth"},
		StringData: map[string]string{"Authorization": "Bearer team"}})
	grantSecrets(t, ns, "hook-auth")
	sk := &notifyv1.WatchSink{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "team-hook"},
		Spec: notifyv1.WatchSinkSpec{
			Sink: notifyv1.Sink{Webhook: &notifyv1.WebhookSink{URL: first.URL, HTTPOptions: notifyv1.HTTPOptions{
				HeadersFrom: &notifyv1.HeadersFrom{SecretRef: notifyv1.LocalSecretReference{Name: "hook-auth"}}}}},
			Delivery: &notifyv1.DeliverySpec{Parallelism: new(int32(1))},
		}}
	create(t, sk)
	waitReason(t, early, notifyv1.ReasonWatching, 10*time.Second)
	late := byRef(ns, "late", notifyv1.SinkKindWatchSink, "team-hook")
	create(t, late)
	waitReason(t, late, notifyv1.ReasonWatching, 10*time.Second)

	create(t, configMap(ns, "one", nil))
	g.Eventually(first.Events).WithTimeout(10 * time.Second).Should(HaveLen(2))
	for _, ev := range first.Events() {
		g.Expect(ev.Header.Get("Authorization")).To(Equal("Bearer team"), "the sink object's headers")
	}
	got := &notifyv1.WatchSubscription{}
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(late), got)).To(Succeed())
	g.Expect(got.Status.Sink).To(Equal("WatchSink/team-hook"))

	g.Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(sk), sk)).To(Succeed())
		g.Expect(sk.Status.SubscriptionCount).To(Equal(int32(2)))
		g.Expect(sk.Status.Subscriptions).To(Equal([]string{ns + "/early", ns + "/late"}))
		g.Expect(sk.Status.EventsDelivered).To(Equal(int64(2)))
		ready := meta.FindStatusCondition(sk.Status.Conditions, notifyv1.ConditionReady)
		g.Expect(ready).NotTo(BeNil())
		g.Expect(ready.Status).To(Equal(metav1.ConditionTrue))
		delivering := meta.FindStatusCondition(sk.Status.Conditions, notifyv1.ConditionDelivering)
		g.Expect(delivering).NotTo(BeNil())
		g.Expect(delivering.Reason).To(Equal(notifyv1.SinkReasonDelivering))
	}).WithTimeout(15 * time.Second).Should(Succeed())

	// The sink moves: both subscriptions follow.
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(sk), sk)).To(Succeed())
	sk.Spec.Webhook.URL = second.URL
	g.Expect(k8s.Update(ctx, sk)).To(Succeed())
	g.Eventually(func() []string {
		out := make([]string, 0, 2)
		for _, ws := range []*notifyv1.WatchSubscription{early, late} {
			got := &notifyv1.WatchSubscription{}
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(ws), got)).To(Succeed())
			out = append(out, got.Status.Sink)
		}
		return out
	}).Should(HaveLen(2))
	g.Eventually(func() int {
		create(t, configMap(ns, "probe-"+randomSuffix(), nil))
		return len(second.Events())
	}).WithTimeout(15*time.Second).WithPolling(time.Second).Should(BeNumerically(">=", 2),
		"changing the WatchSink reconfigures its subscriptions")
}

// TestClusterWatchSinkForAdmittedNamespaces: the platform team offers a sink whose URL is a
// credential, kept in the operator's namespace. A namespace its selector does not admit
// gets SinkNotAdmitted; once labelled, its subscription delivers, and the URL shows in no
// status.
func TestClusterWatchSinkForAdmittedNamespaces(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	operatorNS := newNamespace(t)
	opts := testOptions()
	opts.OperatorNamespace = operatorNS
	startOperatorWith(t, cfg, opts)
	receiver := newSink(t)
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNS, Name: "chat-webhook"},
		StringData: map[string]string{"url": receiver.URL + "/services/T000/B000/s3cr3t"}})
	cluster := &notifyv1.ClusterWatchSink{ObjectMeta: metav1.ObjectMeta{Name: "chat-" + randomSuffix()},
		Spec: notifyv1.ClusterWatchSinkSpec{
			WatchSinkSpec: notifyv1.WatchSinkSpec{Sink: notifyv1.Sink{Webhook: &notifyv1.WebhookSink{
				URLFrom: &notifyv1.URLSource{SecretKeyRef: notifyv1.SecretKeySelector{Name: "chat-webhook", Key: "url"}}}},
				Payload: &notifyv1.PayloadSpec{Template: `{"text": eventType + " " + object.metadata.name}`}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"chat": "allowed"}},
		}}
	create(t, cluster)

	ns := newNamespace(t)
	ws := byRef(ns, "to-chat", notifyv1.SinkKindClusterWatchSink, cluster.Name)
	create(t, ws)
	cond := waitReason(t, ws, notifyv1.ReasonSinkNotAdmitted, 10*time.Second)
	g.Expect(cond.Message).To(ContainSubstring("does not admit namespace " + ns))

	namespace := &corev1.Namespace{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Name: ns}, namespace)).To(Succeed())
	namespace.Labels = map[string]string{"chat": "allowed"}
	g.Expect(k8s.Update(ctx, namespace)).To(Succeed())
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)

	create(t, configMap(ns, "deploy-42", nil))
	g.Eventually(receiver.Events).WithTimeout(10 * time.Second).Should(HaveLen(1))
	ev := receiver.Events()[0]
	g.Expect(ev.Data).To(Equal(`{"text":"Added deploy-42"}`), "the sink's template, the body the service expects")
	g.Expect(ev.ContentType).To(Equal("application/json"))

	// The URL is a credential: a failing delivery names the Secret, never the URL.
	receiver.mu.Lock()
	receiver.status = func() int { return http.StatusServiceUnavailable }
	receiver.mu.Unlock()
	create(t, configMap(ns, "deploy-43", nil))
	cond = waitReason(t, ws, notifyv1.ReasonDeliveryFailing, 15*time.Second)
	g.Expect(cond.Message).To(ContainSubstring("the URL in Secret " + operatorNS + "/chat-webhook, key url"))
	g.Expect(cond.Message).NotTo(ContainSubstring("s3cr3t"))
	g.Eventually(func(g Gomega) {
		delivering := sinkCondition(g, cluster, func() []metav1.Condition { return cluster.Status.Conditions },
			notifyv1.ConditionDelivering)
		g.Expect(delivering).NotTo(BeNil())
		g.Expect(delivering.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(delivering.Message).To(ContainSubstring("1 of 1 subscriptions using the sink fail to deliver: " + ns + "/to-chat"))
		g.Expect(delivering.Message).NotTo(ContainSubstring("s3cr3t"))
	}).WithTimeout(15 * time.Second).Should(Succeed())
}

// TestTemplates: a template writes the body in the shape a service documents; one that
// does not compile is InvalidTemplate with CEL's message.
func TestTemplates(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	receiver := newSink(t)
	ws := subscription(ns, "shaped", receiver.URL)
	ws.Spec.EventTypes = []notifyv1.EventType{notifyv1.EventUpdated}
	ws.Spec.Payload = &notifyv1.PayloadSpec{
		Template:    `object.metadata.name + ": k changed from " + oldObject.data.k + " to " + object.data.k + " (" + event.id + ")"`,
		ContentType: "text/markdown"}
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	cm := configMap(ns, "settings", nil)
	create(t, cm)
	cm.Data["k"] = "w"
	g.Expect(k8s.Update(context.Background(), cm)).To(Succeed())
	g.Eventually(receiver.Events).WithTimeout(10 * time.Second).Should(HaveLen(1))
	ev := receiver.Events()[0]
	g.Expect(ev.Data).To(Equal("settings: k changed from v to w (" + ev.ID + ")"))
	g.Expect(ev.ContentType).To(Equal("text/markdown"))
	g.Expect(ev.Type).To(Equal("io.dynamicnotifier.resource.updated"), "the CloudEvent attributes still travel")

	bad := subscription(ns, "bad-template", receiver.URL)
	bad.Spec.Payload = &notifyv1.PayloadSpec{Template: `{"text": object.metadata.name +}`}
	create(t, bad)
	cond := waitReason(t, bad, notifyv1.ReasonInvalidTemplate, 10*time.Second)
	g.Expect(cond.Message).To(ContainSubstring("spec.payload.template"))
	g.Expect(cond.Message).To(ContainSubstring("Syntax error"))
}

// TestClientCertificate: a sink that requires a client certificate (mutual TLS) gets the
// one from the subscription's certSecretRef, and refuses a subscription without one.
func TestClientCertificate(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	clientCA, clientCert, clientKey := issueClientCertificate(t)
	srv := httptest.NewUnstartedServer(nil)
	pool := x509.NewCertPool()
	g.Expect(pool.AppendCertsFromPEM(clientCA)).To(BeTrue())
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS12}
	receiver := startSink(t, srv, true)
	serverCA := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sink-ca"},
		Data: map[string][]byte{"ca.crt": serverCA}})
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "client-cert"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: clientCert, corev1.TLSPrivateKeyKey: clientKey}})
	grantSecrets(t, ns, "sink-ca", "client-cert")

	mutual := subscription(ns, "mutual", receiver.URL)
	mutual.Spec.Sink.Webhook.TLS = &notifyv1.TLSConfig{CASecretRef: &notifyv1.SecretKeyReference{Name: "sink-ca"},
		CertSecretRef: &notifyv1.LocalSecretReference{Name: "client-cert"}}
	anonymous := subscription(ns, "anonymous", receiver.URL)
	anonymous.Spec.Sink.Webhook.TLS = &notifyv1.TLSConfig{CASecretRef: &notifyv1.SecretKeyReference{Name: "sink-ca"}}
	for _, ws := range []*notifyv1.WatchSubscription{mutual, anonymous} {
		create(t, ws)
		waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	}
	create(t, configMap(ns, "c", nil))
	g.Eventually(func() int { return len(receiver.Events()) }).WithTimeout(10*time.Second).Should(Equal(1),
		"only the subscription presenting the certificate gets through")
	waitReason(t, anonymous, notifyv1.ReasonDeliveryFailing, 10*time.Second)
}

// issueClientCertificate makes a CA and a client certificate it signs, as PEM.
func issueClientCertificate(t *testing.T) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTemplate := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test client CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "dynamic-notifier"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caTemplate, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func randomSuffix() string { return strings.ToLower(rand.Text()[:6]) }
