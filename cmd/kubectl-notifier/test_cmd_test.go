package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

// TestTestShowsWhatTheOperatorSends: for the same objects, what `test` prints is what the
// operator then sends: the same body, byte for byte, and the same headers, but for the time
// attribute (when the change was seen). One subscription sends a Secret (redacted, binary mode), the other
// ConfigMaps through a filter and a template in structured mode.
func TestTestShowsWhatTheOperatorSends(t *testing.T) {
	g := NewWithT(t)
	kubeconfig := adminKubeconfig(t)
	ns := newNamespace(t)
	rcv := newReceiver(t, false)
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"},
		Data: map[string][]byte{"password": []byte("secret")}})
	create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "settings"},
		Data: map[string]string{"color": "blue"}})
	create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "other"}})

	secrets := watchSubscription(ns, "secrets", rcv.URL+"/secrets")
	secrets.Spec.Resource.Resource = "secrets"
	secrets.Spec.SendInitialEvents = true
	configMaps := watchSubscription(ns, "configmaps", rcv.URL+"/configmaps")
	configMaps.Spec.SendInitialEvents = true
	configMaps.Spec.Filter = `object.metadata.name == "settings"`
	configMaps.Spec.Sink.Webhook.ContentMode = notifyv1.ContentModeStructured
	configMaps.Spec.Payload = &notifyv1.PayloadSpec{
		Template: `{"text": object.metadata.name + " is " + object.data.color, "type": eventType}`}
	file := writeFile(t, secrets, configMaps)

	out, err := run(t, kubeconfig, "test", "-f", file, "-n", ns, "-o", "json")
	g.Expect(err).NotTo(HaveOccurred(), out)
	var reports []testReport
	g.Expect(json.Unmarshal([]byte(out), &reports)).To(Succeed())
	g.Expect(reports).To(HaveLen(2))
	for _, r := range reports {
		g.Expect(r.Problems).To(BeEmpty())
		g.Expect(r.Checks).NotTo(BeEmpty())
		for _, c := range r.Checks {
			g.Expect(c.Result).To(Equal(checkAllowed), c.What)
		}
	}
	g.Expect(reports[0].Listed).To(Equal(1))
	g.Expect(reports[1].Listed).To(Equal(2))
	g.Expect(reports[1].Matched).To(Equal(1))
	other := reports[1].Objects[0]
	g.Expect(other.Object).To(Equal(ns + "/other"))
	g.Expect(other.Matched).To(BeFalse())
	g.Expect(other.Reason).To(Equal("spec.filter is false for it"))
	shownSecret, shownSettings := reports[0].Objects[0].CloudEvent, reports[1].Objects[1].CloudEvent
	g.Expect(shownSecret).NotTo(BeNil())
	g.Expect(shownSecret.Mode).To(Equal("binary"))
	g.Expect(shownSecret.Body).NotTo(ContainSubstring("c2VjcmV0"), "the Secret's value is redacted")
	g.Expect(shownSettings).NotTo(BeNil())
	g.Expect(shownSettings.Mode).To(Equal("structured"))
	g.Expect(shownSettings.Body).To(ContainSubstring(`"data":{"text":"settings is blue","type":"Added"}`))
	g.Expect(rcv.got()).To(BeEmpty(), "test sends nothing")

	// The operator, given the same subscriptions, sends the same requests.
	startOperator(t)
	create(t, secrets)
	create(t, configMaps)
	g.Eventually(func() int { return len(rcv.got()) }).WithTimeout(20*time.Second).Should(Equal(2),
		"the initial events of both subscriptions")
	for _, req := range rcv.got() {
		shown := shownSecret
		if req.Path == "/configmaps" {
			shown = shownSettings
		}
		want := shown.Body
		if shown.Mode == "structured" { // the time attribute is when the change was seen
			var sent, showed struct{ Time string }
			g.Expect(json.Unmarshal([]byte(req.Body), &sent)).To(Succeed())
			g.Expect(json.Unmarshal([]byte(want), &showed)).To(Succeed())
			g.Expect(showed.Time).NotTo(BeEmpty())
			want = strings.Replace(want, `"time":"`+showed.Time+`"`, `"time":"`+sent.Time+`"`, 1)
		}
		g.Expect(req.Body).To(Equal(want), "the body %s got", req.Path)
		for name, value := range shown.Headers {
			if name == "Ce-Time" {
				continue // when the change was seen
			}
			g.Expect(req.Header.Get(name)).To(Equal(value), "header %s of %s", name, req.Path)
		}
		for name := range req.Header {
			if strings.HasPrefix(name, "Ce-") {
				g.Expect(shown.Headers).To(HaveKey(name), "test shows every CloudEvents header sent")
			}
		}
	}
}

// TestTestReportsWhatStopsASubscription: what would keep the subscription from becoming
// Ready is reported as the operator's Ready reason, and `test` exits with an error.
func TestTestReportsWhatStopsASubscription(t *testing.T) {
	kubeconfig := adminKubeconfig(t)
	ns := newNamespace(t)
	create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "settings"}})
	unreadable := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns + "-other"}}
	create(t, unreadable)
	sink := &notifyv1.WatchSink{TypeMeta: metav1.TypeMeta{APIVersion: notifyv1.GroupVersion.String(), Kind: "WatchSink"},
		ObjectMeta: metav1.ObjectMeta{Name: "chat"},
		Spec: notifyv1.WatchSinkSpec{Sink: notifyv1.Sink{Log: &notifyv1.LogSink{}},
			Payload: &notifyv1.PayloadSpec{Template: `"hello " + object.metadata.name`, ContentType: "text/plain"}}}
	sinkFile := writeFile(t, sink)

	for _, tc := range []struct {
		name    string
		change  func(*notifyv1.WatchSubscription)
		files   []string
		problem string
	}{
		{name: "a namespace the ServiceAccount may not read", change: func(ws *notifyv1.WatchSubscription) {
			ws.Spec.Namespaces = []notifyv1.NamespaceName{notifyv1.NamespaceName(unreadable.Name)}
		}, problem: notifyv1.ReasonForbidden + ": "},
		{name: "a Secret the ServiceAccount may not get", change: func(ws *notifyv1.WatchSubscription) {
			ws.Spec.Sink.Webhook.HeadersFrom = &notifyv1.HeadersFrom{SecretRef: notifyv1.LocalSecretReference{Name: "token"}}
		}, problem: notifyv1.ReasonForbidden + ": spec.sink.headersFrom.secretRef"},
		{name: "a filter that does not compile", change: func(ws *notifyv1.WatchSubscription) {
			ws.Spec.Filter = "object.metadata.name =="
		}, problem: notifyv1.ReasonInvalidFilter + ": "},
		{name: "a resource the API server does not serve", change: func(ws *notifyv1.WatchSubscription) {
			ws.Spec.Resource = notifyv1.ResourceRef{Group: "example.com", Version: "v1", Resource: "widgets"}
		}, problem: notifyv1.ReasonResourceNotFound + ": "},
		{name: "a WatchSink that is nowhere", change: func(ws *notifyv1.WatchSubscription) {
			ws.Spec.Sink, ws.Spec.SinkRef = nil, &notifyv1.SinkReference{Name: "chat"}
		}, problem: notifyv1.ReasonSinkNotFound + ": spec.sinkRef: WatchSink chat not found"},
		{name: "a WatchSink of another file", change: func(ws *notifyv1.WatchSubscription) {
			ws.Spec.Sink, ws.Spec.SinkRef = nil, &notifyv1.SinkReference{Name: "chat"}
		}, files: []string{sinkFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			ws := watchSubscription("", "try", "http://127.0.0.1:9/hook")
			tc.change(ws)
			args := append(make([]string, 0, 5+2*len(tc.files)), "test", "-n", ns, "-f", writeFile(t, ws))
			for _, f := range tc.files {
				args = append(args, "-f", f)
			}
			out, err := run(t, kubeconfig, args...)
			if tc.problem == "" {
				g.Expect(err).NotTo(HaveOccurred(), out)
				g.Expect(out).To(ContainSubstring("sink       WatchSink/chat, log"))
				g.Expect(out).To(ContainSubstring(`"data":"hello settings"`), "the sink object's payload, as the log line shows it")
				return
			}
			g.Expect(err).To(MatchError(ContainSubstring("the subscription would not become Ready")), out)
			g.Expect(out).To(ContainSubstring("PROBLEM    " + tc.problem))
		})
	}
}

// TestTestEverySample: every sample runs through `test` (with the sample sink objects it
// may name), as the README tells a new user to do against the demo: each gets a report,
// and the problems it finds are the subscription's, not the plugin's.
func TestTestEverySample(t *testing.T) {
	kubeconfig := adminKubeconfig(t)
	ns := newNamespace(t)
	create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "settings"}})
	samples, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "samples", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var sinkFiles []string
	for _, s := range samples {
		data, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), "\nkind: WatchSink") || strings.Contains(string(data), "\nkind: ClusterWatchSink") {
			sinkFiles = append(sinkFiles, s)
		}
	}
	g := NewWithT(t)
	g.Expect(sinkFiles).NotTo(BeEmpty())
	for _, s := range samples {
		if filepath.Base(s) == "kustomization.yaml" {
			continue
		}
		t.Run(filepath.Base(s), func(t *testing.T) {
			g := NewWithT(t)
			args := []string{"test", "-n", ns, "-f", s}
			if !slices.Contains(sinkFiles, s) {
				for _, f := range sinkFiles {
					args = append(args, "-f", f)
				}
			}
			out, err := run(t, kubeconfig, args...)
			if err != nil {
				g.Expect(err).To(MatchError(ContainSubstring("the subscription would not become Ready")), out)
			}
			g.Expect(out).To(Or(ContainSubstring("WatchSubscription "+ns+"/"), ContainSubstring("a sink object")))
		})
	}

	// The demo's sample, its ServiceAccount allowed, shows what it would send.
	out, err := run(t, kubeconfig, "test", "-n", ns, "-f",
		filepath.Join(testenv.RepoRoot(), "config", "samples", "configmaps-to-webhook.yaml"))
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(ContainSubstring(ns + "/settings: matches, the operator would send:"))
	g.Expect(out).To(ContainSubstring("POST http://127.0.0.1:8099/events"))
	g.Expect(out).To(ContainSubstring("Ce-Type: io.dynamicnotifier.resource.added"))
	g.Expect(out).To(ContainSubstring("Nothing was sent."))
}
