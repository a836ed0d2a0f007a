// Package brokertest runs the brokers tests publish to inside the test process, on
// loopback: a Kafka-protocol cluster (kfake) and a NATS JetStream server (nats-server), with
// consumers that read back what arrived.
package brokertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// consumeTimeout bounds how long a consumer waits for what it expects.
const consumeTimeout = 20 * time.Second

// KafkaCluster starts a one-broker cluster with the topics, of partitions each, stopped
// when the test ends.
func KafkaCluster(t testing.TB, partitions int32, topics []string, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(partitions, topics...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// ConsumeKafka reads n records of topic from its start with a client of its own, failing
// the test when they do not come within 20 seconds or more come.
func ConsumeKafka(t testing.TB, addrs []string, topic string, n int, opts ...kgo.Opt) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), consumeTimeout)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records of topic %s within %s", len(out), n, topic, consumeTimeout)
		}
		fetches.EachError(func(topic string, p int32, err error) { t.Fatalf("fetching %s/%d: %v", topic, p, err) })
		out = append(out, fetches.Records()...)
	}
	if len(out) != n {
		t.Fatalf("consumed %d records of topic %s, want %d", len(out), topic, n)
	}
	return out
}

// NATSServer starts a JetStream server on 127.0.0.1, shut down when the test ends;
// configure may add users, limits or TLS.
func NATSServer(t testing.TB, configure func(*server.Options)) *server.Server {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
	if configure != nil {
		configure(opts)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// NATSStream creates a stream on s, connecting with opts: by default K8S over k8s.> with
// a duplicate window of a minute.
func NATSStream(t testing.TB, s *server.Server, cfg jetstream.StreamConfig, opts ...nats.Option) jetstream.Stream {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name == "" {
		cfg.Name = "K8S"
	}
	if cfg.Subjects == nil {
		cfg.Subjects = []string{"k8s.>"}
	}
	if cfg.Duplicates == 0 {
		cfg.Duplicates = time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// ConsumeNATS reads n messages of the stream from its start with an ordered consumer,
// failing the test when they do not come within 20 seconds.
func ConsumeNATS(t testing.TB, st jetstream.Stream, n int) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), consumeTimeout)
	defer cancel()
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for len(out) < n && ctx.Err() == nil {
		batch, err := cons.Fetch(n-len(out), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			out = append(out, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatal(err)
		}
	}
	if len(out) != n {
		t.Fatalf("consumed %d of %d messages of stream %s within %s", len(out), n, st.CachedInfo().Config.Name, consumeTimeout)
	}
	return out
}
