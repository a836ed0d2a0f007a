package main

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"testing"

	. "github.com/onsi/gomega"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// TestSendHonoursTheSink: send posts one test event over the sink's TLS (CA from a
// Secret), with its headers from a Secret and its signature, and prints the answer; from a
// file or from the cluster by name.
func TestSendHonoursTheSink(t *testing.T) {
	g := NewWithT(t)
	kubeconfig := adminKubeconfig(t)
	ns := newNamespace(t)
	rcv := newReceiver(t, true)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rcv.Certificate().Raw})
	signing := "whsec_" + base64.StdEncoding.EncodeToString([]byte("signing-key-of-the-shop"))
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "receiver-ca"},
		Data: map[string][]byte{notifyv1.DefaultCAKey: ca}})
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "headers"},
		Data: map[string][]byte{"X-Api-Key": []byte("k-123")}})
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "signing"},
		Data: map[string][]byte{notifyv1.DefaultSigningKey: []byte(signing)}})
	ws := watchSubscription(ns, "shop", rcv.URL+"/events")
	ws.Spec.Sink.Webhook.HTTPOptions = notifyv1.HTTPOptions{
		TLS:              &notifyv1.TLSConfig{CASecretRef: &notifyv1.SecretKeyReference{Name: "receiver-ca"}},
		HeadersFrom:      &notifyv1.HeadersFrom{SecretRef: notifyv1.LocalSecretReference{Name: "headers"}},
		SigningSecretRef: &notifyv1.SigningKeyReference{Name: "signing"},
	}
	ws.Spec.Payload = &notifyv1.PayloadSpec{Template: `{"text": "test of " + object.metadata.name}`}
	verifier, err := standardwebhooks.NewWebhook(signing)
	g.Expect(err).NotTo(HaveOccurred())

	out, err := run(t, kubeconfig, "send", "-f", writeFile(t, ws))
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(ContainSubstring("sent " + event.TestCloudEventType))
	g.Expect(out).To(ContainSubstring("(webhook, structured mode)"))
	g.Expect(out).To(ContainSubstring("answer: 202 Accepted in "))
	g.Expect(out).To(ContainSubstring("body (6 bytes):\nthanks"))
	got := rcv.got()
	g.Expect(got).To(HaveLen(1))
	req := got[0]
	g.Expect(verifier.Verify([]byte(req.Body), req.Header)).To(Succeed(), "signed as the operator signs")
	g.Expect(req.Header.Get("X-Api-Key")).To(Equal("k-123"))
	g.Expect(req.Header.Get("Content-Type")).To(Equal("application/cloudevents+json"))
	var ce struct {
		Type, Source, Subject string
		Data                  map[string]string
	}
	g.Expect(json.Unmarshal([]byte(req.Body), &ce)).To(Succeed())
	g.Expect(ce.Type).To(Equal(event.TestCloudEventType))
	g.Expect(ce.Source).To(Equal("/apis/notify.dynamicnotifier.io/v1alpha1/namespaces/" + ns + "/watchsubscriptions/shop"))
	g.Expect(ce.Data).To(Equal(map[string]string{"text": "test of dynamic-notifier-test"}), "the subscription's template")

	// By name, from the cluster, with a live object, as JSON.
	create(t, ws)
	create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "settings"}})
	out, err = run(t, kubeconfig, "send", "shop", "-n", ns, "--object", "settings", "-o", "json")
	g.Expect(err).NotTo(HaveOccurred(), out)
	var res sendResult
	g.Expect(json.Unmarshal([]byte(out), &res)).To(Succeed())
	g.Expect(res.Status).To(Equal("202 Accepted"))
	g.Expect(res.Mode).To(Equal("structured"))
	g.Expect(rcv.got()).To(HaveLen(2))
	g.Expect(rcv.got()[1].Body).To(ContainSubstring(`"data":{"text":"test of settings"}`))
}

// TestSendKeepsTheOperatorsSafetyRules: the deny list applies (the operator's default, or
// the operator's flag), redirects are not followed, and a refusal is an error that shows
// the answer. After each refused send, a good one is the next request the receiver sees.
func TestSendKeepsTheOperatorsSafetyRules(t *testing.T) {
	g := NewWithT(t)
	kubeconfig := adminKubeconfig(t)
	ns := newNamespace(t)
	rcv := newReceiver(t, false)
	good := writeFile(t, watchSubscription(ns, "good", rcv.URL+"/events"))
	barrier := func(n int) {
		t.Helper()
		out, err := run(t, kubeconfig, "send", "-f", good)
		g.Expect(err).NotTo(HaveOccurred(), out)
		got := rcv.got()
		g.Expect(got).To(HaveLen(n), "the refused sends reached nothing before the good one")
		g.Expect(got[n-1].Path).To(Equal("/events"))
	}

	out, err := run(t, kubeconfig, "send", "-f", good, "--sink-deny-cidrs", "127.0.0.0/8,::1/128")
	g.Expect(err).To(MatchError("the sink did not accept the test event"))
	g.Expect(out).To(ContainSubstring("denied"))
	barrier(1)

	out, err = run(t, kubeconfig, "send", "-f", writeFile(t, watchSubscription(ns, "moved", rcv.URL+"/redirect")))
	g.Expect(err).To(HaveOccurred())
	g.Expect(out).To(ContainSubstring("answer: 307 Temporary Redirect"))
	g.Expect(rcv.got()).To(HaveLen(2))
	g.Expect(rcv.got()[1].Path).To(Equal("/redirect"))
	barrier(3)

	rcv.setStatus(http.StatusServiceUnavailable)
	out, err = run(t, kubeconfig, "send", "-f", good)
	g.Expect(err).To(HaveOccurred())
	g.Expect(out).To(ContainSubstring("answer: 503 Service Unavailable"))
	g.Expect(out).To(ContainSubstring("error: "))
}
