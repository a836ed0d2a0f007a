package sink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// SASL mechanisms of a Kafka sink.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// DefaultKafkaBatchSize is how many queued messages of a lane go in one produce call when
// KafkaConfig.BatchSize is 0.
const DefaultKafkaBatchSize = 100

// DefaultKafkaClientID names the operator's Kafka clients to the brokers.
const DefaultKafkaClientID = "dynamic-notifier"

// KafkaConfig is a Kafka sink.
type KafkaConfig struct {
	// Brokers are the bootstrap addresses, host:port.
	Brokers []string
	// Topic receives every message.
	Topic string
	// TLS, when set, connects over TLS (see Brokers.TLSConfig).
	TLS *tls.Config
	// SASL, when set, authenticates every connection.
	SASL *KafkaSASL
	// Structured sends each event as application/cloudevents+json in the record value
	// instead of binary mode (ce_ headers, the data as the value).
	Structured bool
	// ClientID names the client to the brokers; DefaultKafkaClientID when empty.
	ClientID string
	// BatchSize is the most queued messages of one delivery lane produced together;
	// DefaultKafkaBatchSize when 0, no batching when 1.
	BatchSize int
}

// KafkaSASL is a SASL user of a Kafka sink.
type KafkaSASL struct {
	// Mechanism is SASLPlain, SASLScramSHA256 or SASLScramSHA512.
	Mechanism          string
	Username, Password string
}

// Kafka publishes CloudEvents to a Kafka topic by the CloudEvents Kafka protocol binding:
// binary content mode by default (the attributes in ce_ headers, content-type for
// datacontenttype, the data as the record value), structured on request. The record key
// is the object's namespace/name, so the events of one object go to one partition, in
// order. Records are written with acks=all by the idempotent producer (franz-go's
// defaults, set explicitly here): a record retried by the client after a lost answer is
// not written twice. A Kafka sink is a Batcher: the messages queued in one delivery lane
// go in one produce call.
type Kafka struct {
	topic      string
	structured bool
	batch      int
	client     *kafkaClient
	release    func()
}

// NewKafka returns a Kafka sink with a client of its own, refusing DefaultDeny; Close it.
// Use Brokers.Kafka to share clients.
func NewKafka(cfg KafkaConfig) (*Kafka, error) {
	return NewBrokers(ClientOptions{}).Kafka(cfg)
}

// Kafka returns a Kafka sink, sharing the client of sinks with the same brokers, TLS
// setting, SASL user and client id. Close it when it is no longer used.
func (b *Brokers) Kafka(cfg KafkaConfig) (*Kafka, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ClientID == "" {
		cfg.ClientID = DefaultKafkaClientID
	}
	mech, err := saslMechanism(cfg.SASL)
	if err != nil {
		return nil, err
	}
	var user []string
	if cfg.SASL != nil {
		user = []string{strings.ToUpper(cfg.SASL.Mechanism), cfg.SASL.Username, cfg.SASL.Password}
	}
	key := configKey("kafka", cfg.Brokers, cfg.TLS, append([]string{cfg.ClientID}, user...)...)
	client, release, err := b.kafka.get(key, func() (*kafkaClient, error) {
		return newKafkaClient(cfg, mech, b.dialer())
	})
	if err != nil {
		return nil, err
	}
	batch := cfg.BatchSize
	if batch == 0 {
		batch = DefaultKafkaBatchSize
	}
	return &Kafka{topic: cfg.Topic, structured: cfg.Structured, batch: max(batch, 1), client: client, release: release}, nil
}

// Validate checks what Brokers.Kafka checks before it opens a client: the broker
// addresses, the topic and the SASL user. An error is the sink's author's to fix.
func (cfg KafkaConfig) Validate() error {
	if len(cfg.Brokers) == 0 {
		return errors.New("a Kafka sink needs at least one broker address")
	}
	for _, addr := range cfg.Brokers {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("broker address %q: %w", addr, err)
		}
	}
	if err := validTopic(cfg.Topic); err != nil {
		return err
	}
	_, err := saslMechanism(cfg.SASL)
	return err
}

// validTopic checks a topic name as Kafka does: 1 to 249 of [a-zA-Z0-9._-], not . or ..
func validTopic(topic string) error {
	if topic == "" || topic == "." || topic == ".." || len(topic) > 249 {
		return fmt.Errorf("invalid Kafka topic %q", topic)
	}
	for _, c := range topic {
		if !topicChar(c) {
			return fmt.Errorf("invalid Kafka topic %q: only letters, digits, '.', '_' and '-' are allowed", topic)
		}
	}
	return nil
}

func topicChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

func saslMechanism(s *KafkaSASL) (sasl.Mechanism, error) {
	if s == nil {
		return nil, nil
	}
	if s.Username == "" {
		return nil, errors.New("Kafka SASL needs a username")
	}
	switch strings.ToUpper(s.Mechanism) {
	case SASLPlain:
		return plain.Auth{User: s.Username, Pass: s.Password}.AsMechanism(), nil
	case SASLScramSHA256:
		return scram.Auth{User: s.Username, Pass: s.Password}.AsSha256Mechanism(), nil
	case SASLScramSHA512:
		return scram.Auth{User: s.Username, Pass: s.Password}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("unknown Kafka SASL mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism)
}

// kafkaClient is one franz-go client, shared by the sinks of one connection setting.
type kafkaClient struct {
	cl      *kgo.Client
	brokers string
	// lastDialErr is the latest failure to connect to a broker: a produce that times out
	// says why when the brokers could not be reached.
	lastDialErr atomic.Pointer[dialFailure]

	// limits are the topics' max.message.bytes below the client's batch limit, and asked
	// the topics whose limit was asked (see learnLimit).
	limitsMu sync.Mutex
	limits   map[string]int32
	asked    map[string]bool
}

// kafkaBatchMaxBytes is franz-go's default largest record batch, within the brokers'
// default message.max.bytes (1048588).
const kafkaBatchMaxBytes = 1_000_012

type dialFailure struct {
	at  time.Time
	err error
}

func newKafkaClient(cfg KafkaConfig, mech sasl.Mechanism, d *dialer) (*kafkaClient, error) {
	kc := &kafkaClient{brokers: strings.Join(cfg.Brokers, ","), limits: map[string]int32{}, asked: map[string]bool{}}
	dial := d.DialContext
	if cfg.TLS != nil {
		// kgo.Dialer replaces kgo.DialTLSConfig: the TLS handshake is done here, on a
		// connection the deny list checked.
		dial = func(ctx context.Context, network, host string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, network, host)
			if err != nil {
				return nil, err
			}
			tc := cfg.TLS.Clone()
			if tc.ServerName == "" {
				tc.ServerName, _, _ = net.SplitHostPort(host)
			}
			tlsConn := tls.Client(conn, tc)
			if err := tlsConn.HandshakeContext(ctx); err != nil {
				_ = conn.Close()
				return nil, err
			}
			return tlsConn, nil
		}
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		kgo.Dialer(dial),
		kgo.WithHooks(kc),
		// franz-go's defaults, stated so that a change of defaults cannot weaken them:
		// every in-sync replica acknowledges a record, and the idempotent producer keeps
		// the client's own retries from writing a record twice or out of order.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// The client retries a partition's retryable errors (NOT_ENOUGH_REPLICAS, a
		// moved leader) after refreshing metadata, at most this often: the default 5s
		// would spend half of a delivery attempt's default 10s on one retry, and a
		// cancelled attempt waits for the next retry to end.
		kgo.MetadataMinAge(time.Second),
		kgo.ProducerBatchMaxBytesFn(kc.batchMaxBytes),
	}
	if mech != nil {
		opts = append(opts, kgo.SASL(mech))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("Kafka client: %w", err)
	}
	kc.cl = cl
	return kc, nil
}

// OnBrokerConnect implements kgo.HookBrokerConnect.
func (kc *kafkaClient) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil {
		kc.lastDialErr.Store(&dialFailure{at: time.Now(), err: err})
	}
}

func (kc *kafkaClient) close() { kc.cl.Close() }

// batchMaxBytes is the largest record batch the client builds for a topic: the topic's
// max.message.bytes when it is lower than the default. Records of different lanes and
// sinks share a partition's batches; were a batch larger than the topic takes, the broker
// would refuse it whole, failing small records with a large one for good. With the
// topic's limit, the client never builds such a batch, and a record over it fails alone
// before it is sent. franz-go asks once per partition, when it first produces to it.
func (kc *kafkaClient) batchMaxBytes(topic string) int32 {
	kc.limitsMu.Lock()
	defer kc.limitsMu.Unlock()
	if v, ok := kc.limits[topic]; ok {
		return v
	}
	return kafkaBatchMaxBytes
}

// learnLimit asks the brokers for topic's max.message.bytes before the client first
// produces to it. A refused answer (producers often may not describe configs) keeps the
// default; no answer is asked again on the next send.
func (kc *kafkaClient) learnLimit(ctx context.Context, topic string) {
	kc.limitsMu.Lock()
	asked := kc.asked[topic]
	kc.limitsMu.Unlock()
	if asked {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req := kmsg.NewPtrDescribeConfigsRequest()
	res := kmsg.NewDescribeConfigsRequestResource()
	res.ResourceType = kmsg.ConfigResourceTypeTopic
	res.ResourceName = topic
	res.ConfigNames = []string{"max.message.bytes"}
	req.Resources = append(req.Resources, res)
	resp, err := req.RequestWith(ctx, kc.cl)
	kc.limitsMu.Lock()
	defer kc.limitsMu.Unlock()
	if _, refused := errors.AsType[*kerr.Error](err); refused {
		kc.asked[topic] = true
	}
	if err != nil {
		return
	}
	kc.asked[topic] = true
	for _, r := range resp.Resources {
		if r.ErrorCode != 0 || r.ResourceName != topic {
			continue
		}
		for _, c := range r.Configs {
			if c.Name != "max.message.bytes" || c.Value == nil {
				continue
			}
			if v, err := strconv.ParseInt(*c.Value, 10, 32); err == nil && v >= 512 && v < kafkaBatchMaxBytes {
				kc.limits[topic] = int32(v)
			}
		}
	}
}

// BatchSize is how many queued messages go in one produce call.
func (k *Kafka) BatchSize() int { return k.batch }

// Close gives the sink's client back: the client closes when no sink uses it. Close the
// sink only once no delivery uses it. Calling Close again does nothing.
func (k *Kafka) Close() error {
	k.release()
	return nil
}

// Send publishes one message.
func (k *Kafka) Send(ctx context.Context, msg Message) error {
	return k.SendBatch(ctx, []Message{msg})
}

// SendBatch publishes msgs as records of one produce call and waits until the brokers
// acknowledged them all. One failed record fails the batch; records of it may still have
// been written (delivery is at least once; ce_id tells repeats).
func (k *Kafka) SendBatch(ctx context.Context, msgs []Message) error {
	records := make([]*kgo.Record, len(msgs))
	for i, msg := range msgs {
		r, err := k.record(msg)
		if err != nil {
			return Unencodable(msg.Event, err)
		}
		records[i] = r
	}
	start := time.Now()
	k.client.learnLimit(ctx, k.topic)
	results := k.client.cl.ProduceSync(ctx, records...)
	var first error
	failed := 0
	for _, r := range results {
		if r.Err != nil {
			failed++
			if first == nil {
				first = r.Err
			}
		}
	}
	if first == nil {
		return nil
	}
	return k.client.failure(k.topic, first, failed, len(records), start)
}

// record is msg as a Kafka record of the sink's topic.
func (k *Kafka) record(msg Message) (*kgo.Record, error) {
	return KafkaRecord(k.topic, k.structured, msg)
}

// KafkaRecord is msg as a Kafka sink sends it to topic, in structured or binary mode.
func KafkaRecord(topic string, structured bool, msg Message) (*kgo.Record, error) {
	ev := msg.Event
	r := &kgo.Record{Topic: topic, Key: []byte(kafkaKey(msg))}
	if structured {
		body, err := structuredBody(msg)
		if err != nil {
			return nil, err
		}
		r.Value = body
		r.Headers = []kgo.RecordHeader{{Key: "content-type", Value: []byte(StructuredContentType)}}
		return r, nil
	}
	data, err := messageData(msg)
	if err != nil {
		return nil, err
	}
	r.Value = data
	h := make([]kgo.RecordHeader, 0, 7+len(msg.Extensions))
	h = append(h,
		kgo.RecordHeader{Key: "ce_specversion", Value: []byte("1.0")},
		kgo.RecordHeader{Key: "ce_id", Value: []byte(validUTF8(ev.ID()))},
		kgo.RecordHeader{Key: "ce_source", Value: []byte(validUTF8(msg.Source))},
		kgo.RecordHeader{Key: "ce_type", Value: []byte(CloudEventType(ev.Type))},
		kgo.RecordHeader{Key: "ce_subject", Value: []byte(validUTF8(ev.ObjectPath()))},
		kgo.RecordHeader{Key: "ce_time", Value: []byte(ev.Time())},
		kgo.RecordHeader{Key: "content-type", Value: []byte("application/json")},
	)
	for _, name := range sortedKeys(msg.Extensions) {
		h = append(h, kgo.RecordHeader{Key: "ce_" + name, Value: []byte(validUTF8(msg.Extensions[name]))})
	}
	r.Headers = h
	return r, nil
}

// kafkaKey is the record key: the object's namespace/name, so one object's events share a
// partition; for a Resync, which names no object, the collection's path.
func kafkaKey(msg Message) string {
	if msg.Event.Type != event.Resync {
		if key := msg.Event.ObjectKey(); key != "" {
			return key
		}
	}
	return msg.Event.ObjectPath()
}

// failure sorts a failed produce. started is when the produce began: a connection failure
// since then explains a timeout.
func (kc *kafkaClient) failure(topic string, err error, failed, total int, started time.Time) error {
	if failed < total {
		err = fmt.Errorf("%d of %d records failed: %w", failed, total, err)
	}
	berr := &BrokerError{Broker: "kafka", Target: "topic " + topic, Err: err}
	berr.Reason, berr.Retry, berr.TooLarge = classifyKafka(err)
	if berr.Reason == ReasonTimeout {
		if df := kc.lastDialErr.Load(); df != nil && !df.at.Before(started) {
			// The client kept trying to reach the brokers until the attempt ran out: the
			// connection failure is what went wrong (a refused login, a denied address,
			// a refused connection).
			berr.Err = fmt.Errorf("%w; could not connect to the brokers (%s): %w", err, kc.brokers, df.err)
			berr.Reason, berr.Retry, _ = classifyKafka(df.err)
			if berr.Reason == ReasonTimeout || berr.Reason == ReasonServerError {
				berr.Reason, berr.Retry = ReasonConnection, true
			}
		}
	}
	return berr
}

// classifyKafka sorts a produce error: what the brokers answered (Kafka's error codes),
// what the client decided, or a connection failure.
func classifyKafka(err error) (reason string, retry, tooLarge bool) {
	if errors.Is(err, ErrDeniedAddress) {
		return ReasonDenied, false, false
	}
	if kerrv, ok := errors.AsType[*kerr.Error](err); ok {
		switch kerrv {
		case kerr.TopicAuthorizationFailed, kerr.ClusterAuthorizationFailed, kerr.GroupAuthorizationFailed,
			kerr.TransactionalIDAuthorizationFailed, kerr.SaslAuthenticationFailed, kerr.UnsupportedSaslMechanism,
			kerr.IllegalSaslState, kerr.DelegationTokenAuthorizationFailed:
			return ReasonDenied, false, false
		case kerr.MessageTooLarge, kerr.RecordListTooLarge:
			return ReasonInvalid, false, true
		case kerr.InvalidRecord, kerr.CorruptMessage, kerr.InvalidTopicException, kerr.InvalidRequiredAcks,
			kerr.InvalidTimestamp, kerr.PolicyViolation, kerr.UnsupportedForMessageFormat, kerr.UnsupportedVersion,
			kerr.InvalidRecordState:
			return ReasonInvalid, false, false
		case kerr.ThrottlingQuotaExceeded:
			return ReasonThrottled, true, false
		case kerr.RequestTimedOut:
			return ReasonTimeout, true, false
		case kerr.UnknownTopicOrPartition, kerr.UnknownTopicID:
			// No such topic (yet): like an HTTP 404, but someone may create it.
			return ReasonClientError, true, false
		}
		// NOT_ENOUGH_REPLICAS, NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE,
		// KAFKA_STORAGE_ERROR, UNKNOWN_SERVER_ERROR...: the cluster's trouble, which passes.
		return ReasonServerError, true, false
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, kgo.ErrRecordTimeout),
		errors.Is(err, kgo.ErrRecordRetries):
		return ReasonTimeout, true, false
	case errors.Is(err, kgo.ErrClientClosed):
		return ReasonConnection, false, false
	}
	if nerr, ok := errors.AsType[net.Error](err); ok && nerr.Timeout() {
		return ReasonTimeout, true, false
	}
	return ReasonConnection, true, false
}

// kafkaClients is for tests: how many Kafka clients b holds.
func (b *Brokers) kafkaClients() int { return b.kafka.len() }

var _ Batcher = (*Kafka)(nil)
