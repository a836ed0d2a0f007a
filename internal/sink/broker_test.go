package sink

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// brokerMessage is change number rv of the ConfigMap ns/name, with a shaped payload, as a
// delivery pipeline hands it to a sink.
func brokerMessage(ns, name string, rv int, t event.Type) Message {
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1",
		"kind":       "ConfigMap",
		"metadata": map[string]any{
			"name": name, "namespace": ns, "uid": "uid-" + ns + "-" + name, "resourceVersion": fmt.Sprint(rv),
		},
		"data": map[string]any{"color": "blue"},
	}}
	ev := event.New(t, configMaps, obj)
	data := fmt.Sprintf(`{"shaped":true,"object":%q,"rv":%d}`, ns+"/"+name, rv)
	return Message{Event: ev, Source: testSource, Data: []byte(data)}
}

// shapedRV reads back the rv of a brokerMessage payload.
func shapedRV(data []byte) (string, int, error) {
	var p struct {
		Shaped bool   `json:"shaped"`
		Object string `json:"object"`
		RV     int    `json:"rv"`
	}
	if err := json.Unmarshal(data, &p); err != nil || !p.Shaped {
		return "", 0, fmt.Errorf("not a shaped payload: %q", data)
	}
	return p.Object, p.RV, nil
}

// expectCloudEvent checks that got, decoded from what a broker delivered, is the
// CloudEvent of msg as the SDK builds it, and a valid one.
func expectCloudEvent(g Gomega, got cloudevents.Event, msg Message) {
	g.ExpectWithOffset(1, got.Validate()).To(Succeed())
	want, err := CloudEvent(msg)
	g.ExpectWithOffset(1, err).NotTo(HaveOccurred())
	gotJSON, err := json.Marshal(got)
	g.ExpectWithOffset(1, err).NotTo(HaveOccurred())
	wantJSON, err := json.Marshal(want)
	g.ExpectWithOffset(1, err).NotTo(HaveOccurred())
	g.ExpectWithOffset(1, gotJSON).To(MatchJSON(wantJSON))
}

// setAttribute sets a CloudEvents attribute read from a binary-mode header, as a receiver
// following the protocol bindings does (the SDK's Kafka and NATS bindings are not
// available here, so the decoding is written after the specs).
func setAttribute(ce *cloudevents.Event, name, value string) error {
	switch name {
	case "specversion":
		if value != "1.0" {
			return fmt.Errorf("specversion %q", value)
		}
	case "id":
		ce.SetID(value)
	case "source":
		ce.SetSource(value)
	case "type":
		ce.SetType(value)
	case "subject":
		ce.SetSubject(value)
	case "datacontenttype":
		ce.SetDataContentType(value)
	case "time":
		ts, err := time.Parse(time.RFC3339Nano, value)
		if err != nil {
			return err
		}
		ce.SetTime(ts)
	default:
		ce.SetExtension(name, value)
	}
	return nil
}

// percentDecode undoes the NATS binding's header encoding, rejecting what the spec says a
// receiver must reject.
func percentDecode(v string) (string, error) {
	if strings.ContainsAny(v, " \"") {
		return "", fmt.Errorf("%q holds a character that must be percent-encoded", v)
	}
	s, err := url.PathUnescape(v)
	if err != nil {
		return "", err
	}
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("%q decodes to invalid UTF-8", v)
	}
	return s, nil
}

// testCA is a self-signed certificate for 127.0.0.1, and a client TLS setting trusting it.
func testCA(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "broker.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true,

		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	cert, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	client, err = NewBrokers(ClientOptions{}).TLSConfig(certPEM, false)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, client
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// denyLoopback are broker client options refusing the loopback range the tests run on.
func denyLoopback() ClientOptions {
	return ClientOptions{Deny: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
}

func TestPercentEncodeFollowsTheNATSBinding(t *testing.T) {
	g := NewWithT(t)
	// The spec's own example.
	g.Expect(percentEncode("Euro € 😀")).To(Equal("Euro%20%E2%82%AC%20%F0%9F%98%80"))
	g.Expect(percentEncode(`say "100%"`)).To(Equal("say%20%22100%25%22"))
	g.Expect(percentEncode("tab\there\r\nnew")).To(Equal("tab%09here%0D%0Anew"))
	// Printable ASCII other than space, '"' and '%' stays.
	g.Expect(percentEncode("/api/v1/namespaces/a/configmaps/b:c?d=e&f")).To(Equal("/api/v1/namespaces/a/configmaps/b:c?d=e&f"))
	// Invalid UTF-8 goes as U+FFFD, so a receiver never has to reject it.
	g.Expect(percentEncode("a\xffb")).To(Equal("a%EF%BF%BDb"))
	for _, s := range []string{"", "plain", "Euro € 😀", `"%" `, "POST http://x: 503 Service Unavailable", "日本語"} {
		back, err := percentDecode(percentEncode(s))
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(back).To(Equal(s))
	}
}

func TestSubjectTemplate(t *testing.T) {
	g := NewWithT(t)
	msg := brokerMessage("team-a", "settings.v2", 7, event.Updated)
	for tmpl, want := range map[string]string{
		DefaultNATSSubject:                          "k8s.team-a.configmaps.settings_v2.updated",
		"k8s.{group}.{version}.{resource}":          "k8s.core.v1.configmaps",
		"events.{kind}-{name}":                      "events.ConfigMap-settings_v2",
		"{namespace}":                               "team-a",
		"plain.subject":                             "plain.subject",
		"k8s.{namespace}.{namespace}.{type}.{type}": "k8s.team-a.team-a.updated.updated",
	} {
		st, err := ParseSubject(tmpl)
		g.Expect(err).NotTo(HaveOccurred(), tmpl)
		g.Expect(st.Render(msg)).To(Equal(want), tmpl)
	}

	// Values never split tokens or make wildcards, and are never empty.
	st, err := ParseSubject("a.{namespace}.{name}.{kind}")
	g.Expect(err).NotTo(HaveOccurred())
	odd := brokerMessage("", "x*y>z w\tv", 1, event.Added)
	odd.Event.Object.SetKind("")
	g.Expect(st.Render(odd)).To(Equal("a._.x_y_z_w_v._"))
	g.Expect(validSubject(st.Render(odd))).To(Succeed())

	// A Resync names a collection, not an object.
	resync := Message{Event: event.NewResync(configMaps, "s", "team-a/cms", event.ResyncInfo{Namespace: "team-a"})}
	st, err = ParseSubject(DefaultNATSSubject)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(st.Render(resync)).To(Equal("k8s.team-a.configmaps._.resync"))

	for _, bad := range []string{
		"", "k8s.{unknown}", "k8s.{name", "k8s.name}", "k8s.{{name}}", "k8s..{name}", ".k8s", "k8s.",
		"k8s.*", "k8s.>", "k8s.{name}.>", "k8s. x", "$JS.API.{name}", "_INBOX.{name}", "k8s.{}",
	} {
		_, err := ParseSubject(bad)
		g.Expect(err).To(HaveOccurred(), "template %q", bad)
	}
}

func TestBrokerErrorsSortThemselves(t *testing.T) {
	g := NewWithT(t)
	err := fmt.Errorf("delivering: %w", &BrokerError{Broker: "kafka", Target: "topic t", Reason: ReasonDenied,
		Err: errors.New("TOPIC_AUTHORIZATION_FAILED")})
	g.Expect(Retryable(err)).To(BeFalse())
	g.Expect(FailureReason(err)).To(Equal(ReasonDenied))
	g.Expect(TooLarge(err)).To(BeFalse())
	g.Expect(err.Error()).To(Equal("delivering: kafka topic t: TOPIC_AUTHORIZATION_FAILED"))

	err = &BrokerError{Broker: "nats", Target: "subject s", Reason: ReasonInvalid, TooLarge: true, Err: errors.New("big")}
	g.Expect(TooLarge(err)).To(BeTrue())
	err = &BrokerError{Broker: "nats", Target: "subject s", Reason: ReasonConnection, Retry: true, Err: errors.New("down")}
	g.Expect(Retryable(err)).To(BeTrue())
	g.Expect(FailureReasons).To(ContainElements(ReasonDenied, ReasonInvalid, ReasonConnection, ReasonTimeout,
		ReasonServerError, ReasonClientError, ReasonThrottled))
}

type testClient struct{ closed int }

func (c *testClient) close() { c.closed++ }

func TestSharedClientsCloseWithTheirLastSink(t *testing.T) {
	g := NewWithT(t)
	var r refs[*testClient]
	opened := 0
	open := func() (*testClient, error) {
		opened++
		return &testClient{}, nil
	}
	a := configKey("kafka", []string{"b:1", "a:1"}, nil, "id")
	g.Expect(configKey("kafka", []string{"a:1", "b:1"}, nil, "id")).To(Equal(a), "server order does not matter")
	g.Expect(configKey("kafka", []string{"a:1", "b:1"}, nil, "i", "d")).NotTo(Equal(a))
	g.Expect(configKey("kafka", []string{"a:1", "b:1"}, &tls.Config{}, "id")).NotTo(Equal(a))

	c1, put1, err := r.get(a, open)
	g.Expect(err).NotTo(HaveOccurred())
	c2, put2, err := r.get(a, open)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(c2).To(BeIdenticalTo(c1))
	g.Expect(opened).To(Equal(1))
	put1()
	put1() // a sink closed twice gives its use back once
	g.Expect(c1.closed).To(Equal(0))
	g.Expect(r.len()).To(Equal(1))
	put2()
	g.Expect(c1.closed).To(Equal(1))
	g.Expect(r.len()).To(Equal(0))

	// A failed open is not kept.
	_, _, err = r.get(a, func() (*testClient, error) { return nil, errors.New("no") })
	g.Expect(err).To(HaveOccurred())
	g.Expect(r.len()).To(Equal(0))
	c3, put3, err := r.get(a, open)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(c3).NotTo(BeIdenticalTo(c1))
	put3()
}

func TestBrokersShareTLSConfigs(t *testing.T) {
	g := NewWithT(t)
	b := NewBrokers(ClientOptions{})
	a1, err := b.TLSConfig(nil, false)
	g.Expect(err).NotTo(HaveOccurred())
	a2, err := b.TLSConfig(nil, false)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(a2).To(BeIdenticalTo(a1))
	insecure, err := b.TLSConfig(nil, true)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(insecure).NotTo(BeIdenticalTo(a1))
	_, err = b.TLSConfig([]byte("not PEM"), false)
	g.Expect(err).To(HaveOccurred())
}
