package subscription

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
	// Log is where a log sink writes, as the logger named "sink".
	Log logr.Logger
}

// Build builds one sink; fp (io.Discard when unused) accumulates the versions of the
// Secrets it reads, so a rotated Secret can rebuild what uses it. Its errors are
// *SinkError.
func (b *Sinks) Build(ctx context.Context, s notifyv1.Sink, src SecretSource, field string, fp io.Writer) (sink.Sink, error) {
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
	var opts notifyv1.HTTPOptions
	switch {
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
	if t := opts.TLS; t != nil {
		if ref := t.CASecretRef; ref != nil {
			out = append(out, secret(ref.Name, ".tls.caSecretRef"))
		}
		if ref := t.CertSecretRef; ref != nil {
			out = append(out, secret(ref.Name, ".tls.certSecretRef"))
		}
	}
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
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
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
