package controller

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/authz"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

// Keys read from Secrets when a reference names none.
const (
	defaultCAKey      = notifyv1.DefaultCAKey
	defaultSigningKey = notifyv1.DefaultSigningKey
)

// sinkError is a sink that cannot be built from its spec and Secrets. Its message names
// Secrets and keys, never their values. cause, when set, is the API error of a Secret read.
type sinkError struct {
	msg   string
	cause error
	// denied: the subscription's ServiceAccount may not get a Secret or Service it names.
	denied bool
}

func (e *sinkError) Error() string { return e.msg }
func (e *sinkError) Unwrap() error { return e.cause }

// sinkCouldNotAsk tells a Secret that could not be read (see couldNotAsk) from a sink that
// is wrong: a Secret that does not exist, a key it lacks, a CA that does not parse.
func sinkCouldNotAsk(err error) bool {
	se, ok := errors.AsType[*sinkError](err)
	return ok && se.cause != nil && couldNotAsk(se.cause)
}

// builtSinks is what a subscription delivers to, and a fingerprint of what they were built
// from (the sink object's generation, the Secrets' versions): a changed fingerprint rebuilds
// the pipeline.
type builtSinks struct {
	sink, deadLetter preparedSink
	fingerprint      string
}

// preparedSink is a sink built from its spec and Secrets, checked. An HTTP or log sink is
// ready; a broker sink connects only when opened, for a pipeline that starts: every
// reconcile prepares a subscription's sinks to compare their fingerprint with what runs,
// and the sink objects' status prepares them to check them.
type preparedSink struct {
	ready sink.Sink
	// open connects a broker sink; field names it in errors.
	open  func() (sink.Sink, error)
	field string
}

// set tells whether there is a sink (a subscription may have no dead-letter sink).
func (p preparedSink) set() bool { return p.ready != nil || p.open != nil }

// openedSinks are what a pipeline delivers to. Close them once it has stopped: a broker
// sink closed under a delivery in flight fails it, not as retryable.
type openedSinks struct {
	sink, deadLetter sink.Sink
}

// open connects the broker sinks. An error is the sink's to fix: a setting the broker
// client refuses (the settings were checked when the sinks were prepared).
func (b builtSinks) open() (openedSinks, error) {
	var out openedSinks
	var err error
	if out.sink, err = b.sink.get(); err != nil {
		return openedSinks{}, err
	}
	if b.deadLetter.set() {
		if out.deadLetter, err = b.deadLetter.get(); err != nil {
			out.close()
			return openedSinks{}, err
		}
	}
	return out, nil
}

func (p preparedSink) get() (sink.Sink, error) {
	if p.open == nil {
		return p.ready, nil
	}
	s, err := p.open()
	if err != nil {
		return nil, &sinkError{msg: fmt.Sprintf("%s: %v", p.field, err)}
	}
	return s, nil
}

// close closes the sinks that hold connections (broker sinks give their shared client back).
func (o openedSinks) close() {
	for _, s := range []sink.Sink{o.sink, o.deadLetter} {
		if c, ok := s.(io.Closer); ok {
			_ = c.Close()
		}
	}
}

// sinkSource says where a sink's Secrets are read and as whom.
type sinkSource struct {
	// namespace holds the Secrets: the subscription's, or the operator's for a
	// ClusterWatchSink.
	namespace string
	// account, when set, must be allowed to get each Secret (and a Service of another
	// namespace) before the operator reads it: the subscription's ServiceAccount, for sinks
	// its namespace's people wrote. Nil for a ClusterWatchSink: the platform team's.
	account *types.NamespacedName
	// owner names the sink in the log sink's lines.
	owner types.NamespacedName
}

// sourceOf is where the Secrets of a sink written in ws or in a WatchSink of its namespace
// are read: there, as its ServiceAccount.
func sourceOf(ws *notifyv1.WatchSubscription) sinkSource {
	sa := types.NamespacedName{Namespace: ws.Namespace,
		Name: cmp.Or(ws.Spec.ServiceAccountName, notifyv1.DefaultServiceAccountName)}
	return sinkSource{namespace: ws.Namespace, account: &sa,
		owner: types.NamespacedName{Namespace: ws.Namespace, Name: ws.Name}}
}

func (r *WatchSubscriptionReconciler) buildSinks(ctx context.Context, target resolvedSink, deadLetter *notifyv1.Sink,
	deadLetterSource sinkSource) (builtSinks, error) {
	fp := sha256.New()
	_, _ = fp.Write([]byte(target.origin + ";"))
	main, err := r.buildSink(ctx, target.sink, target.source, target.field, fp)
	if err != nil {
		return builtSinks{}, err
	}
	out := builtSinks{sink: main}
	if deadLetter != nil {
		if out.deadLetter, err = r.buildSink(ctx, *deadLetter, deadLetterSource, "spec.delivery.deadLetterSink", fp); err != nil {
			return builtSinks{}, err
		}
	}
	out.fingerprint = hex.EncodeToString(fp.Sum(nil))
	return out, nil
}

// buildSink builds one sink; fp accumulates the versions of the Secrets it reads.
func (r *WatchSubscriptionReconciler) buildSink(ctx context.Context, s notifyv1.Sink, src sinkSource,
	field string, fp interface{ Write([]byte) (int, error) }) (preparedSink, error) {
	switch {
	case isSet(s.Kafka):
		return r.kafkaSink(ctx, s.Kafka, src, field+".kafka", fp)
	case isSet(s.NATS):
		return r.natsSink(ctx, s.NATS, src, field+".nats", fp)
	}
	h, err := r.httpSink(ctx, s, src, field, fp)
	if err != nil {
		return preparedSink{}, err
	}
	return preparedSink{ready: h}, nil
}

// isSet tells whether a sink member kept as a value (omitzero) is set.
func isSet[T any](v T) bool { return !reflect.ValueOf(v).IsZero() }

// httpSink builds a webhook, service or log sink.
func (r *WatchSubscriptionReconciler) httpSink(ctx context.Context, s notifyv1.Sink, src sinkSource,
	field string, fp interface{ Write([]byte) (int, error) }) (sink.Sink, error) {
	var opts notifyv1.HTTPOptions
	wh := &sink.Webhook{}
	switch {
	case s.Log != nil:
		return &sink.Log{Logger: r.Log.WithName("sink").WithValues("watchsubscription", src.owner)}, nil
	case s.Webhook != nil:
		wh.URL, opts = s.Webhook.URL, s.Webhook.HTTPOptions
		if from := s.Webhook.URLFrom; from != nil {
			if err := r.urlFromSecret(ctx, wh, from.SecretKeyRef, src, field+".webhook.urlFrom.secretKeyRef", fp); err != nil {
				return nil, err
			}
		}
	case s.Service != nil:
		wh.URL, opts = serviceURL(src.namespace, s.Service), s.Service.HTTPOptions
		if ns := s.Service.Namespace; ns != "" && ns != src.namespace {
			if err := r.mayGet(ctx, src, corev1.SchemeGroupVersion.WithResource("services"), ns, s.Service.Name,
				field+".service"); err != nil {
				return nil, err
			}
		}
	default:
		return nil, &sinkError{msg: field + ": no sink set"}
	}
	wh.Structured = opts.ContentMode == notifyv1.ContentModeStructured
	if opts.ContentMode == notifyv1.ContentModeBatched {
		wh.Batch = notifyv1.DefaultMaxBatchSize
		if opts.MaxBatchSize != nil {
			wh.Batch = int(*opts.MaxBatchSize)
		}
	}
	if opts.HeadersFrom != nil {
		sec, err := r.secret(ctx, src, opts.HeadersFrom.SecretRef.Name, field+".headersFrom.secretRef", fp)
		if err != nil {
			return nil, err
		}
		wh.Header = http.Header{}
		for k, v := range sec.Data {
			if reservedHeader(k) {
				return nil, &sinkError{msg: fmt.Sprintf("%s.headersFrom.secretRef: Secret %s sets header %q, which the "+
					"operator sets itself", field, sec.Name, k)}
			}
			wh.Header.Set(k, strings.TrimSpace(string(v)))
		}
	}
	if ref := opts.SigningSecretRef; ref != nil {
		key := cmp.Or(ref.Key, defaultSigningKey)
		value, err := r.secretKey(ctx, src, ref.Name, key, field+".signingSecretRef", fp)
		if err != nil {
			return nil, err
		}
		if wh.SigningKey, err = sink.ParseSigningKey(value); err != nil {
			return nil, &sinkError{msg: fmt.Sprintf("%s.signingSecretRef: Secret %s, key %q: %v", field, ref.Name, key, err)}
		}
	}
	var material sink.TLSMaterial
	if t := opts.TLS; t != nil {
		material.InsecureSkipVerify = t.InsecureSkipVerify
		if ref := t.CASecretRef; ref != nil {
			var err error
			if material.CA, err = r.secretKey(ctx, src, ref.Name, cmp.Or(ref.Key, defaultCAKey), field+".tls.caSecretRef", fp); err != nil {
				return nil, err
			}
		}
		if ref := t.CertSecretRef; ref != nil {
			sec, err := r.secret(ctx, src, ref.Name, field+".tls.certSecretRef", fp)
			if err != nil {
				return nil, err
			}
			material.Cert, material.Key = sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]
			if len(material.Cert) == 0 || len(material.Key) == 0 {
				return nil, &sinkError{msg: fmt.Sprintf("%s.tls.certSecretRef: Secret %s needs the keys %s and %s", field,
					ref.Name, corev1.TLSCertKey, corev1.TLSPrivateKeyKey)}
			}
		}
	}
	httpClient, err := r.HTTPClients.For(material)
	if err != nil {
		return nil, &sinkError{msg: fmt.Sprintf("%s.tls: %v", field, err)}
	}
	wh.Client = httpClient
	return wh, nil
}

// Keys of the Secrets broker sinks read.
const (
	keyUsername = "username"
	keyPassword = "password"
	keyToken    = "token"
	keyNKeySeed = "nkeySeed"
)

// kafkaSink checks a Kafka sink and reads its Secrets; it connects when opened.
func (r *WatchSubscriptionReconciler) kafkaSink(ctx context.Context, k notifyv1.KafkaSink, src sinkSource, field string,
	fp interface{ Write([]byte) (int, error) }) (preparedSink, error) {
	cfg := sink.KafkaConfig{Topic: k.Topic, Structured: k.ContentMode == notifyv1.ContentModeStructured}
	for _, b := range k.Brokers {
		cfg.Brokers = append(cfg.Brokers, string(b))
	}
	var err error
	if cfg.TLS, err = r.brokerTLS(ctx, k.TLS, src, field, fp); err != nil {
		return preparedSink{}, err
	}
	if isSet(k.SASL) {
		ref := k.SASL.SecretRef
		sec, err := r.secret(ctx, src, ref.Name, field+".sasl.secretRef", fp)
		if err != nil {
			return preparedSink{}, err
		}
		user, pass := sec.Data[keyUsername], sec.Data[keyPassword]
		if len(user) == 0 || len(pass) == 0 {
			return preparedSink{}, &sinkError{msg: fmt.Sprintf("%s.sasl.secretRef: Secret %s needs the keys %s and %s",
				field, ref.Name, keyUsername, keyPassword)}
		}
		cfg.SASL = &sink.KafkaSASL{Mechanism: string(k.SASL.Mechanism), Username: string(user), Password: string(pass)}
	}
	if err := cfg.Validate(); err != nil {
		return preparedSink{}, &sinkError{msg: fmt.Sprintf("%s: %v", field, err)}
	}
	brokers := r.Brokers
	return preparedSink{field: field, open: func() (sink.Sink, error) { return brokers.Kafka(cfg) }}, nil
}

// natsSink checks a NATS sink and reads its Secrets; it connects when opened.
func (r *WatchSubscriptionReconciler) natsSink(ctx context.Context, n notifyv1.NATSSink, src sinkSource, field string,
	fp interface{ Write([]byte) (int, error) }) (preparedSink, error) {
	cfg := sink.NATSConfig{Subject: n.Subject, Structured: n.ContentMode == notifyv1.ContentModeStructured}
	for _, s := range n.Servers {
		cfg.Servers = append(cfg.Servers, string(s))
	}
	var err error
	if cfg.TLS, err = r.brokerTLS(ctx, n.TLS, src, field, fp); err != nil {
		return preparedSink{}, err
	}
	if isSet(n.Credentials) {
		if cfg.Credentials, err = r.natsCredentials(ctx, n.Credentials.SecretRef, src, field+".credentials.secretRef", fp); err != nil {
			return preparedSink{}, err
		}
	}
	if err := cfg.Validate(); err != nil {
		return preparedSink{}, &sinkError{msg: fmt.Sprintf("%s: %v", field, err)}
	}
	brokers := r.Brokers
	return preparedSink{field: field, open: func() (sink.Sink, error) { return brokers.NATS(cfg) }}, nil
}

// natsCredentials reads a NATS sink's Secret: one of a token, a username and password, or
// an NKey seed.
func (r *WatchSubscriptionReconciler) natsCredentials(ctx context.Context, ref notifyv1.LocalSecretReference,
	src sinkSource, field string, fp interface{ Write([]byte) (int, error) }) (sink.NATSCredentials, error) {
	sec, err := r.secret(ctx, src, ref.Name, field, fp)
	if err != nil {
		return sink.NATSCredentials{}, err
	}
	c := sink.NATSCredentials{Token: string(sec.Data[keyToken]), Username: string(sec.Data[keyUsername]),
		Password: string(sec.Data[keyPassword]), NKeySeed: string(sec.Data[keyNKeySeed])}
	forms := 0
	for _, set := range []bool{c.Token != "", c.Username != "" || c.Password != "", c.NKeySeed != ""} {
		if set {
			forms++
		}
	}
	oneOf := fmt.Sprintf("the key %s; the keys %s and %s; or the key %s", keyToken, keyUsername, keyPassword, keyNKeySeed)
	switch {
	case forms == 0:
		return c, &sinkError{msg: fmt.Sprintf("%s: Secret %s holds none of %s", field, ref.Name, oneOf)}
	case forms > 1:
		return c, &sinkError{msg: fmt.Sprintf("%s: Secret %s holds more than one of %s", field, ref.Name, oneOf)}
	case (c.Username == "") != (c.Password == ""):
		return c, &sinkError{msg: fmt.Sprintf("%s: Secret %s needs both keys %s and %s", field, ref.Name, keyUsername, keyPassword)}
	}
	return c, nil
}

// brokerTLS is a broker sink's TLS setting, shared with the sinks of the same CA bundle
// (broker clients are shared per *tls.Config); nil without tls.
func (r *WatchSubscriptionReconciler) brokerTLS(ctx context.Context, t *notifyv1.TLSConfig, src sinkSource, field string,
	fp interface{ Write([]byte) (int, error) }) (*tls.Config, error) {
	if t == nil {
		return nil, nil
	}
	if t.CertSecretRef != nil {
		return nil, &sinkError{msg: field + ".tls.certSecretRef: broker sinks present no client certificate"}
	}
	var ca []byte
	if ref := t.CASecretRef; ref != nil {
		var err error
		key := cmp.Or(ref.Key, defaultCAKey)
		if ca, err = r.secretKey(ctx, src, ref.Name, key, field+".tls.caSecretRef", fp); err != nil {
			return nil, err
		}
		cfg, err := r.Brokers.TLSConfig(ca, t.InsecureSkipVerify)
		if err != nil {
			return nil, &sinkError{msg: fmt.Sprintf("%s.tls.caSecretRef: Secret %s, key %q: %v", field, ref.Name, key, err)}
		}
		return cfg, nil
	}
	return r.Brokers.TLSConfig(nil, t.InsecureSkipVerify)
}

// urlFromSecret sets the webhook's URL from a Secret's key. The URL is a credential: it
// never appears in status, Events or logs, which name the Secret instead.
func (r *WatchSubscriptionReconciler) urlFromSecret(ctx context.Context, wh *sink.Webhook, ref notifyv1.SecretKeySelector,
	src sinkSource, field string, fp interface{ Write([]byte) (int, error) }) error {
	value, err := r.secretKey(ctx, src, ref.Name, ref.Key, field, fp)
	if err != nil {
		return err
	}
	u, err := url.Parse(strings.TrimSpace(string(value)))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &sinkError{msg: fmt.Sprintf("%s: Secret %s, key %q does not hold an absolute http or https URL with a host",
			field, ref.Name, ref.Key)}
	}
	wh.URL = u.String()
	wh.DisplayURL = fmt.Sprintf("the URL in Secret %s/%s, key %s", src.namespace, ref.Name, ref.Key)
	return nil
}

// secretKey reads one key of a Secret, which must hold a value.
func (r *WatchSubscriptionReconciler) secretKey(ctx context.Context, src sinkSource, name, key, field string,
	fp interface{ Write([]byte) (int, error) }) ([]byte, error) {
	sec, err := r.secret(ctx, src, name, field, fp)
	if err != nil {
		return nil, err
	}
	if len(sec.Data[key]) == 0 {
		return nil, &sinkError{msg: fmt.Sprintf("%s: Secret %s has no key %q", field, name, key)}
	}
	return sec.Data[key], nil
}

// secret reads a Secret of the sink's namespace, uncached (the operator does not keep
// Secrets in memory), once the sink's account, if any, may get it.
func (r *WatchSubscriptionReconciler) secret(ctx context.Context, src sinkSource, name, field string,
	fp interface{ Write([]byte) (int, error) }) (*corev1.Secret, error) {
	if err := r.mayGet(ctx, src, corev1.SchemeGroupVersion.WithResource("secrets"), src.namespace, name, field); err != nil {
		return nil, err
	}
	sec := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: src.namespace, Name: name}, sec); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &sinkError{msg: fmt.Sprintf("%s: Secret %s not found in namespace %s", field, name, src.namespace)}
		}
		return nil, &sinkError{msg: fmt.Sprintf("%s: reading Secret %s: %v", field, name, err), cause: err}
	}
	_, _ = fp.Write([]byte(sec.Namespace + "/" + sec.Name + "@" + sec.ResourceVersion + ";"))
	return sec, nil
}

// mayGet checks that the sink's account may get an object the sink uses. The operator reads
// it with its own rights: without this, whoever may write a subscription could have a
// Secret they may not read sent to a URL of their choice.
func (r *WatchSubscriptionReconciler) mayGet(ctx context.Context, src sinkSource,
	gvr schema.GroupVersionResource, namespace, name, field string) error {
	if r.Authorizer == nil || src.account == nil {
		return nil
	}
	sa := *src.account
	err := r.Authorizer.CheckGet(ctx, sa.Namespace, sa.Name, gvr, namespace, name)
	if err == nil {
		return nil
	}
	if denied, ok := errors.AsType[*authz.DeniedError](err); ok {
		return &sinkError{msg: field + ": " + denied.Error(), denied: true}
	}
	return &sinkError{msg: fmt.Sprintf("%s: checking that ServiceAccount %s may get %s %s: %v", field,
		sa, gvr.Resource, name, err), cause: err}
}

// reservedHeader tells whether a header belongs to the CloudEvents HTTP binding or the
// signature: a user value would be sent next to ours and could win at the receiver.
func reservedHeader(name string) bool {
	switch name = http.CanonicalHeaderKey(name); name {
	case "Content-Type", "Content-Length", "Host",
		sink.HeaderWebhookID, sink.HeaderWebhookTimestamp, sink.HeaderWebhookSignature:
		return true
	}
	return strings.HasPrefix(name, "Ce-")
}

func serviceURL(subNamespace string, s *notifyv1.ServiceSink) string {
	ns := s.Namespace
	if ns == "" {
		ns = subNamespace
	}
	scheme, port := "http", s.Port
	if s.TLS != nil {
		scheme = "https"
	}
	if port == 0 {
		port = 80
		if scheme == "https" {
			port = 443
		}
	}
	path := s.Path
	if path == "" {
		path = "/"
	}
	return scheme + "://" + s.Name + "." + ns + ".svc:" + strconv.Itoa(int(port)) + path
}
