package sink

// The Kafka sink is tested against kfake: franz-go's in-process server of the Kafka wire
// protocol. It is a fake implementation of Kafka, not Kafka itself (no real broker can be
// built offline here), but it speaks the protocol a real broker does, produce, fetch,
// metadata, SASL, ACLs, idempotent producers and per-partition errors included, to real
// clients over loopback TCP.

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	. "github.com/onsi/gomega"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/dynamic-notifier/dynamic-notifier/internal/brokertest"
	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

const testTopic = "k8s-events"

// kafkaCluster starts a one-broker cluster with the test topic of 4 partitions.
func kafkaCluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	return brokertest.KafkaCluster(t, 4, []string{testTopic}, opts...)
}

func kafkaSink(t *testing.T, b *Brokers, cfg KafkaConfig) *Kafka {
	t.Helper()
	if cfg.Topic == "" {
		cfg.Topic = testTopic
	}
	k, err := b.Kafka(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	return k
}

// kafkaBinaryEvent decodes a binary-mode record as the Kafka protocol binding says: the
// ce_ headers are the attributes, content-type is datacontenttype, the value is the data.
func kafkaBinaryEvent(r *kgo.Record) (cloudevents.Event, error) {
	ce := cloudevents.New()
	for _, h := range r.Headers {
		switch {
		case h.Key == "content-type":
			ce.SetDataContentType(string(h.Value))
		case strings.HasPrefix(h.Key, "ce_"):
			if err := setAttribute(&ce, h.Key[len("ce_"):], string(h.Value)); err != nil {
				return ce, err
			}
		default:
			return ce, fmt.Errorf("unexpected header %q", h.Key)
		}
	}
	ce.DataEncoded = r.Value
	return ce, nil
}

func TestKafkaBinaryMode(t *testing.T) {
	g := NewWithT(t)
	c := kafkaCluster(t)
	k := kafkaSink(t, NewBrokers(ClientOptions{}), KafkaConfig{Brokers: c.ListenAddrs()})
	msg := brokerMessage("team-a", "settings", 42, event.Updated)
	msg.Extensions = map[string]string{"deliveryattempts": "3", "deliveryerror": "POST http://x: 503 Service Unavailable, ü"}
	resync := Message{Event: event.NewResync(configMaps, "s", "team-a/cms", event.ResyncInfo{Reason: "WatchExpired"}),
		Source: testSource, Data: []byte(`{"shaped":"resync"}`)}

	g.Expect(k.Send(context.Background(), msg)).To(Succeed())
	g.Expect(k.Send(context.Background(), resync)).To(Succeed())

	recs := brokertest.ConsumeKafka(t, c.ListenAddrs(), testTopic, 2)
	byKey := map[string]*kgo.Record{}
	for _, r := range recs {
		byKey[string(r.Key)] = r
	}
	r := byKey["team-a/settings"]
	g.Expect(r).NotTo(BeNil(), "the key is the object's namespace/name")
	g.Expect(r.Value).To(Equal(msg.Data), "the value is the shaped payload as it is")
	headers := map[string]string{}
	for _, h := range r.Headers {
		headers[h.Key] = string(h.Value)
	}
	g.Expect(headers).To(HaveKeyWithValue("content-type", "application/json"))
	g.Expect(headers).To(HaveKeyWithValue("ce_specversion", "1.0"))
	g.Expect(headers).To(HaveKeyWithValue("ce_id", "uid-team-a-settings:42:Updated"))
	g.Expect(headers).To(HaveKeyWithValue("ce_type", "io.dynamicnotifier.resource.updated"))
	g.Expect(headers).To(HaveKeyWithValue("ce_subject", "/api/v1/namespaces/team-a/configmaps/settings"))
	ce, err := kafkaBinaryEvent(r)
	g.Expect(err).NotTo(HaveOccurred())
	expectCloudEvent(g, ce, msg)

	// A Resync names no object: its key is the collection, so resyncs stay in order.
	r = byKey[resync.Event.ObjectPath()]
	g.Expect(r).NotTo(BeNil())
	ce, err = kafkaBinaryEvent(r)
	g.Expect(err).NotTo(HaveOccurred())
	expectCloudEvent(g, ce, resync)
}

func TestKafkaStructuredMode(t *testing.T) {
	g := NewWithT(t)
	c := kafkaCluster(t)
	k := kafkaSink(t, NewBrokers(ClientOptions{}), KafkaConfig{Brokers: c.ListenAddrs(), Structured: true})
	msg := brokerMessage("team-a", "settings", 42, event.Deleted)
	msg.Extensions = map[string]string{"deliveryattempts": "3"}

	g.Expect(k.Send(context.Background(), msg)).To(Succeed())

	r := brokertest.ConsumeKafka(t, c.ListenAddrs(), testTopic, 1)[0]
	g.Expect(string(r.Key)).To(Equal("team-a/settings"))
	g.Expect(r.Headers).To(Equal([]kgo.RecordHeader{{Key: "content-type", Value: []byte("application/cloudevents+json")}}))
	var ce cloudevents.Event
	g.Expect(ce.UnmarshalJSON(r.Value)).To(Succeed())
	expectCloudEvent(g, ce, msg)
	g.Expect(ce.Data()).To(MatchJSON(msg.Data))
}

// A batch is one produce call; every record of it arrives, in order per object.
func TestKafkaBatchArrivesComplete(t *testing.T) {
	g := NewWithT(t)
	c := kafkaCluster(t)
	k := kafkaSink(t, NewBrokers(ClientOptions{}), KafkaConfig{Brokers: c.ListenAddrs(), BatchSize: 50})
	g.Expect(k.BatchSize()).To(Equal(50))
	msgs := make([]Message, 0, 50)
	for i := range 50 {
		msgs = append(msgs, brokerMessage("team-a", fmt.Sprintf("cm-%d", i%5), i, event.Updated))
	}

	g.Expect(k.SendBatch(context.Background(), msgs)).To(Succeed())

	recs := brokertest.ConsumeKafka(t, c.ListenAddrs(), testTopic, 50)
	ids := map[string]bool{}
	last := map[string]int{}
	for _, r := range recs {
		ce, err := kafkaBinaryEvent(r)
		g.Expect(err).NotTo(HaveOccurred())
		ids[ce.ID()] = true
		obj, rv, err := shapedRV(r.Value)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(obj).To(Equal(string(r.Key)))
		g.Expect(rv).To(BeNumerically(">", last[obj]-1), "order of %s", obj)
		last[obj] = rv + 1
	}
	for _, m := range msgs {
		g.Expect(ids).To(HaveKey(m.Event.ID()))
	}
}

// Lanes send concurrently through one shared client, each its objects' events in order,
// in batches of any size: every object's events arrive in order, all in one partition.
func TestKafkaKeepsEachObjectInOrder(t *testing.T) {
	g := NewWithT(t)
	c := kafkaCluster(t, kfake.NumBrokers(3), kfake.SeedTopics(6, testTopic))
	b := NewBrokers(ClientOptions{})
	k := kafkaSink(t, b, KafkaConfig{Brokers: c.ListenAddrs(), BatchSize: 10})
	const lanes, objects, revisions = 8, 40, 25
	var wg sync.WaitGroup
	errs := make(chan error, lanes)
	for lane := range lanes {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(lane), 1))
			var queue []Message
			for rv := 1; rv <= revisions; rv++ {
				for o := lane; o < objects; o += lanes {
					queue = append(queue, brokerMessage("ns", fmt.Sprintf("obj-%d", o), rv, event.Updated))
				}
			}
			for len(queue) > 0 {
				n := min(len(queue), 1+rng.IntN(k.BatchSize()))
				var err error
				if n == 1 {
					err = k.Send(context.Background(), queue[0])
				} else {
					err = k.SendBatch(context.Background(), queue[:n])
				}
				if err != nil {
					errs <- err
					return
				}
				queue = queue[n:]
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	recs := brokertest.ConsumeKafka(t, c.ListenAddrs(), testTopic, objects*revisions)
	next := map[string]int{}
	partition := map[string]int32{}
	for _, r := range recs {
		obj, rv, err := shapedRV(r.Value)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(string(r.Key)).To(Equal(obj))
		if p, ok := partition[obj]; ok {
			g.Expect(r.Partition).To(Equal(p), "%s stays in one partition", obj)
		}
		partition[obj] = r.Partition
		g.Expect(rv).To(Equal(next[obj]+1), "%s: revision %d after %d", obj, rv, next[obj])
		next[obj] = rv
	}
	g.Expect(next).To(HaveLen(objects))
	for obj, rv := range next {
		g.Expect(rv).To(Equal(revisions), obj)
	}
	g.Expect(b.kafkaClients()).To(Equal(1))
}

func TestKafkaSASLAndTopicAuthorization(t *testing.T) {
	g := NewWithT(t)
	writeEvents := []kfake.ACL{
		{Resource: kmsg.ACLResourceTypeTopic, Name: testTopic, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationWrite, Allow: true},
		{Resource: kmsg.ACLResourceTypeTopic, Name: testTopic, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationDescribe, Allow: true},
	}
	c := kafkaCluster(t, kfake.SeedTopics(1, "secrets"), kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser(SASLScramSHA256, "admin", "admin"),
		kfake.User(SASLPlain, "plain-writer", "pw1", writeEvents...),
		kfake.User(SASLScramSHA512, "scram-writer", "pw2", writeEvents...),
	)
	b := NewBrokers(ClientOptions{})
	send := func(cfg KafkaConfig, ctx context.Context) error {
		cfg.Brokers = c.ListenAddrs()
		return kafkaSink(t, b, cfg).Send(ctx, brokerMessage("team-a", "settings", 1, event.Added))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	g.Expect(send(KafkaConfig{SASL: &KafkaSASL{Mechanism: SASLPlain, Username: "plain-writer", Password: "pw1"}}, ctx)).To(Succeed())
	g.Expect(send(KafkaConfig{SASL: &KafkaSASL{Mechanism: "scram-sha-512", Username: "scram-writer", Password: "pw2"}}, ctx)).To(Succeed())
	g.Expect(b.kafkaClients()).To(Equal(2), "one client per SASL user")

	// A topic the user may not write to: denied, and no retry changes that.
	err := send(KafkaConfig{Topic: "secrets", SASL: &KafkaSASL{Mechanism: SASLPlain, Username: "plain-writer", Password: "pw1"}}, ctx)
	g.Expect(err).To(MatchError(kerr.TopicAuthorizationFailed))
	g.Expect(Retryable(err)).To(BeFalse())
	g.Expect(FailureReason(err)).To(Equal(ReasonDenied))
	g.Expect(err.Error()).To(ContainSubstring("kafka topic secrets: "))

	// What was written, read back as the superuser.
	recs := brokertest.ConsumeKafka(t, c.ListenAddrs(), testTopic, 2,
		kgo.SASL(scram.Auth{User: "admin", Pass: "admin"}.AsSha256Mechanism()))
	g.Expect(recs).To(HaveLen(2))

	// Wrong credentials. kfake drops the connection of a failed login; Kafka answers
	// SASL_AUTHENTICATION_FAILED first, which the cluster's control answers here.
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		resp := req.(*kmsg.SASLAuthenticateRequest).ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		resp.ErrorMessage = new("Authentication failed: Invalid username or password")
		return resp, nil, true
	})
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = send(KafkaConfig{SASL: &KafkaSASL{Mechanism: SASLPlain, Username: "plain-writer", Password: "wrong"}}, ctx)
	g.Expect(err).To(MatchError(kerr.SaslAuthenticationFailed))
	g.Expect(Retryable(err)).To(BeFalse(), "%v", err)
	g.Expect(FailureReason(err)).To(Equal(ReasonDenied), "%v", err)
}

func TestKafkaTLS(t *testing.T) {
	g := NewWithT(t)
	serverTLS, clientTLS := testCA(t)
	c := kafkaCluster(t, kfake.TLS(serverTLS))
	k := kafkaSink(t, NewBrokers(ClientOptions{}), KafkaConfig{Brokers: c.ListenAddrs(), TLS: clientTLS})

	g.Expect(k.Send(context.Background(), brokerMessage("team-a", "settings", 1, event.Added))).To(Succeed())

	recs := brokertest.ConsumeKafka(t, c.ListenAddrs(), testTopic, 1, kgo.DialTLSConfig(clientTLS.Clone()))
	g.Expect(string(recs[0].Key)).To(Equal("team-a/settings"))

	// Without TLS the same cluster is out of reach.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	plainSink := kafkaSink(t, NewBrokers(ClientOptions{}), KafkaConfig{Brokers: c.ListenAddrs()})
	err := plainSink.Send(ctx, brokerMessage("team-a", "settings", 2, event.Updated))
	g.Expect(err).To(HaveOccurred())
	g.Expect(Retryable(err)).To(BeTrue())
}

func TestKafkaMessageTooLarge(t *testing.T) {
	g := NewWithT(t)
	c := kafkaCluster(t)
	g.Expect(c.CreateTopic("small", 1, map[string]string{"max.message.bytes": "1024"})).To(Succeed())
	k := kafkaSink(t, NewBrokers(ClientOptions{}), KafkaConfig{Brokers: c.ListenAddrs(), Topic: "small"})
	small := brokerMessage("team-a", "small", 1, event.Added)
	big := brokerMessage("team-a", "big", 1, event.Added)
	big.Data = incompressible(4 << 10)

	// The sink learns the topic's limit before its first produce, so the client refuses
	// the record before sending it, and never puts it in one record batch with others
	// (which the broker would refuse whole).
	err := k.Send(context.Background(), big)
	g.Expect(err).To(MatchError(kerr.MessageTooLarge))
	g.Expect(Retryable(err)).To(BeFalse())
	g.Expect(FailureReason(err)).To(Equal(ReasonInvalid))
	g.Expect(k.client.batchMaxBytes("small")).To(Equal(int32(1024)))

	// In a batch, the batch fails, telling delivery that smaller requests may pass.
	err = k.SendBatch(context.Background(), []Message{small, big})
	g.Expect(err).To(HaveOccurred())
	g.Expect(TooLarge(err)).To(BeTrue())
	g.Expect(k.Send(context.Background(), small)).To(Succeed())
	g.Expect(brokertest.ConsumeKafka(t, c.ListenAddrs(), "small", 2)).To(HaveLen(2), "the small one, twice: the batch and the retry")

	// One the client itself cannot send (over its 1 MB batch limit) fails the same way.
	huge := brokerMessage("team-a", "huge", 1, event.Added)
	huge.Data = incompressible(2 << 20)
	k = kafkaSink(t, NewBrokers(ClientOptions{}), KafkaConfig{Brokers: c.ListenAddrs()})
	err = k.Send(context.Background(), huge)
	g.Expect(err).To(MatchError(kerr.MessageTooLarge))
	g.Expect(Retryable(err)).To(BeFalse())
}

// incompressible is a JSON payload of about n random bytes: the client compresses records,
// and a repeated character would pass any size limit.
func incompressible(n int) []byte {
	pad := make([]byte, n/2)
	for i := range pad {
		pad[i] = byte(rand.Uint32())
	}
	return []byte(`{"pad":"` + hex.EncodeToString(pad) + `"}`)
}

func TestKafkaBrokerErrors(t *testing.T) {
	g := NewWithT(t)
	c := kafkaCluster(t)
	k := kafkaSink(t, NewBrokers(ClientOptions{}), KafkaConfig{Brokers: c.ListenAddrs()})
	msg := brokerMessage("team-a", "settings", 1, event.Added)
	produce := []kmsg.Key{kmsg.Produce}

	// A passing NOT_ENOUGH_REPLICAS is retried by the client within the attempt.
	h := c.Fault(kfake.Fault{Keys: produce, Err: kerr.NotEnoughReplicas, Count: 2})
	g.Expect(k.Send(context.Background(), msg)).To(Succeed())
	g.Expect(h.Hits()).To(Equal(2))

	// One that lasts past the attempt fails it as retryable.
	h = c.Fault(kfake.Fault{Keys: produce, Err: kerr.NotEnoughReplicas, Count: -1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	err := k.Send(ctx, msg)
	cancel()
	h.Remove()
	g.Expect(err).To(HaveOccurred())
	g.Expect(Retryable(err)).To(BeTrue())
	g.Expect(FailureReason(err)).To(Equal(ReasonTimeout))
	g.Expect(h.Hits()).To(BeNumerically(">", 0))

	// A broker that finds a record batch too large: not retried as it is, but a batch may
	// be split.
	h = c.Fault(kfake.Fault{Keys: produce, Err: kerr.MessageTooLarge, Count: 1})
	err = k.Send(context.Background(), msg)
	g.Expect(err).To(MatchError(kerr.MessageTooLarge))
	g.Expect(Retryable(err)).To(BeFalse())
	g.Expect(FailureReason(err)).To(Equal(ReasonInvalid))
	g.Expect(TooLarge(err)).To(BeTrue())
	g.Expect(h.Hits()).To(Equal(1))

	// An invalid record is not retried.
	h = c.Fault(kfake.Fault{Keys: produce, Err: kerr.InvalidRecord, Count: 1})
	err = k.Send(context.Background(), msg)
	g.Expect(err).To(MatchError(kerr.InvalidRecord))
	g.Expect(Retryable(err)).To(BeFalse())
	g.Expect(FailureReason(err)).To(Equal(ReasonInvalid))
	g.Expect(h.Hits()).To(Equal(1))

	g.Expect(k.Send(context.Background(), msg)).To(Succeed())
}

func TestKafkaUnreachableBrokers(t *testing.T) {
	g := NewWithT(t)
	msg := brokerMessage("team-a", "settings", 1, event.Added)

	// Nothing listens: the attempt runs out trying to connect.
	k := kafkaSink(t, NewBrokers(ClientOptions{}), KafkaConfig{Brokers: []string{closedPort(t)}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := k.Send(ctx, msg)
	g.Expect(err).To(HaveOccurred())
	g.Expect(Retryable(err)).To(BeTrue())
	g.Expect(FailureReason(err)).To(Equal(ReasonConnection))
	g.Expect(err.Error()).To(ContainSubstring("connection refused"))

	// A denied address is never dialled, and not retried.
	c := kafkaCluster(t)
	k = kafkaSink(t, NewBrokers(denyLoopback()), KafkaConfig{Brokers: c.ListenAddrs()})
	ctx, cancel = context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err = k.Send(ctx, msg)
	g.Expect(err).To(MatchError(ErrDeniedAddress))
	g.Expect(Retryable(err)).To(BeFalse())
	g.Expect(FailureReason(err)).To(Equal(ReasonDenied))
}

func TestKafkaUnknownTopic(t *testing.T) {
	g := NewWithT(t)
	c := kafkaCluster(t)
	k := kafkaSink(t, NewBrokers(ClientOptions{}), KafkaConfig{Brokers: c.ListenAddrs(), Topic: "missing"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := k.Send(ctx, brokerMessage("team-a", "settings", 1, event.Added))
	g.Expect(err).To(HaveOccurred())
	g.Expect(Retryable(err)).To(BeTrue(), "someone may create the topic")
	g.Expect(FailureReason(err)).To(Equal(ReasonClientError), "%v", err)
}

func TestKafkaSinksShareAClient(t *testing.T) {
	g := NewWithT(t)
	c := kafkaCluster(t)
	g.Expect(c.CreateTopic("other", 1, nil)).To(Succeed())
	b := NewBrokers(ClientOptions{})
	k1, err := b.Kafka(KafkaConfig{Brokers: c.ListenAddrs(), Topic: testTopic})
	g.Expect(err).NotTo(HaveOccurred())
	k2, err := b.Kafka(KafkaConfig{Brokers: c.ListenAddrs(), Topic: "other", Structured: true})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(k2.client).To(BeIdenticalTo(k1.client), "same brokers, credentials and client id")
	k3, err := b.Kafka(KafkaConfig{Brokers: c.ListenAddrs(), Topic: testTopic, ClientID: "other"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(k3.client).NotTo(BeIdenticalTo(k1.client))
	g.Expect(b.kafkaClients()).To(Equal(2))

	g.Expect(k1.Close()).To(Succeed())
	g.Expect(k1.Close()).To(Succeed())
	g.Expect(k2.Send(context.Background(), brokerMessage("team-a", "settings", 1, event.Added))).To(Succeed(),
		"closing one sink leaves the shared client open")
	g.Expect(k2.Close()).To(Succeed())
	g.Expect(k3.Close()).To(Succeed())
	g.Expect(b.kafkaClients()).To(Equal(0))
	g.Expect(brokertest.ConsumeKafka(t, c.ListenAddrs(), "other", 1)).To(HaveLen(1))
}

func TestKafkaConfigIsChecked(t *testing.T) {
	g := NewWithT(t)
	b := NewBrokers(ClientOptions{})
	for _, cfg := range []KafkaConfig{
		{Topic: testTopic},
		{Brokers: []string{"no-port"}, Topic: testTopic},
		{Brokers: []string{"127.0.0.1:9092"}},
		{Brokers: []string{"127.0.0.1:9092"}, Topic: "bad topic"},
		{Brokers: []string{"127.0.0.1:9092"}, Topic: testTopic, SASL: &KafkaSASL{Mechanism: "GSSAPI", Username: "u"}},
		{Brokers: []string{"127.0.0.1:9092"}, Topic: testTopic, SASL: &KafkaSASL{Mechanism: SASLPlain}},
	} {
		_, err := b.Kafka(cfg)
		g.Expect(err).To(HaveOccurred(), "%+v", cfg)
		g.Expect(cfg.Validate()).To(MatchError(err.Error()), "Validate finds what the constructor finds")
	}
	g.Expect(b.kafkaClients()).To(Equal(0))
	g.Expect(KafkaConfig{Brokers: []string{"127.0.0.1:9092"}, Topic: testTopic,
		SASL: &KafkaSASL{Mechanism: "scram-sha-512", Username: "u"}}.Validate()).To(Succeed())
}

func TestClassifyKafka(t *testing.T) {
	for _, tc := range []struct {
		err       error
		reason    string
		retryable bool
	}{
		{kerr.NotEnoughReplicas, ReasonServerError, true},
		{kerr.NotEnoughReplicasAfterAppend, ReasonServerError, true},
		{kerr.NotLeaderForPartition, ReasonServerError, true},
		{kerr.LeaderNotAvailable, ReasonServerError, true},
		{kerr.UnknownServerError, ReasonServerError, true},
		{kerr.RequestTimedOut, ReasonTimeout, true},
		{kerr.ThrottlingQuotaExceeded, ReasonThrottled, true},
		{kerr.UnknownTopicOrPartition, ReasonClientError, true},
		{kerr.TopicAuthorizationFailed, ReasonDenied, false},
		{kerr.ClusterAuthorizationFailed, ReasonDenied, false},
		{kerr.SaslAuthenticationFailed, ReasonDenied, false},
		{kerr.MessageTooLarge, ReasonInvalid, false},
		{kerr.RecordListTooLarge, ReasonInvalid, false},
		{kerr.InvalidRecord, ReasonInvalid, false},
		{kerr.InvalidTopicException, ReasonInvalid, false},
		{fmt.Errorf("wrapped: %w", kerr.PolicyViolation), ReasonInvalid, false},
		{context.DeadlineExceeded, ReasonTimeout, true},
		{kgo.ErrRecordTimeout, ReasonTimeout, true},
		{timeoutError{}, ReasonTimeout, true},
		{fmt.Errorf("dial: %w", ErrDeniedAddress), ReasonDenied, false},
		{kgo.ErrClientClosed, ReasonConnection, false},
		{fmt.Errorf("connection reset by peer"), ReasonConnection, true},
	} {
		reason, retry, _ := classifyKafka(tc.err)
		if reason != tc.reason || retry != tc.retryable {
			t.Errorf("classifyKafka(%v) = %s, %v; want %s, %v", tc.err, reason, retry, tc.reason, tc.retryable)
		}
	}
}
