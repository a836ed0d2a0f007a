package controller_test

// Broker sinks end to end: subscriptions deliver to an in-process Kafka-protocol cluster
// (franz-go's kfake) and to an embedded nats-server with JetStream, both on loopback ports,
// under the operator's default authorization (the subscription's ServiceAccount must be
// allowed to get the Secrets its sink reads).

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/gomega"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/brokertest"
)

func brokerAddresses(c *kfake.Cluster) []notifyv1.BrokerAddress {
	addrs := c.ListenAddrs()
	out := make([]notifyv1.BrokerAddress, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, notifyv1.BrokerAddress(a))
	}
	return out
}

func recordHeader(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func secret(ns, name string, data map[string]string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, StringData: data}
}

// TestKafkaSink: a subscription publishes an object's Added, Updated and Deleted to a
// Kafka topic, in order, in binary mode with the object as the key, logging in with SCRAM
// from a Secret its ServiceAccount may get. A SASL Secret that does not exist is
// InvalidSink until it is created.
func TestKafkaSink(t *testing.T) {
	g := NewWithT(t)
	startOperator(t)
	ns := newNamespace(t)
	const topic = "k8s-events"
	c := brokertest.KafkaCluster(t, 1, []string{topic}, kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "writer", "pw"))
	login := kgo.SASL(scram.Auth{User: "writer", Pass: "pw"}.AsSha512Mechanism())
	create(t, secret(ns, "kafka-user", map[string]string{"username": "writer", "password": "pw"}))
	grantSecrets(t, ns, "kafka-user", "late-user")

	kafkaSub := func(name, secretName string) *notifyv1.WatchSubscription {
		ws := subscription(ns, name, "")
		ws.Spec.Sink = &notifyv1.Sink{Kafka: notifyv1.KafkaSink{Brokers: brokerAddresses(c), Topic: topic,
			SASL: notifyv1.KafkaSASL{Mechanism: notifyv1.KafkaSASLScramSHA512,
				SecretRef: notifyv1.LocalSecretReference{Name: secretName}}}}
		return ws
	}
	ws := kafkaSub("to-kafka", "kafka-user")
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	g.Expect(status(g, ws).Sink).To(Equal("kafka"))

	cm := configMap(ns, "settings", nil)
	create(t, cm)
	touch(t, cm)
	g.Expect(k8s.Delete(context.Background(), cm)).To(Succeed())

	recs := brokertest.ConsumeKafka(t, c.ListenAddrs(), topic, 3, login)
	types, ids := make([]string, 0, len(recs)), make([]string, 0, len(recs))
	for _, r := range recs {
		g.Expect(string(r.Key)).To(Equal(ns+"/settings"), "the key is the object")
		g.Expect(recordHeader(r, "ce_specversion")).To(Equal("1.0"))
		g.Expect(recordHeader(r, "ce_source")).To(Equal("/apis/notify.dynamicnotifier.io/v1alpha1/namespaces/" + ns +
			"/watchsubscriptions/to-kafka"))
		g.Expect(recordHeader(r, "ce_subject")).To(Equal("/api/v1/namespaces/" + ns + "/configmaps/settings"))
		g.Expect(recordHeader(r, "content-type")).To(Equal("application/json"), "binary mode")
		g.Expect(string(r.Value)).To(ContainSubstring(`"name":"settings"`), "the value is the object")
		types = append(types, strings.TrimPrefix(recordHeader(r, "ce_type"), "io.dynamicnotifier.resource."))
		ids = append(ids, recordHeader(r, "ce_id"))
	}
	g.Expect(types).To(Equal([]string{"added", "updated", "deleted"}), "the object's events in order")
	g.Expect(slices.Compact(slices.Sorted(slices.Values(ids)))).To(HaveLen(3), "three events, each once")
	g.Eventually(func(g Gomega) { g.Expect(status(g, ws).EventsDelivered).To(BeEquivalentTo(3)) }).
		WithTimeout(10*time.Second).Should(Succeed(), "the deliveries are counted")
	g.Expect(counter(g, "dynamicnotifier_events_delivered_total", ns, "to-kafka")).To(Equal(3.0))

	// The SASL Secret does not exist yet: InvalidSink, naming it; created, the sink starts.
	late := kafkaSub("late-secret", "late-user")
	create(t, late)
	cond := waitReason(t, late, notifyv1.ReasonInvalidSink, 10*time.Second)
	g.Expect(cond.Message).To(Equal("spec.sink.kafka.sasl.secretRef: Secret late-user not found in namespace " + ns))
	create(t, secret(ns, "late-user", map[string]string{"username": "writer", "password": "pw"}))
	waitReason(t, late, notifyv1.ReasonWatching, 10*time.Second)
	create(t, configMap(ns, "after", nil))
	after := brokertest.ConsumeKafka(t, c.ListenAddrs(), topic, 5, login)[3:]
	for _, r := range after {
		g.Expect(string(r.Key)).To(Equal(ns+"/after"), "both subscriptions publish the new ConfigMap")
	}
}

// TestKafkaDeadLetterSink: what an HTTP sink refuses for good goes to a Kafka topic, with
// the failure in the deliveryerror extension.
func TestKafkaDeadLetterSink(t *testing.T) {
	g := NewWithT(t)
	// The cluster outlives the operator (cleanups run last first): on a loaded machine, a
	// manager stopping after its dead-letter cluster had gone once overran its 30s grace.
	c := brokertest.KafkaCluster(t, 1, []string{"dead-letters"})
	startOperator(t)
	ns := newNamespace(t)
	sk := newSink(t)
	sk.status = func() int { return 400 }
	ws := subscription(ns, "rejected", sk.URL)
	ws.Spec.Delivery = fastRetry(5)
	ws.Spec.Delivery.DeadLetterSink = &notifyv1.Sink{Kafka: notifyv1.KafkaSink{Brokers: brokerAddresses(c),
		Topic: "dead-letters", ContentMode: notifyv1.ContentModeStructured}}
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)

	create(t, configMap(ns, "c", nil))
	r := brokertest.ConsumeKafka(t, c.ListenAddrs(), "dead-letters", 1)[0]
	g.Expect(sk.Events()).To(HaveLen(1), "a 400 is not retried")
	g.Expect(string(r.Key)).To(Equal(ns + "/c"))
	g.Expect(recordHeader(r, "content-type")).To(Equal("application/cloudevents+json"), "structured mode")
	g.Expect(string(r.Value)).To(And(
		ContainSubstring(`"id":"`+sk.Events()[0].ID+`"`),
		ContainSubstring(`"deliveryattempts":"1"`),
		ContainSubstring(`"deliveryerror":"POST `+sk.URL+`: 400 Bad Request"`)))
	g.Eventually(func(g Gomega) {
		g.Expect(counter(g, "dynamicnotifier_events_dead_lettered_total", ns, "rejected")).To(Equal(1.0))
	}).WithTimeout(10 * time.Second).Should(Succeed())
}

// natsServer starts a JetStream server on 127.0.0.1 with users admin, k8s and other, and
// the stream K8S over k8s.>.
func natsServer(t *testing.T) (*server.Server, jetstream.Stream) {
	t.Helper()
	s := brokertest.NATSServer(t, func(o *server.Options) {
		o.Users = []*server.User{{Username: "admin", Password: "admin"}, {Username: "k8s", Password: "pw"},
			{Username: "other", Password: "pw2"}}
	})
	return s, brokertest.NATSStream(t, s, jetstream.StreamConfig{}, nats.UserInfo("admin", "admin"))
}

// operatorUsers lists the users of the operator's connections to s (named dynamic-notifier).
func operatorUsers(g Gomega, s *server.Server) []string {
	connz, err := s.Connz(&server.ConnzOptions{Username: true})
	g.Expect(err).NotTo(HaveOccurred())
	var users []string
	for _, c := range connz.Conns {
		if c.Name == "dynamic-notifier" {
			users = append(users, c.AuthorizedUser)
		}
	}
	return users
}

// TestNATSSink: a subscription publishes to JetStream on the subject its template makes,
// with the event id as Nats-Msg-Id. A wrong password is DeliveryFailing, naming the cause.
// Other credentials replace the connection, and deleting the subscription closes it.
func TestNATSSink(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	startOperator(t)
	ns := newNamespace(t)
	srv, st := natsServer(t)
	create(t, secret(ns, "nats-user", map[string]string{"username": "k8s", "password": "pw"}))
	create(t, secret(ns, "nats-other", map[string]string{"username": "other", "password": "pw2"}))
	create(t, secret(ns, "nats-wrong", map[string]string{"username": "k8s", "password": "wrong"}))
	grantSecrets(t, ns, "nats-user", "nats-other", "nats-wrong")
	natsSub := func(name, secretName string) *notifyv1.WatchSubscription {
		ws := subscription(ns, name, "")
		ws.Spec.Sink = &notifyv1.Sink{NATS: notifyv1.NATSSink{Servers: []notifyv1.NATSServerURL{notifyv1.NATSServerURL(srv.ClientURL())},
			Subject:     "k8s.{namespace}.{kind}.{name}.{type}",
			Credentials: notifyv1.NATSCredentials{SecretRef: notifyv1.LocalSecretReference{Name: secretName}}}}
		return ws
	}

	ws := natsSub("to-nats", "nats-user")
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	g.Expect(status(g, ws).Sink).To(Equal("nats"))
	cm := configMap(ns, "settings", nil)
	create(t, cm)
	touch(t, cm)
	g.Expect(k8s.Delete(ctx, cm)).To(Succeed())
	msgs := brokertest.ConsumeNATS(t, st, 3)
	for i, typ := range []string{"added", "updated", "deleted"} {
		m := msgs[i]
		g.Expect(m.Subject()).To(Equal("k8s."+ns+".ConfigMap.settings."+typ), "the subject template, events in order")
		g.Expect(m.Headers().Get("ce-type")).To(Equal("io.dynamicnotifier.resource." + typ))
		g.Expect(m.Headers().Get("Nats-Msg-Id")).NotTo(BeEmpty())
		g.Expect(m.Headers().Get("Nats-Msg-Id")).To(Equal(m.Headers().Get("ce-id")), "the stream deduplicates by event id")
		g.Expect(string(m.Data())).To(ContainSubstring(`"name":"settings"`))
	}
	g.Eventually(func(g Gomega) { g.Expect(status(g, ws).EventsDelivered).To(BeEquivalentTo(3)) }).
		WithTimeout(10*time.Second).Should(Succeed(), "the deliveries are counted")
	g.Expect(operatorUsers(g, srv)).To(Equal([]string{"k8s"}))

	// A wrong password: delivery fails for good (a retry cannot fix it), and says why.
	wrong := natsSub("wrong-password", "nats-wrong")
	create(t, wrong)
	waitReason(t, wrong, notifyv1.ReasonWatching, 10*time.Second)
	create(t, configMap(ns, "probe", nil))
	cond := waitReason(t, wrong, notifyv1.ReasonDeliveryFailing, 15*time.Second)
	g.Expect(cond.Message).To(And(ContainSubstring("nats subject k8s."+ns+".ConfigMap.probe.added"),
		ContainSubstring("nats: Authorization Violation")))
	g.Eventually(func(g Gomega) {
		v, ok := metricValue(g, "dynamicnotifier_events_failed_total", "namespace", ns, "subscription", "wrong-password",
			"reason", "denied")
		g.Expect(ok).To(BeTrue(), "no failed counter with reason denied")
		g.Expect(v).To(Equal(1.0))
	}).WithTimeout(10 * time.Second).Should(Succeed())
	g.Expect(brokertest.ConsumeNATS(t, st, 4)[3].Subject()).To(Equal("k8s."+ns+".ConfigMap.probe.added"),
		"the subscription with the right password delivered it")

	// Other credentials: a new connection takes over, the old one closes once the old
	// pipeline has stopped.
	patchSpec(t, ws, func(ws *notifyv1.WatchSubscription) { ws.Spec.Sink.NATS.Credentials.SecretRef.Name = "nats-other" })
	g.Eventually(func(g Gomega) []string { return operatorUsers(g, srv) }).WithTimeout(15*time.Second).
		Should(Equal([]string{"other"}), "the connection of the replaced sink is closed")
	create(t, configMap(ns, "after", nil))
	g.Expect(brokertest.ConsumeNATS(t, st, 5)[4].Subject()).To(Equal("k8s." + ns + ".ConfigMap.after.added"))

	// Deleted, the subscription's connection closes.
	g.Expect(k8s.Delete(ctx, ws)).To(Succeed())
	g.Eventually(func(g Gomega) []string { return operatorUsers(g, srv) }).WithTimeout(15*time.Second).
		Should(BeEmpty(), "the sink's connection is closed with its subscription")
}

// TestKafkaClusterWatchSink: the platform team's Kafka sink, whose SASL Secret lives in the
// operator's namespace and is read with the operator's rights: the subscription's
// ServiceAccount may not get it, and needs not.
func TestKafkaClusterWatchSink(t *testing.T) {
	g := NewWithT(t)
	operatorNS := newNamespace(t)
	opts := testOptions()
	opts.OperatorNamespace = operatorNS
	startOperatorWith(t, cfg, opts)
	c := brokertest.KafkaCluster(t, 1, []string{"platform-events"}, kfake.EnableSASL(), kfake.Superuser("PLAIN", "platform", "s3cret"))
	create(t, secret(operatorNS, "kafka-platform", map[string]string{"username": "platform", "password": "s3cret"}))
	cluster := &notifyv1.ClusterWatchSink{ObjectMeta: metav1.ObjectMeta{Name: "kafka-" + randomSuffix()},
		Spec: notifyv1.ClusterWatchSinkSpec{
			WatchSinkSpec: notifyv1.WatchSinkSpec{Sink: notifyv1.Sink{Kafka: notifyv1.KafkaSink{Brokers: brokerAddresses(c),
				Topic: "platform-events", SASL: notifyv1.KafkaSASL{Mechanism: notifyv1.KafkaSASLPlain,
					SecretRef: notifyv1.LocalSecretReference{Name: "kafka-platform"}}}}},
			NamespaceSelector: &metav1.LabelSelector{},
		}}
	create(t, cluster)
	g.Eventually(func(g Gomega) {
		ready := sinkCondition(g, cluster, func() []metav1.Condition { return cluster.Status.Conditions }, notifyv1.ConditionReady)
		g.Expect(ready).NotTo(BeNil())
		g.Expect(ready.Status).To(Equal(metav1.ConditionTrue), "%s: %s", ready.Reason, ready.Message)
	}).WithTimeout(10 * time.Second).Should(Succeed())

	ns := newNamespace(t)
	ws := byRef(ns, "to-platform", notifyv1.SinkKindClusterWatchSink, cluster.Name)
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	g.Expect(status(g, ws).Sink).To(Equal("ClusterWatchSink/" + cluster.Name))
	create(t, configMap(ns, "c", nil))
	r := brokertest.ConsumeKafka(t, c.ListenAddrs(), "platform-events", 1, kgo.SASL(plain.Auth{User: "platform", Pass: "s3cret"}.AsMechanism()))[0]
	g.Expect(string(r.Key)).To(Equal(ns + "/c"))
	g.Expect(recordHeader(r, "ce_type")).To(Equal("io.dynamicnotifier.resource.added"))
}
