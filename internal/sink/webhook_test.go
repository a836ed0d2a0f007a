package sink

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

const testSource = "/apis/notify.example/v1/namespaces/team-a/watchsubscriptions/cms"

var configMaps = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

func testObject() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1",
		"kind":       "ConfigMap",
		"metadata": map[string]any{
			"name": "settings", "namespace": "team-a", "uid": "u1", "resourceVersion": "42",
			"labels": map[string]any{"app": "web"},
		},
		"data": map[string]any{"color": "blue"},
	}}
}

func testMessage() Message {
	return message(event.New(event.Added, configMaps, testObject()))
}

// message is ev as the delivery pipeline hands it to a sink for a subscription that does
// not shape its payload: with the event's shared encoding as its data.
func message(ev *event.Event) Message {
	data, _ := ev.Data()
	return Message{Event: ev, Source: testSource, Data: data}
}

// received is what the test server saw of one request.
type received struct {
	header http.Header
	body   []byte
}

// recordingServer answers every request with status (and extra response headers) and hands
// each request to the returned channel, so tests read exactly what went over the wire.
func recordingServer(t *testing.T, status int, respHeader http.Header) (*httptest.Server, <-chan received) {
	t.Helper()
	ch := make(chan received, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ch <- received{header: r.Header.Clone(), body: body}
		maps.Copy(w.Header(), respHeader)
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv, ch
}

func TestWebhookBinaryMode(t *testing.T) {
	g := NewWithT(t)
	srv, reqs := recordingServer(t, http.StatusAccepted, nil)
	w := &Webhook{URL: srv.URL, Client: srv.Client(), Header: http.Header{"Authorization": {"Bearer s3cret"}}}
	msg := testMessage()
	msg.Extensions = map[string]string{"deliveryattempts": "3", "deliveryerror": "boom"}

	g.Expect(w.Send(context.Background(), msg)).To(Succeed())

	var r received
	g.Expect(reqs).To(Receive(&r))
	h := r.header
	g.Expect(h.Get("ce-id")).To(Equal("u1:42:Added"))
	g.Expect(h.Get("ce-type")).To(Equal("io.dynamicnotifier.resource.added"))
	g.Expect(h.Get("ce-source")).To(Equal(testSource))
	g.Expect(h.Get("ce-subject")).To(Equal("/api/v1/namespaces/team-a/configmaps/settings"))
	g.Expect(h.Get("ce-specversion")).To(Equal("1.0"))
	g.Expect(h.Get("ce-time")).NotTo(BeEmpty())
	// One value only: a duplicated Content-Type would make receivers guess.
	g.Expect(h.Values("Content-Type")).To(Equal([]string{"application/json"}))
	g.Expect(h.Get("Authorization")).To(Equal("Bearer s3cret"))
	g.Expect(h.Values("User-Agent")).To(Equal([]string{UserAgent}))
	g.Expect(h.Get("ce-deliveryattempts")).To(Equal("3"))
	g.Expect(h.Get("ce-deliveryerror")).To(Equal("boom"))
	want, err := json.Marshal(testObject().Object)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(r.body).To(MatchJSON(want))
}

func TestWebhookUserAgentFromHeadersWins(t *testing.T) {
	g := NewWithT(t)
	srv, reqs := recordingServer(t, http.StatusAccepted, nil)
	w := &Webhook{URL: srv.URL, Client: srv.Client(), Header: http.Header{"User-Agent": {"team-a-bot/2"}}}

	g.Expect(w.Send(context.Background(), testMessage())).To(Succeed())

	var r received
	g.Expect(reqs).To(Receive(&r))
	g.Expect(r.header.Values("User-Agent")).To(Equal([]string{"team-a-bot/2"}))
	g.Expect(w.Header.Values("User-Agent")).To(Equal([]string{"team-a-bot/2"}), "the sink's own headers are left as they were")
}

func TestWebhookStructuredMode(t *testing.T) {
	g := NewWithT(t)
	srv, reqs := recordingServer(t, http.StatusOK, nil)
	w := &Webhook{URL: srv.URL, Client: srv.Client(), Structured: true, Header: http.Header{"X-Tenant": {"a"}}}
	msg := testMessage()
	msg.Extensions = map[string]string{"deliveryattempts": "2"}

	g.Expect(w.Send(context.Background(), msg)).To(Succeed())

	var r received
	g.Expect(reqs).To(Receive(&r))
	g.Expect(r.header.Get("Content-Type")).To(Equal("application/cloudevents+json"))
	g.Expect(r.header.Get("X-Tenant")).To(Equal("a"))
	// Structured mode carries the attributes in the body, not in headers.
	g.Expect(r.header.Get("ce-id")).To(BeEmpty())

	var ce cloudevents.Event
	g.Expect(json.Unmarshal(r.body, &ce)).To(Succeed())
	g.Expect(ce.SpecVersion()).To(Equal("1.0"))
	g.Expect(ce.ID()).To(Equal("u1:42:Added"))
	g.Expect(ce.Type()).To(Equal("io.dynamicnotifier.resource.added"))
	g.Expect(ce.Source()).To(Equal(testSource))
	g.Expect(ce.Subject()).To(Equal("/api/v1/namespaces/team-a/configmaps/settings"))
	g.Expect(ce.DataContentType()).To(Equal("application/json"))
	g.Expect(ce.Extensions()).To(HaveKeyWithValue("deliveryattempts", "2"))
	want, err := json.Marshal(testObject().Object)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(ce.Data()).To(MatchJSON(want))
	// data must be the object itself, not a base64 or string wrapping of it.
	var raw map[string]json.RawMessage
	g.Expect(json.Unmarshal(r.body, &raw)).To(Succeed())
	g.Expect(raw).To(HaveKey("data"))
	g.Expect(raw).NotTo(HaveKey("data_base64"))
	g.Expect([]byte(raw["data"])).To(MatchJSON(want))
}

func TestWebhookNon2xxIsHTTPError(t *testing.T) {
	cases := []struct {
		name       string
		status     int
		retryAfter string
		wantStatus string
		// wait bounds for Retry-After; both zero means none expected.
		minWait, maxWait time.Duration
	}{
		{name: "no retry-after", status: http.StatusServiceUnavailable, wantStatus: "503 Service Unavailable"},
		{name: "retry-after seconds", status: http.StatusServiceUnavailable, retryAfter: "7",
			wantStatus: "503 Service Unavailable", minWait: 7 * time.Second, maxWait: 7 * time.Second},
		// An HTTP date has one-second resolution and is read against the clock, so the wait
		// is only known to be somewhat under the hour it names.
		{name: "retry-after date", status: http.StatusTooManyRequests,
			retryAfter: time.Now().Add(time.Hour).UTC().Format(http.TimeFormat),
			wantStatus: "429 Too Many Requests", minWait: 59 * time.Minute, maxWait: time.Hour},
		{name: "client error", status: http.StatusBadRequest, wantStatus: "400 Bad Request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			var hdr http.Header
			if tc.retryAfter != "" {
				hdr = http.Header{"Retry-After": {tc.retryAfter}}
			}
			srv, _ := recordingServer(t, tc.status, hdr)
			w := &Webhook{URL: srv.URL, Client: srv.Client()}

			err := w.Send(context.Background(), testMessage())

			herr, ok := errors.AsType[*HTTPError](err)
			g.Expect(ok).To(BeTrue(), "error %v is not an *HTTPError", err)
			g.Expect(err.Error()).To(Equal("POST " + srv.URL + ": " + tc.wantStatus))
			g.Expect(herr.Method).To(Equal(http.MethodPost))
			g.Expect(herr.URL).To(Equal(srv.URL))
			g.Expect(herr.StatusCode).To(Equal(tc.status))
			g.Expect(herr.RetryAfter).To(BeNumerically(">=", tc.minWait))
			g.Expect(herr.RetryAfter).To(BeNumerically("<=", tc.maxWait))
			g.Expect(RetryAfter(err)).To(Equal(herr.RetryAfter))
		})
	}
}

func TestWebhookConnectionRefused(t *testing.T) {
	g := NewWithT(t)
	// A port that was just ours and is now closed refuses connections.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	url := "http://" + ln.Addr().String() + "/hook"
	g.Expect(ln.Close()).To(Succeed())
	w := &Webhook{URL: url, Client: &http.Client{}}

	err = w.Send(context.Background(), testMessage())

	g.Expect(err).To(HaveOccurred())
	g.Expect(err.Error()).To(HavePrefix("POST " + url + ": "))
	// The url.Error wrapper is removed so the URL is not named twice.
	g.Expect(strings.Count(err.Error(), url)).To(Equal(1))
	g.Expect(Retryable(err)).To(BeTrue())
	g.Expect(FailureReason(err)).To(Equal("connection"))
	g.Expect(RetryAfter(err)).To(BeZero())
}

// TestWebhookUnencodableObjectGoesAsAReference: the pipeline dead-letters an event whose
// object it cannot encode without data; the sink sends a reference to the object.
func TestWebhookUnencodableObjectGoesAsAReference(t *testing.T) {
	g := NewWithT(t)
	srv, reqs := recordingServer(t, http.StatusOK, nil)
	w := &Webhook{URL: srv.URL, Client: srv.Client()}
	obj := testObject()
	obj.Object["bad"] = make(chan int) // JSON cannot encode a channel
	msg := message(event.New(event.Updated, configMaps, obj))
	g.Expect(msg.Data).To(BeNil())

	g.Expect(w.Send(context.Background(), msg)).To(Succeed())

	var r received
	g.Expect(reqs).To(Receive(&r))
	g.Expect(r.body).To(MatchJSON(`{"apiVersion":"v1","kind":"ConfigMap","namespace":"team-a","name":"settings",
		"uid":"u1","resourceVersion":"42"}`))
}

func TestWebhookHonoursContext(t *testing.T) {
	g := NewWithT(t)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	w := &Webhook{URL: srv.URL, Client: srv.Client()}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()

	err := w.Send(ctx, testMessage())

	g.Expect(err).To(MatchError(context.DeadlineExceeded))
	g.Expect(Retryable(err)).To(BeTrue())
	g.Expect(FailureReason(err)).To(Equal("timeout"))
}

// expectSameCloudEvent reads a structured-mode CloudEvent with the CloudEvents SDK and checks
// that it carries the same attributes and data as the SDK's own form of msg.
func expectSameCloudEvent(g Gomega, raw []byte, msg Message) {
	var got cloudevents.Event
	g.Expect(json.Unmarshal(raw, &got)).To(Succeed(), "not a structured CloudEvent: %s", raw)
	g.Expect(got.Validate()).To(Succeed())
	want, err := CloudEvent(msg)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got.SpecVersion()).To(Equal(want.SpecVersion()))
	g.Expect(got.ID()).To(Equal(want.ID()))
	g.Expect(got.Source()).To(Equal(want.Source()))
	g.Expect(got.Type()).To(Equal(want.Type()))
	g.Expect(got.Subject()).To(Equal(want.Subject()))
	g.Expect(got.DataContentType()).To(Equal(want.DataContentType()))
	g.Expect(got.Time().Equal(want.Time())).To(BeTrue(), "time %s, want %s", got.Time(), want.Time())
	g.Expect(got.Extensions()).To(Equal(want.Extensions()))
	g.Expect(got.Data()).To(MatchJSON(want.Data()))
	var fields map[string]json.RawMessage
	g.Expect(json.Unmarshal(raw, &fields)).To(Succeed())
	g.Expect(fields).NotTo(HaveKey("data_base64"))
}

func TestStructuredEncodingMatchesTheSDK(t *testing.T) {
	g := NewWithT(t)
	msg := testMessage()
	msg.Extensions = map[string]string{"deliveryerror": "POST \"x\": 500\n\tline\u2028 \xff", "deliveryattempts": "12"}
	msg.Data = []byte(`{"kind":"ConfigMap","metadata":{"name":"settings"}}`)
	raw, err := appendStructured(nil, msg)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(json.Valid(raw)).To(BeTrue(), "invalid JSON: %s", raw)
	expectSameCloudEvent(g, raw, Message{Event: msg.Event, Source: msg.Source, Data: msg.Data,
		// The SDK keeps invalid UTF-8 bytes; JSON cannot carry them.
		Extensions: map[string]string{"deliveryerror": "POST \"x\": 500\n\tline\u2028 \ufffd", "deliveryattempts": "12"}})
}

func TestWebhookBatchedMode(t *testing.T) {
	g := NewWithT(t)
	srv, reqs := recordingServer(t, http.StatusOK, nil)
	key := []byte("signing-key")
	w := &Webhook{URL: srv.URL, Client: srv.Client(), Batch: 10, Structured: true,
		Header: http.Header{"X-Tenant": {"a"}}, SigningKey: key}
	g.Expect(w.BatchSize()).To(Equal(10))
	msgs := make([]Message, 0, 3)
	for i, t := range []event.Type{event.Added, event.Updated, event.Deleted} {
		obj := testObject()
		obj.SetResourceVersion(strconv.Itoa(42 + i))
		msgs = append(msgs, message(event.New(t, configMaps, obj)))
	}

	g.Expect(w.SendBatch(context.Background(), msgs)).To(Succeed())

	var r received
	g.Expect(reqs).To(Receive(&r))
	g.Expect(r.header.Values("Content-Type")).To(Equal([]string{"application/cloudevents-batch+json"}))
	g.Expect(r.header.Get("X-Tenant")).To(Equal("a"))
	g.Expect(r.header.Get("ce-id")).To(BeEmpty())
	sec, err := strconv.ParseInt(r.header.Get(HeaderWebhookTimestamp), 10, 64)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(r.header.Get(HeaderWebhookSignature)).To(Equal(sign(key, batchID(msgs), time.Unix(sec, 0), r.body)),
		"the signature covers the whole batch body")
	var batch []json.RawMessage
	g.Expect(json.Unmarshal(r.body, &batch)).To(Succeed(), "not a JSON array: %s", r.body)
	g.Expect(batch).To(HaveLen(3))
	for i := range batch {
		expectSameCloudEvent(g, batch[i], msgs[i])
	}

	By := "a single Send in batched mode is a batch of one"
	g.Expect(w.Send(context.Background(), msgs[0])).To(Succeed(), By)
	g.Expect(reqs).To(Receive(&r))
	g.Expect(r.header.Get("Content-Type")).To(Equal("application/cloudevents-batch+json"), By)
	g.Expect(json.Unmarshal(r.body, &batch)).To(Succeed())
	g.Expect(batch).To(HaveLen(1), By)
}
