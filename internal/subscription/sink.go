package subscription

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/authz"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
)

// URL schemes of HTTP sinks.
const (
	schemeHTTP  = "http"
	schemeHTTPS = "https"
)

// Keys read from Secrets when a reference names none.
const (
	defaultCAKey      = notifyv1.DefaultCAKey
	defaultSigningKey = notifyv1.DefaultSigningKey
)

// SinkError is a sink that cannot be built from its spec and Secrets. Its message names
// Secrets and keys, never their values. Cause, when set, is the API error of a Secret read.
type SinkError struct {
	Msg   string
	Cause error
	// Denied: the subscription's ServiceAccount may not get a Secret or Service it names.
	Denied bool
}

func (e *SinkError) Error() string { return e.Msg }
func (e *SinkError) Unwrap() error { return e.Cause }

// SecretSource says where a sink's Secrets are read and as whom.
type SecretSource struct {
	// Namespace holds the Secrets: the subscription's, or the operator's for a
	// ClusterWatchSink.
	Namespace string
	// Account, when set, must be allowed to get each Secret (and a Service of another
	// namespace) before the operator reads it: the subscription's ServiceAccount, for sinks
	// its namespace's people wrote. Nil for a ClusterWatchSink: the platform team's.
	Account *types.NamespacedName
	// Owner names the sink in the log sink's lines.
	Owner types.NamespacedName
}

// SourceOf is where the Secrets of a sink written in ws or in a WatchSink of its namespace
// are read: there, as its ServiceAccount.
func SourceOf(ws *notifyv1.WatchSubscription) SecretSource {
	sa := types.NamespacedName{Namespace: ws.Namespace,
		Name: cmp.Or(ws.Spec.ServiceAccountName, notifyv1.DefaultServiceAccountName)}
	return SecretSource{Namespace: ws.Namespace, Account: &sa,
		Owner: types.NamespacedName{Namespace: ws.Namespace, Name: ws.Name}}
}

// Sinks builds sinks from their spec and the Secrets they name.
type Sinks struct {
	// Secrets reads Secrets, uncached: the operator's API reader (with its own rights, once
	// Authorizer allowed it), or in kubectl-notifier the user's client (with theirs).
	Secrets client.Reader
	// Authorizer, when set, checks that a source's Account may get each Secret (and a
	// Service of another namespace) before it is read. Nil trusts every source: the
	// reader's own rights decide.
	Authorizer *authz.Checker
	// Clients hands out the HTTP clients, with the deny list and the redirect rules.
	Clients *sink.Clients
	// Brokers hands out Kafka and NATS sinks (sharing their clients) and their TLS
	// settings, with the deny list of Clients.
	Brokers *sink.Brokers
	// Log is where a log sink writes, as the logger named "sink".
	Log logr.Logger
}

// Prepared is a sink built from its spec and Secrets, checked. An HTTP or log sink is
// ready; a broker sink connects only when opened, for a pipeline that starts: every
// reconcile prepares a subscription's sinks to compare their fingerprint with what runs,
// and the sink objects' status prepares them to check them.
type Prepared struct {
	ready sink.Sink
	// open connects a broker sink; field names it in errors.
	open  func() (sink.Sink, error)
	field string
}

// Set tells whether there is a sink (a subscription may have no dead-letter sink).
func (p Prepared) Set() bool { return p.ready != nil || p.open != nil }

// Open is the sink to send to: the one built, or a broker sink connected now. An error
// is the sink's to fix (a *SinkError): a setting the broker client refuses. A sink that
// holds a connection is an io.Closer: close it once nothing sends to it.
func (p Prepared) Open() (sink.Sink, error) {
	if p.open == nil {
		return p.ready, nil
	}
	s, err := p.open()
	if err != nil {
		return nil, &SinkError{Msg: fmt.Sprintf("%s: %v", p.field, err)}
	}
	return s, nil
}

// Build builds one sink; fp (io.Discard when unused) accumulates the versions of the
// Secrets it reads, so a rotated Secret can rebuild what uses it. Its errors are
// *SinkError.
func (b *Sinks) Build(ctx context.Context, s notifyv1.Sink, src SecretSource, field string, fp io.Writer) (Prepared, error) {
	switch {
	case isSet(s.Kafka):
		return b.kafkaSink(ctx, s.Kafka, src, field+".kafka", fp)
	case isSet(s.NATS):
		return b.natsSink(ctx, s.NATS, src, field+".nats", fp)
	}
	h, err := b.httpSink(ctx, s, src, field, fp)
	if err != nil {
		return Prepared{}, err
	}
	return Prepared{ready: h}, nil
}

// isSet tells whether a sink member kept as a value (omitzero) is set.
func isSet[T any](v T) bool { return !reflect.ValueOf(v).IsZero() }

// httpSink builds a webhook, service or log sink.
func (b *Sinks) httpSink(ctx context.Context, s notifyv1.Sink, src SecretSource, field string, fp io.Writer) (sink.Sink, error) {
	var opts notifyv1.HTTPOptions
	wh := &sink.Webhook{}
	switch {
	case s.Log != nil:
		return &sink.Log{Logger: b.Log.WithName("sink").WithValues("watchsubscription", src.Owner)}, nil
	case s.Webhook != nil:
		wh.URL, opts = s.Webhook.URL, s.Webhook.HTTPOptions
		if from := s.Webhook.URLFrom; from != nil {
			if err := b.urlFromSecret(ctx, wh, from.SecretKeyRef, src, field+".webhook.urlFrom.secretKeyRef", fp); err != nil {
				return nil, err
			}
		}
	case s.Service != nil:
		wh.URL, opts = ServiceURL(src.Namespace, s.Service), s.Service.HTTPOptions
		if ns := s.Service.Namespace; ns != "" && ns != src.Namespace {
			if err := b.mayGet(ctx, src, corev1.SchemeGroupVersion.WithResource("services"), ns, s.Service.Name,
				field+".service"); err != nil {
				return nil, err
			}
		}
	default:
		return nil, &SinkError{Msg: field + ": no sink set"}
	}
	wh.Structured, wh.Batch = wireOptions(opts)
	if opts.HeadersFrom != nil {
		sec, err := b.secret(ctx, src, opts.HeadersFrom.SecretRef.Name, field+".headersFrom.secretRef", fp)
		if err != nil {
			return nil, err
		}
		wh.Header = http.Header{}
		for k, v := range sec.Data {
			if ReservedHeader(k) {
				return nil, &SinkError{Msg: fmt.Sprintf("%s.headersFrom.secretRef: Secret %s sets header %q, which the "+
					"operator sets itself", field, sec.Name, k)}
			}
			wh.Header.Set(k, strings.TrimSpace(string(v)))
		}
	}
	if ref := opts.SigningSecretRef; ref != nil {
		key := cmp.Or(ref.Key, defaultSigningKey)
		value, err := b.secretKey(ctx, src, ref.Name, key, field+".signingSecretRef", fp)
		if err != nil {
			return nil, err
		}
		if wh.SigningKey, err = sink.ParseSigningKey(value); err != nil {
			return nil, &SinkError{Msg: fmt.Sprintf("%s.signingSecretRef: Secret %s, key %q: %v", field, ref.Name, key, err)}
		}
	}
	var material sink.TLSMaterial
	if t := opts.TLS; t != nil {
		material.InsecureSkipVerify = t.InsecureSkipVerify
		if ref := t.CASecretRef; ref != nil {
			var err error
			if material.CA, err = b.secretKey(ctx, src, ref.Name, cmp.Or(ref.Key, defaultCAKey), field+".tls.caSecretRef", fp); err != nil {
				return nil, err
			}
		}
		if ref := t.CertSecretRef; ref != nil {
			sec, err := b.secret(ctx, src, ref.Name, field+".tls.certSecretRef", fp)
			if err != nil {
				return nil, err
			}
			material.Cert, material.Key = sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]
			if len(material.Cert) == 0 || len(material.Key) == 0 {
				return nil, &SinkError{Msg: fmt.Sprintf("%s.tls.certSecretRef: Secret %s needs the keys %s and %s", field,
					ref.Name, corev1.TLSCertKey, corev1.TLSPrivateKeyKey)}
			}
		}
	}
	httpClient, err := b.Clients.For(material)
	if err != nil {
		return nil, &SinkError{Msg: fmt.Sprintf("%s.tls: %v", field, err)}
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
func (b *Sinks) kafkaSink(ctx context.Context, k notifyv1.KafkaSink, src SecretSource, field string,
	fp io.Writer) (Prepared, error) {
	cfg := KafkaConfig(k)
	var err error
	if cfg.TLS, err = b.brokerTLS(ctx, k.TLS, src, field, fp); err != nil {
		return Prepared{}, err
	}
	if isSet(k.SASL) {
		ref := k.SASL.SecretRef
		sec, err := b.secret(ctx, src, ref.Name, field+".sasl.secretRef", fp)
		if err != nil {
			return Prepared{}, err
		}
		user, pass := sec.Data[keyUsername], sec.Data[keyPassword]
		if len(user) == 0 || len(pass) == 0 {
			return Prepared{}, &SinkError{Msg: fmt.Sprintf("%s.sasl.secretRef: Secret %s needs the keys %s and %s",
				field, ref.Name, keyUsername, keyPassword)}
		}
		cfg.SASL = &sink.KafkaSASL{Mechanism: string(k.SASL.Mechanism), Username: string(user), Password: string(pass)}
	}
	if err := cfg.Validate(); err != nil {
		return Prepared{}, &SinkError{Msg: fmt.Sprintf("%s: %v", field, err)}
	}
	brokers := b.Brokers
	return Prepared{field: field, open: func() (sink.Sink, error) { return brokers.Kafka(cfg) }}, nil
}

// KafkaConfig is a Kafka sink's settings from its spec alone, without its Secrets.
func KafkaConfig(k notifyv1.KafkaSink) sink.KafkaConfig {
	cfg := sink.KafkaConfig{Topic: k.Topic, Structured: k.ContentMode == notifyv1.ContentModeStructured}
	for _, b := range k.Brokers {
		cfg.Brokers = append(cfg.Brokers, string(b))
	}
	return cfg
}

// NATSConfig is a NATS sink's settings from its spec alone, without its Secrets.
func NATSConfig(n notifyv1.NATSSink) sink.NATSConfig {
	cfg := sink.NATSConfig{Subject: n.Subject, Structured: n.ContentMode == notifyv1.ContentModeStructured}
	for _, s := range n.Servers {
		cfg.Servers = append(cfg.Servers, string(s))
	}
	return cfg
}

// natsSink checks a NATS sink and reads its Secrets; it connects when opened.
func (b *Sinks) natsSink(ctx context.Context, n notifyv1.NATSSink, src SecretSource, field string,
	fp io.Writer) (Prepared, error) {
	cfg := NATSConfig(n)
	var err error
	if cfg.TLS, err = b.brokerTLS(ctx, n.TLS, src, field, fp); err != nil {
		return Prepared{}, err
	}
	if isSet(n.Credentials) {
		if cfg.Credentials, err = b.natsCredentials(ctx, n.Credentials.SecretRef, src, field+".credentials.secretRef", fp); err != nil {
			return Prepared{}, err
		}
	}
	if err := cfg.Validate(); err != nil {
		return Prepared{}, &SinkError{Msg: fmt.Sprintf("%s: %v", field, err)}
	}
	brokers := b.Brokers
	return Prepared{field: field, open: func() (sink.Sink, error) { return brokers.NATS(cfg) }}, nil
}

// natsCredentials reads a NATS sink's Secret: one of a token, a username and password, or
// an NKey seed.
func (b *Sinks) natsCredentials(ctx context.Context, ref notifyv1.LocalSecretReference,
	src SecretSource, field string, fp io.Writer) (sink.NATSCredentials, error) {
	sec, err := b.secret(ctx, src, ref.Name, field, fp)
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
		return c, &SinkError{Msg: fmt.Sprintf("%s: Secret %s holds none of %s", field, ref.Name, oneOf)}
	case forms > 1:
		return c, &SinkError{Msg: fmt.Sprintf("%s: Secret %s holds more than one of %s", field, ref.Name, oneOf)}
	case (c.Username == "") != (c.Password == ""):
		return c, &SinkError{Msg: fmt.Sprintf("%s: Secret %s needs both keys %s and %s", field, ref.Name, keyUsername, keyPassword)}
	}
	return c, nil
}

// brokerTLS is a broker sink's TLS setting, shared with the sinks of the same CA bundle
// (broker clients are shared per *tls.Config); nil without tls.
func (b *Sinks) brokerTLS(ctx context.Context, t *notifyv1.TLSConfig, src SecretSource, field string,
	fp io.Writer) (*tls.Config, error) {
	if t == nil {
		return nil, nil
	}
	if t.CertSecretRef != nil {
		return nil, &SinkError{Msg: field + ".tls.certSecretRef: broker sinks present no client certificate"}
	}
	var ca []byte
	if ref := t.CASecretRef; ref != nil {
		var err error
		key := cmp.Or(ref.Key, defaultCAKey)
		if ca, err = b.secretKey(ctx, src, ref.Name, key, field+".tls.caSecretRef", fp); err != nil {
			return nil, err
		}
		cfg, err := b.Brokers.TLSConfig(ca, t.InsecureSkipVerify)
		if err != nil {
			return nil, &SinkError{Msg: fmt.Sprintf("%s.tls.caSecretRef: Secret %s, key %q: %v", field, ref.Name, key, err)}
		}
		return cfg, nil
	}
	return b.Brokers.TLSConfig(nil, t.InsecureSkipVerify)
}

// wireOptions are the settings of an HTTP sink's content mode: structured, or batched with
// a batch size (see sink.Webhook).
func wireOptions(opts notifyv1.HTTPOptions) (structured bool, batch int) {
	if opts.ContentMode == notifyv1.ContentModeBatched {
		batch = notifyv1.DefaultMaxBatchSize
		if opts.MaxBatchSize != nil {
			batch = int(*opts.MaxBatchSize)
		}
	}
	return opts.ContentMode == notifyv1.ContentModeStructured, batch
}

// WireMode is how an HTTP sink written as s puts events on the wire, as the webhook Build
// makes of it sends them (sink.ModeOf): without reading its Secrets, since a signing
// Secret's presence is all that matters. Empty for a log sink.
func WireMode(s notifyv1.Sink) sink.Mode {
	var opts notifyv1.HTTPOptions
	switch {
	case s.Webhook != nil:
		opts = s.Webhook.HTTPOptions
	case s.Service != nil:
		opts = s.Service.HTTPOptions
	default:
		return ""
	}
	structured, batch := wireOptions(opts)
	return sink.ModeOf(structured, batch, opts.SigningSecretRef != nil)
}

// Reference is an object a sink reads (a Secret) or sends to (a Service of another
// namespace), which the source's account must be allowed to get.
type Reference struct {
	// Field names where the sink refers to it, as Build's errors do.
	Field     string
	GVR       schema.GroupVersionResource
	Namespace string
	Name      string
}

// References are the objects Build checks that src's account may get before it reads or
// uses them, in the order it reads them (a Secret named twice is listed twice).
func References(s notifyv1.Sink, src SecretSource, field string) []Reference {
	secrets := corev1.SchemeGroupVersion.WithResource("secrets")
	secret := func(name, f string) Reference {
		return Reference{Field: field + f, GVR: secrets, Namespace: src.Namespace, Name: name}
	}
	var out []Reference
	tlsRefs := func(t *notifyv1.TLSConfig, f string) {
		if t == nil {
			return
		}
		if ref := t.CASecretRef; ref != nil {
			out = append(out, secret(ref.Name, f+".tls.caSecretRef"))
		}
		if ref := t.CertSecretRef; ref != nil {
			out = append(out, secret(ref.Name, f+".tls.certSecretRef"))
		}
	}
	var opts notifyv1.HTTPOptions
	switch {
	case isSet(s.Kafka):
		tlsRefs(s.Kafka.TLS, ".kafka")
		if isSet(s.Kafka.SASL) {
			out = append(out, secret(s.Kafka.SASL.SecretRef.Name, ".kafka.sasl.secretRef"))
		}
		return out
	case isSet(s.NATS):
		tlsRefs(s.NATS.TLS, ".nats")
		if isSet(s.NATS.Credentials) {
			out = append(out, secret(s.NATS.Credentials.SecretRef.Name, ".nats.credentials.secretRef"))
		}
		return out
	case s.Webhook != nil:
		opts = s.Webhook.HTTPOptions
		if from := s.Webhook.URLFrom; from != nil {
			out = append(out, secret(from.SecretKeyRef.Name, ".webhook.urlFrom.secretKeyRef"))
		}
	case s.Service != nil:
		opts = s.Service.HTTPOptions
		if ns := s.Service.Namespace; ns != "" && ns != src.Namespace {
			out = append(out, Reference{Field: field + ".service", GVR: corev1.SchemeGroupVersion.WithResource("services"),
				Namespace: ns, Name: s.Service.Name})
		}
	default:
		return nil
	}
	if opts.HeadersFrom != nil {
		out = append(out, secret(opts.HeadersFrom.SecretRef.Name, ".headersFrom.secretRef"))
	}
	if ref := opts.SigningSecretRef; ref != nil {
		out = append(out, secret(ref.Name, ".signingSecretRef"))
	}
	tlsRefs(opts.TLS, "")
	return out
}

// MayGet checks, as Build does before reading it, that src's account may get ref: nil
// (or no account to check), a *SinkError with Denied set, or a *SinkError that is no answer.
func (b *Sinks) MayGet(ctx context.Context, src SecretSource, ref Reference) error {
	return b.mayGet(ctx, src, ref.GVR, ref.Namespace, ref.Name, ref.Field)
}

// urlFromSecret sets the webhook's URL from a Secret's key. The URL is a credential: it
// never appears in status, Events or logs, which name the Secret instead.
func (b *Sinks) urlFromSecret(ctx context.Context, wh *sink.Webhook, ref notifyv1.SecretKeySelector,
	src SecretSource, field string, fp io.Writer) error {
	value, err := b.secretKey(ctx, src, ref.Name, ref.Key, field, fp)
	if err != nil {
		return err
	}
	u, err := url.Parse(strings.TrimSpace(string(value)))
	if err != nil || (u.Scheme != schemeHTTP && u.Scheme != schemeHTTPS) || u.Host == "" {
		return &SinkError{Msg: fmt.Sprintf("%s: Secret %s, key %q does not hold an absolute http or https URL with a host",
			field, ref.Name, ref.Key)}
	}
	wh.URL = u.String()
	wh.DisplayURL = fmt.Sprintf("the URL in Secret %s/%s, key %s", src.Namespace, ref.Name, ref.Key)
	return nil
}

// secretKey reads one key of a Secret, which must hold a value.
func (b *Sinks) secretKey(ctx context.Context, src SecretSource, name, key, field string, fp io.Writer) ([]byte, error) {
	sec, err := b.secret(ctx, src, name, field, fp)
	if err != nil {
		return nil, err
	}
	if len(sec.Data[key]) == 0 {
		return nil, &SinkError{Msg: fmt.Sprintf("%s: Secret %s has no key %q", field, name, key)}
	}
	return sec.Data[key], nil
}

// secret reads a Secret of the sink's namespace, uncached (the operator does not keep
// Secrets in memory), once the sink's account, if any, may get it.
func (b *Sinks) secret(ctx context.Context, src SecretSource, name, field string, fp io.Writer) (*corev1.Secret, error) {
	if err := b.mayGet(ctx, src, corev1.SchemeGroupVersion.WithResource("secrets"), src.Namespace, name, field); err != nil {
		return nil, err
	}
	sec := &corev1.Secret{}
	if err := b.Secrets.Get(ctx, client.ObjectKey{Namespace: src.Namespace, Name: name}, sec); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &SinkError{Msg: fmt.Sprintf("%s: Secret %s not found in namespace %s", field, name, src.Namespace)}
		}
		return nil, &SinkError{Msg: fmt.Sprintf("%s: reading Secret %s: %v", field, name, err), Cause: err}
	}
	_, _ = fp.Write([]byte(sec.Namespace + "/" + sec.Name + "@" + sec.ResourceVersion + ";"))
	return sec, nil
}

// mayGet checks that the sink's account may get an object the sink uses. The operator reads
// it with its own rights: without this, whoever may write a subscription could have a
// Secret they may not read sent to a URL of their choice.
func (b *Sinks) mayGet(ctx context.Context, src SecretSource,
	gvr schema.GroupVersionResource, namespace, name, field string) error {
	if b.Authorizer == nil || src.Account == nil {
		return nil
	}
	sa := *src.Account
	err := b.Authorizer.CheckGet(ctx, sa.Namespace, sa.Name, gvr, namespace, name)
	if err == nil {
		return nil
	}
	if denied, ok := errors.AsType[*authz.DeniedError](err); ok {
		return &SinkError{Msg: field + ": " + denied.Error(), Denied: true}
	}
	return &SinkError{Msg: fmt.Sprintf("%s: checking that ServiceAccount %s may get %s %s: %v", field,
		sa, gvr.Resource, name, err), Cause: err}
}

// ReservedHeader tells whether a header belongs to the CloudEvents HTTP binding or the
// signature: a user value would be sent next to ours and could win at the receiver.
func ReservedHeader(name string) bool {
	switch name = http.CanonicalHeaderKey(name); name {
	case "Content-Type", "Content-Length", "Host",
		sink.HeaderWebhookID, sink.HeaderWebhookTimestamp, sink.HeaderWebhookSignature:
		return true
	}
	return strings.HasPrefix(name, "Ce-")
}

// ServiceURL is the in-cluster URL of a Service sink of a subscription (or sink object) in
// subNamespace.
func ServiceURL(subNamespace string, s *notifyv1.ServiceSink) string {
	ns := s.Namespace
	if ns == "" {
		ns = subNamespace
	}
	scheme, port := schemeHTTP, s.Port
	if s.TLS != nil {
		scheme = schemeHTTPS
	}
	if port == 0 {
		port = 80
		if scheme == schemeHTTPS {
			port = 443
		}
	}
	path := s.Path
	if path == "" {
		path = "/"
	}
	return scheme + "://" + s.Name + "." + ns + ".svc:" + strconv.Itoa(int(port)) + path
}
