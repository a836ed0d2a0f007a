package controller_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

// operatorLog is where the operators the tests start log (JSON lines, info level and up):
// errors go to stderr (everything with TEST_LOG), and every line to the buffer of a test
// that reads the log (captureLog).
var operatorLog = &logTee{}

type logTee struct {
	mu      sync.Mutex
	capture *testenv.Buffer
}

func (l *logTee) Write(p []byte) (int, error) {
	l.mu.Lock()
	c := l.capture
	l.mu.Unlock()
	if c != nil {
		_, _ = c.Write(p)
	}
	if os.Getenv("TEST_LOG") != "" || bytes.Contains(p, []byte(`"level":"error"`)) {
		_, _ = os.Stderr.Write(p)
	}
	return len(p), nil
}

// captureLog collects the operator log until the test ends.
func captureLog(t *testing.T) *testenv.Buffer {
	t.Helper()
	buf := &testenv.Buffer{}
	operatorLog.mu.Lock()
	operatorLog.capture = buf
	operatorLog.mu.Unlock()
	t.Cleanup(func() {
		operatorLog.mu.Lock()
		operatorLog.capture = nil
		operatorLog.mu.Unlock()
	})
	return buf
}

// TestSecretValuesStayOutOfFiltersAndLogs: for subscriptions on Secrets without
// includeSecretData, a CEL filter sees only redacted values, so its evaluation errors (which
// the operator logs) cannot quote one and which changes match cannot depend on one; the log
// sink logs the redacted payload.
func TestSecretValuesStayOutOfFiltersAndLogs(t *testing.T) {
	g := NewWithT(t)
	logs := captureLog(t)
	startOperator(t)
	ns := newNamespace(t)
	onSecrets := func(name, filter string, s notifyv1.Sink) *notifyv1.WatchSubscription {
		ws := subscription(ns, name, "")
		ws.Spec.Resource.Resource = "secrets"
		ws.Spec.Filter = filter
		ws.Spec.Sink = &s
		return ws
	}
	errSink, probeSink, keySink := newSink(t), newSink(t), newSink(t)
	webhook := func(s *sink) notifyv1.Sink { return notifyv1.Sink{Webhook: &notifyv1.WebhookSink{URL: s.URL}} }
	subs := []*notifyv1.WatchSubscription{
		// "no such key: <value>" before filters saw the redacted view.
		onSecrets("errs", `{"x": true}[object.data.password]`, webhook(errSink)),
		// A value guessed one prefix at a time.
		onSecrets("probe", `object.data.password.startsWith("aHVu")`, webhook(probeSink)),
		onSecrets("keys", `has(object.data.password)`, webhook(keySink)),
		onSecrets("logged", "", notifyv1.Sink{Log: &notifyv1.LogSink{}}),
	}
	for _, ws := range subs {
		create(t, ws)
		waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	}

	create(t, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db", Annotations: map[string]string{
			"kubectl.kubernetes.io/last-applied-configuration": `{"data":{"password":"aHVudGVyMg=="}}`}},
		Data: map[string][]byte{"password": []byte("hunter2")}})

	g.Eventually(keySink.Events).WithTimeout(10*time.Second).Should(HaveLen(1), "filters on keys still work")
	g.Expect(keySink.Events()[0].Data).To(ContainSubstring(`"password":"\u003credacted\u003e"`))
	g.Eventually(logs.String).WithTimeout(10*time.Second).Should(And(
		ContainSubstring("Filter evaluation failed"), ContainSubstring(`"msg":"Event"`)),
		"the filter error and the log sink's event are logged")
	for _, value := range []string{"hunter2", base64.StdEncoding.EncodeToString([]byte("hunter2"))} {
		g.Expect(logs.String()).NotTo(ContainSubstring(value))
	}
	g.Consistently(probeSink.Events).WithTimeout(time.Second).Should(BeEmpty(), "no match can depend on a value")
	g.Expect(errSink.Events()).To(BeEmpty())
}

// TestSinkCredentialsAreMaskedAndDeadLettersRedacted: a sink URL's password and token stay
// out of the DeliveryFailing condition, its Event, the operator log and the dead letter's
// deliveryerror; the dead letter carries the Secret redacted, as the main sink would have.
func TestSinkCredentialsAreMaskedAndDeadLettersRedacted(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	logs := captureLog(t)
	startOperator(t)
	ns := newNamespace(t)
	down, dead := newSink(t), newSink(t)
	down.status = func() int { return 500 }
	const password, token = "pa55w0rd", "t0k3n"
	url := strings.Replace(down.URL, "http://", "http://user:"+password+"@", 1) + "?token=" + token
	ws := subscription(ns, "creds", url)
	ws.Spec.Resource.Resource = "secrets"
	ws.Spec.Delivery = fastRetry(1)
	ws.Spec.Delivery.DeadLetterSink = &notifyv1.Sink{Webhook: &notifyv1.WebhookSink{URL: dead.URL}}
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)

	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"},
		Data: map[string][]byte{"password": []byte("hunter2")}})

	cond := waitReason(t, ws, notifyv1.ReasonDeliveryFailing, 10*time.Second)
	g.Expect(cond.Message).To(ContainSubstring("POST http://user:***@"))
	g.Expect(cond.Message).To(ContainSubstring("?token=***: 500 Internal Server Error"))
	g.Eventually(dead.Events).WithTimeout(10 * time.Second).Should(HaveLen(1))
	letter := dead.Events()[0]
	g.Expect(letter.Extensions).To(HaveKeyWithValue("deliveryerror", ContainSubstring("user:***@")))
	g.Expect(letter.Data).To(ContainSubstring(`"password":"\u003credacted\u003e"`))
	g.Expect(letter.Data).NotTo(ContainSubstring(base64.StdEncoding.EncodeToString([]byte("hunter2"))))
	var events *eventsv1.EventList
	g.Eventually(func(g Gomega) {
		events = &eventsv1.EventList{}
		g.Expect(k8s.List(ctx, events, client.InNamespace(ns))).To(Succeed())
		g.Expect(events.Items).To(ContainElement(HaveField("Reason", notifyv1.ReasonDeliveryFailing)))
	}).WithTimeout(5 * time.Second).Should(Succeed())
	g.Eventually(logs.String).Should(ContainSubstring("Delivery failing"))

	texts := make([]string, 0, 4+len(events.Items))
	texts = append(texts, cond.Message, logs.String(), fmt.Sprint(letter.Extensions), fmt.Sprint(status(g, ws)))
	for _, e := range events.Items {
		texts = append(texts, e.Note)
	}
	for _, text := range texts {
		g.Expect(text).NotTo(ContainSubstring(password))
		g.Expect(text).NotTo(ContainSubstring(token))
	}
}
