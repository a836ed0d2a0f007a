package sink

// The NATS sink is tested against a real nats-server with JetStream, embedded in the test
// process on a loopback port with its store in a temporary directory.

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	. "github.com/onsi/gomega"

	"github.com/dynamic-notifier/dynamic-notifier/internal/brokertest"
	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

func natsSink(t *testing.T, b *Brokers, cfg NATSConfig) *NATS {
	t.Helper()
	n, err := b.NATS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// natsBinaryEvent decodes a binary-mode message as the NATS protocol binding says: every
// ce- header, percent-decoded, is an attribute (datacontenttype too), the payload is the
// data. Header names are case-insensitive.
func natsBinaryEvent(m jetstream.Msg) (cloudevents.Event, error) {
	ce := cloudevents.New()
	for k, vs := range m.Headers() {
		name := strings.ToLower(k)
		switch {
		case name == "nats-msg-id":
		case name == "content-type" && strings.HasPrefix(strings.ToLower(vs[0]), "application/cloudevents"):
			return ce, fmt.Errorf("a structured-mode message: %v", vs)
		case strings.HasPrefix(name, "ce-"):
			if len(vs) != 1 {
				return ce, fmt.Errorf("header %s: %d values", k, len(vs))
			}
			v, err := percentDecode(vs[0])
			if err != nil {
				return ce, fmt.Errorf("header %s: %w", k, err)
			}
			if err := setAttribute(&ce, name[len("ce-"):], v); err != nil {
				return ce, err
			}
		default:
			return ce, fmt.Errorf("unexpected header %q", k)
		}
	}
	ce.DataEncoded = m.Data()
	return ce, nil
}

func TestNATSBinaryMode(t *testing.T) {
	g := NewWithT(t)
	s := brokertest.NATSServer(t, nil)
	st := brokertest.NATSStream(t, s, jetstream.StreamConfig{})
	n := natsSink(t, NewBrokers(ClientOptions{}), NATSConfig{Servers: []string{s.ClientURL()}})
	msg := brokerMessage("team-a", "settings.v2", 42, event.Updated)
	// Extension values of any text, encoded as the binding requires.
	msg.Extensions = map[string]string{"deliveryattempts": "3", "deliveryerror": `POST http://x: 503 "Service Unavailable" 100% ü €`}

	g.Expect(n.Send(context.Background(), msg)).To(Succeed())

	m := brokertest.ConsumeNATS(t, st, 1)[0]
	g.Expect(m.Subject()).To(Equal("k8s.team-a.configmaps.settings_v2.updated"))
	g.Expect(m.Data()).To(Equal(msg.Data), "the payload is the shaped data as it is")
	h := m.Headers()
	g.Expect(h.Get("Nats-Msg-Id")).To(Equal("uid-team-a-settings.v2:42:Updated"))
	g.Expect(h.Get("ce-specversion")).To(Equal("1.0"))
	g.Expect(h.Get("ce-datacontenttype")).To(Equal("application/json"))
	g.Expect(h.Get("ce-deliveryerror")).To(Equal("POST%20http://x:%20503%20%22Service%20Unavailable%22%20100%25%20%C3%BC%20%E2%82%AC"))
	g.Expect(h.Get("Content-Type")).To(BeEmpty(), "binary mode says datacontenttype in ce-datacontenttype")
	ce, err := natsBinaryEvent(m)
	g.Expect(err).NotTo(HaveOccurred())
	expectCloudEvent(g, ce, msg)
}

func TestNATSStructuredMode(t *testing.T) {
	g := NewWithT(t)
	s := brokertest.NATSServer(t, nil)
	st := brokertest.NATSStream(t, s, jetstream.StreamConfig{})
	n := natsSink(t, NewBrokers(ClientOptions{}), NATSConfig{Servers: []string{s.ClientURL()}, Structured: true,
		Subject: "k8s.{group}.{resource}.{namespace}.{name}"})
	msg := brokerMessage("team-a", "settings", 42, event.Deleted)
	msg.Extensions = map[string]string{"deliveryattempts": "3"}

	g.Expect(n.Send(context.Background(), msg)).To(Succeed())

	m := brokertest.ConsumeNATS(t, st, 1)[0]
	g.Expect(m.Subject()).To(Equal("k8s.core.configmaps.team-a.settings"))
	g.Expect(m.Headers()).To(HaveLen(2))
	g.Expect(m.Headers().Get("Content-Type")).To(Equal("application/cloudevents+json"))
	g.Expect(m.Headers().Get("Nats-Msg-Id")).To(Equal(msg.Event.ID()))
	var ce cloudevents.Event
	g.Expect(ce.UnmarshalJSON(m.Data())).To(Succeed())
	expectCloudEvent(g, ce, msg)
	g.Expect(ce.Data()).To(MatchJSON(msg.Data))
}

// A redelivery of an event (the same id) within the stream's duplicate window is dropped
// by JetStream, and counts as delivered.
func TestNATSDropsRedeliveries(t *testing.T) {
	g := NewWithT(t)
	s := brokertest.NATSServer(t, nil)
	st := brokertest.NATSStream(t, s, jetstream.StreamConfig{Duplicates: time.Minute})
	n := natsSink(t, NewBrokers(ClientOptions{}), NATSConfig{Servers: []string{s.ClientURL()}})
	msg := brokerMessage("team-a", "settings", 1, event.Added)

	g.Expect(n.Send(context.Background(), msg)).To(Succeed())
	g.Expect(n.Send(context.Background(), msg)).To(Succeed())
	g.Expect(n.Send(context.Background(), brokerMessage("team-a", "settings", 2, event.Updated))).To(Succeed())
	g.Expect(n.Send(context.Background(), msg)).To(Succeed())

	info, err := st.Info(context.Background())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(info.State.Msgs).To(Equal(uint64(2)))
	msgs := brokertest.ConsumeNATS(t, st, 2)
	g.Expect(msgs[0].Headers().Get("ce-id")).To(Equal("uid-team-a-settings:1:Added"))
	g.Expect(msgs[1].Headers().Get("ce-id")).To(Equal("uid-team-a-settings:2:Updated"))
}

// Lanes publish concurrently over one shared connection, each its objects' events in
// order: every object's events are in the stream in order.
func TestNATSKeepsEachObjectInOrder(t *testing.T) {
	g := NewWithT(t)
	s := brokertest.NATSServer(t, nil)
	st := brokertest.NATSStream(t, s, jetstream.StreamConfig{})
	b := NewBrokers(ClientOptions{})
	cfg := NATSConfig{Servers: []string{s.ClientURL()}}
	const lanes, objects, revisions = 8, 40, 10
	var wg sync.WaitGroup
	errs := make(chan error, lanes)
	for lane := range lanes {
		n := natsSink(t, b, cfg) // a sink per lane: they share the connection
		wg.Go(func() {
			for rv := 1; rv <= revisions; rv++ {
				for o := lane; o < objects; o += lanes {
					if err := n.Send(context.Background(), brokerMessage("ns", fmt.Sprintf("obj-%d", o), rv, event.Updated)); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	g.Expect(b.natsConns()).To(Equal(1))

	next := map[string]int{}
	for _, m := range brokertest.ConsumeNATS(t, st, objects*revisions) {
		obj, rv, err := shapedRV(m.Data())
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(m.Subject()).To(Equal("k8s.ns.configmaps." + strings.TrimPrefix(obj, "ns/") + ".updated"))
		g.Expect(rv).To(Equal(next[obj]+1), "%s: revision %d after %d", obj, rv, next[obj])
		next[obj] = rv
	}
	g.Expect(next).To(HaveLen(objects))
}

func TestNATSErrors(t *testing.T) {
	s := brokertest.NATSServer(t, func(o *server.Options) { o.MaxPayload = 8 << 10 })
	brokertest.NATSStream(t, s, jetstream.StreamConfig{})
	brokertest.NATSStream(t, s, jetstream.StreamConfig{Name: "SMALL", Subjects: []string{"small.>"}, MaxMsgSize: 1024})
	b := NewBrokers(ClientOptions{})
	servers := []string{s.ClientURL()}
	msg := brokerMessage("team-a", "settings", 1, event.Added)
	big := brokerMessage("team-a", "big", 1, event.Added)
	big.Data = incompressible(4 << 10)
	huge := brokerMessage("team-a", "huge", 1, event.Added)
	huge.Data = incompressible(16 << 10)

	for _, tc := range []struct {
		name, subject string
		msg           Message
		want          error
		reason        string
		retryable     bool
		tooLarge      bool
	}{
		// No stream takes the subject: JetStream has no responder. Someone may add one.
		{"no stream", "nostream.{name}", msg, jetstream.ErrNoStreamResponse, ReasonClientError, true, false},
		// Over the stream's message size.
		{"stream max size", "small.{name}", big, nil, ReasonInvalid, false, true},
		// Over the server's max_payload: the client refuses it.
		{"max payload", "", huge, nats.ErrMaxPayload, ReasonInvalid, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			n := natsSink(t, b, NATSConfig{Servers: servers, Subject: tc.subject})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := n.Send(ctx, tc.msg)
			g.Expect(err).To(HaveOccurred())
			if tc.want != nil {
				g.Expect(err).To(MatchError(tc.want))
			}
			g.Expect(Retryable(err)).To(Equal(tc.retryable), "%v", err)
			g.Expect(FailureReason(err)).To(Equal(tc.reason), "%v", err)
			g.Expect(TooLarge(err)).To(Equal(tc.tooLarge), "%v", err)
			g.Expect(ctx.Err()).NotTo(HaveOccurred(), "answered, not timed out")
		})
	}
	g := NewWithT(t)
	n := natsSink(t, b, NATSConfig{Servers: servers})
	g.Expect(n.Send(context.Background(), msg)).To(Succeed())
	g.Expect(b.natsConns()).To(Equal(1))
}

func TestNATSCredentialsAndPermissions(t *testing.T) {
	g := NewWithT(t)
	kp, err := nkeys.CreateUser()
	g.Expect(err).NotTo(HaveOccurred())
	seed, err := kp.Seed()
	g.Expect(err).NotTo(HaveOccurred())
	pub, err := kp.PublicKey()
	g.Expect(err).NotTo(HaveOccurred())
	teamA := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{"k8s.team-a.>"}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}
	s := brokertest.NATSServer(t, func(o *server.Options) {
		o.Users = []*server.User{
			{Username: "admin", Password: "admin"},
			{Username: "team-a", Password: "pw", Permissions: teamA},
		}
		o.Nkeys = []*server.NkeyUser{{Nkey: pub, Permissions: teamA}}
	})
	st := brokertest.NATSStream(t, s, jetstream.StreamConfig{}, nats.UserInfo("admin", "admin"))
	b := NewBrokers(ClientOptions{})
	servers := []string{s.ClientURL()}

	n := natsSink(t, b, NATSConfig{Servers: servers, Credentials: NATSCredentials{Username: "team-a", Password: "pw"}})
	g.Expect(n.Send(context.Background(), brokerMessage("team-a", "settings", 1, event.Added))).To(Succeed())
	nk := natsSink(t, b, NATSConfig{Servers: servers, Credentials: NATSCredentials{NKeySeed: string(seed)}})
	g.Expect(nk.Send(context.Background(), brokerMessage("team-a", "settings", 2, event.Updated))).To(Succeed())
	g.Expect(b.natsConns()).To(Equal(2), "one connection per user")
	g.Expect(brokertest.ConsumeNATS(t, st, 2)).To(HaveLen(2))

	// A subject the user may not publish to: the server reports a permission violation,
	// which ends the publish at once instead of at its timeout, not to be retried.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = n.Send(ctx, brokerMessage("team-b", "settings", 1, event.Added))
	g.Expect(err).To(MatchError(nats.ErrPermissionViolation))
	g.Expect(err.Error()).To(ContainSubstring(`Publish to "k8s.team-b.configmaps.settings.added"`))
	g.Expect(Retryable(err)).To(BeFalse())
	g.Expect(FailureReason(err)).To(Equal(ReasonDenied))
	g.Expect(ctx.Err()).NotTo(HaveOccurred(), "ended by the violation, not the timeout")
	g.Expect(n.Send(context.Background(), brokerMessage("team-a", "settings", 3, event.Updated))).To(Succeed(),
		"the connection stays usable")

	// Wrong password: the connection keeps trying, publishes fail as denied at once.
	bad := natsSink(t, b, NATSConfig{Servers: servers, Credentials: NATSCredentials{Username: "team-a", Password: "wrong"}})
	err = bad.Send(context.Background(), brokerMessage("team-a", "settings", 4, event.Updated))
	g.Expect(err).To(MatchError(nats.ErrAuthorization))
	g.Expect(Retryable(err)).To(BeFalse())
	g.Expect(FailureReason(err)).To(Equal(ReasonDenied))
}

func TestNATSToken(t *testing.T) {
	g := NewWithT(t)
	s := brokertest.NATSServer(t, func(o *server.Options) { o.Authorization = "s3cret" })
	st := brokertest.NATSStream(t, s, jetstream.StreamConfig{}, nats.Token("s3cret"))
	n := natsSink(t, NewBrokers(ClientOptions{}), NATSConfig{Servers: []string{s.ClientURL()}, Credentials: NATSCredentials{Token: "s3cret"}})
	g.Expect(n.Send(context.Background(), brokerMessage("team-a", "settings", 1, event.Added))).To(Succeed())
	g.Expect(brokertest.ConsumeNATS(t, st, 1)).To(HaveLen(1))
}

func TestNATSTLS(t *testing.T) {
	g := NewWithT(t)
	serverTLS, clientTLS := testCA(t)
	s := brokertest.NATSServer(t, func(o *server.Options) { o.TLSConfig = serverTLS; o.TLS = true })
	st := brokertest.NATSStream(t, s, jetstream.StreamConfig{}, nats.Secure(clientTLS.Clone()))
	url := strings.Replace(s.ClientURL(), "nats://", "tls://", 1)
	n := natsSink(t, NewBrokers(ClientOptions{}), NATSConfig{Servers: []string{url}, TLS: clientTLS})
	g.Expect(n.Send(context.Background(), brokerMessage("team-a", "settings", 1, event.Added))).To(Succeed())
	g.Expect(brokertest.ConsumeNATS(t, st, 1)).To(HaveLen(1))
}

// Servers out of reach are no error when the sink is built: publishes fail at once as
// retryable, and go through once a server is up.
func TestNATSServerDownThenUp(t *testing.T) {
	g := NewWithT(t)
	addr := closedPort(t)
	b := NewBrokers(ClientOptions{})
	n := natsSink(t, b, NATSConfig{Servers: []string{"nats://" + addr}})
	msg := brokerMessage("team-a", "settings", 1, event.Added)

	start := time.Now()
	err := n.Send(context.Background(), msg)
	g.Expect(err).To(HaveOccurred())
	g.Expect(Retryable(err)).To(BeTrue())
	g.Expect(FailureReason(err)).To(Equal(ReasonConnection), "%v", err)
	g.Expect(err.Error()).To(ContainSubstring("connection refused"))
	g.Expect(time.Since(start)).To(BeNumerically("<", time.Second), "no waiting for a timeout")

	_, port, _ := net.SplitHostPort(addr)
	s := brokertest.NATSServer(t, func(o *server.Options) { o.Port, _ = strconv.Atoi(port) })
	st := brokertest.NATSStream(t, s, jetstream.StreamConfig{})
	g.Eventually(func() error { return n.Send(context.Background(), msg) }, 15*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Expect(brokertest.ConsumeNATS(t, st, 1)).To(HaveLen(1))
}

func TestNATSDeniedAddress(t *testing.T) {
	g := NewWithT(t)
	s := brokertest.NATSServer(t, nil)
	brokertest.NATSStream(t, s, jetstream.StreamConfig{})
	n := natsSink(t, NewBrokers(denyLoopback()), NATSConfig{Servers: []string{s.ClientURL()}})
	err := n.Send(context.Background(), brokerMessage("team-a", "settings", 1, event.Added))
	g.Expect(err).To(MatchError(ErrDeniedAddress))
	g.Expect(Retryable(err)).To(BeFalse())
	g.Expect(FailureReason(err)).To(Equal(ReasonDenied))
}

func TestNATSConfigIsChecked(t *testing.T) {
	g := NewWithT(t)
	kp, err := nkeys.CreateAccount()
	g.Expect(err).NotTo(HaveOccurred())
	accountSeed, err := kp.Seed()
	g.Expect(err).NotTo(HaveOccurred())
	b := NewBrokers(ClientOptions{})
	for _, cfg := range []NATSConfig{
		{Subject: "k8s.{name}"},
		{Servers: []string{"nats://127.0.0.1:4222"}, Subject: "k8s.{nope}"},
		{Servers: []string{"nats://127.0.0.1:4222"}, Credentials: NATSCredentials{Token: "t", Username: "u"}},
		{Servers: []string{"nats://127.0.0.1:4222"}, Credentials: NATSCredentials{Password: "p"}},
		{Servers: []string{"nats://127.0.0.1:4222"}, Credentials: NATSCredentials{NKeySeed: "SUnot-a-seed"}},
		{Servers: []string{"nats://127.0.0.1:4222"}, Credentials: NATSCredentials{NKeySeed: string(accountSeed)}},
	} {
		_, err := b.NATS(cfg)
		g.Expect(err).To(HaveOccurred(), "%+v", cfg)
		g.Expect(cfg.Validate()).To(MatchError(err.Error()), "Validate finds what the constructor finds")
	}
	g.Expect(NATSConfig{Servers: []string{"nats://127.0.0.1:4222"}, Credentials: NATSCredentials{Token: "t"}}.Validate()).To(Succeed())
	g.Expect(b.natsConns()).To(Equal(0))
}

func TestClassifyNATS(t *testing.T) {
	for _, tc := range []struct {
		err       error
		reason    string
		retryable bool
	}{
		{&jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum messages exceeded"}, ReasonServerError, true},
		{&jetstream.APIError{Code: 429}, ReasonThrottled, true},
		{&jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamMessageExceedsMaximum}, ReasonInvalid, false},
		{&jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence}, ReasonClientError, false},
		{&jetstream.APIError{Code: 403}, ReasonDenied, false},
		{fmt.Errorf("nats: %w", jetstream.ErrNoStreamResponse), ReasonClientError, true},
		{nats.ErrNoResponders, ReasonClientError, true},
		{jetstream.ErrInvalidJSAck, ReasonClientError, false},
		{nats.ErrTimeout, ReasonTimeout, true},
		{context.DeadlineExceeded, ReasonTimeout, true},
		{fmt.Errorf("nats: permissions violation: %w", nats.ErrPermissionViolation), ReasonDenied, false},
		{nats.ErrAuthorization, ReasonDenied, false},
		{nats.ErrMaxPayload, ReasonInvalid, false},
		{nats.ErrBadSubject, ReasonInvalid, false},
		{nats.ErrConnectionClosed, ReasonConnection, true},
		{nats.ErrReconnectBufExceeded, ReasonConnection, true},
		{fmt.Errorf("dial: %w", ErrDeniedAddress), ReasonDenied, false},
	} {
		reason, retry, _ := classifyNATS(tc.err)
		if reason != tc.reason || retry != tc.retryable {
			t.Errorf("classifyNATS(%v) = %s, %v; want %s, %v", tc.err, reason, retry, tc.reason, tc.retryable)
		}
	}
}
