package controller

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
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

// builtSinks is what a subscription delivers to, and a fingerprint of the Secrets read to
// build it: a changed fingerprint rebuilds the pipeline.
type builtSinks struct {
	sink, deadLetter sink.Sink
	fingerprint      string
}

func (r *WatchSubscriptionReconciler) buildSinks(ctx context.Context, ws *notifyv1.WatchSubscription) (builtSinks, error) {
	fp := sha256.New()
	main, err := r.buildSink(ctx, ws, ws.Spec.Sink, "spec.sink", fp)
	if err != nil {
		return builtSinks{}, err
	}
	out := builtSinks{sink: main}
	if d := ws.Spec.Delivery; d != nil && d.DeadLetterSink != nil {
		if out.deadLetter, err = r.buildSink(ctx, ws, *d.DeadLetterSink, "spec.delivery.deadLetterSink", fp); err != nil {
			return builtSinks{}, err
		}
	}
	out.fingerprint = hex.EncodeToString(fp.Sum(nil))
	return out, nil
}

// buildSink builds one sink; fp accumulates the versions of the Secrets it reads.
func (r *WatchSubscriptionReconciler) buildSink(ctx context.Context, ws *notifyv1.WatchSubscription, s notifyv1.Sink,
	field string, fp interface{ Write([]byte) (int, error) }) (sink.Sink, error) {
	var url string
	var opts notifyv1.HTTPOptions
	switch {
	case s.Log != nil:
		return &sink.Log{Logger: r.Log.WithName("sink").WithValues("watchsubscription",
			types.NamespacedName{Namespace: ws.Namespace, Name: ws.Name})}, nil
	case s.Webhook != nil:
		url, opts = s.Webhook.URL, s.Webhook.HTTPOptions
	case s.Service != nil:
		url, opts = serviceURL(ws.Namespace, s.Service), s.Service.HTTPOptions
		if ns := s.Service.Namespace; ns != "" && ns != ws.Namespace {
			if err := r.mayGet(ctx, ws, corev1.SchemeGroupVersion.WithResource("services"), ns, s.Service.Name,
				field+".service"); err != nil {
				return nil, err
			}
		}
	default:
		return nil, &sinkError{msg: field + ": no sink set"}
	}
	wh := &sink.Webhook{URL: url, Structured: opts.ContentMode == notifyv1.ContentModeStructured}
	if opts.ContentMode == notifyv1.ContentModeBatched {
		wh.Batch = notifyv1.DefaultMaxBatchSize
		if opts.MaxBatchSize != nil {
			wh.Batch = int(*opts.MaxBatchSize)
		}
	}
	if opts.HeadersFrom != nil {
		sec, err := r.secret(ctx, ws, opts.HeadersFrom.SecretRef.Name, field+".headersFrom.secretRef", fp)
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
		sec, err := r.secret(ctx, ws, ref.Name, field+".signingSecretRef", fp)
		if err != nil {
			return nil, err
		}
		key := ref.Key
		if key == "" {
			key = defaultSigningKey
		}
		if len(sec.Data[key]) == 0 {
			return nil, &sinkError{msg: fmt.Sprintf("%s.signingSecretRef: Secret %s has no key %q", field, ref.Name, key)}
		}
		if wh.SigningKey, err = sink.ParseSigningKey(sec.Data[key]); err != nil {
			return nil, &sinkError{msg: fmt.Sprintf("%s.signingSecretRef: Secret %s, key %q: %v", field, ref.Name, key, err)}
		}
	}
	var caPEM []byte
	insecure := false
	if opts.TLS != nil {
		insecure = opts.TLS.InsecureSkipVerify
		if ref := opts.TLS.CASecretRef; ref != nil {
			sec, err := r.secret(ctx, ws, ref.Name, field+".tls.caSecretRef", fp)
			if err != nil {
				return nil, err
			}
			key := ref.Key
			if key == "" {
				key = defaultCAKey
			}
			if caPEM = sec.Data[key]; len(caPEM) == 0 {
				return nil, &sinkError{msg: fmt.Sprintf("%s.tls.caSecretRef: Secret %s has no key %q", field, ref.Name, key)}
			}
		}
	}
	httpClient, err := r.HTTPClients.For(caPEM, insecure)
	if err != nil {
		return nil, &sinkError{msg: fmt.Sprintf("%s.tls.caSecretRef: %v", field, err)}
	}
	wh.Client = httpClient
	return wh, nil
}

// secret reads a Secret of the subscription's namespace, uncached (the operator does not
// keep Secrets in memory), once the subscription's ServiceAccount may get it.
func (r *WatchSubscriptionReconciler) secret(ctx context.Context, ws *notifyv1.WatchSubscription, name, field string,
	fp interface{ Write([]byte) (int, error) }) (*corev1.Secret, error) {
	namespace := ws.Namespace
	if err := r.mayGet(ctx, ws, corev1.SchemeGroupVersion.WithResource("secrets"), namespace, name, field); err != nil {
		return nil, err
	}
	sec := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, sec); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &sinkError{msg: fmt.Sprintf("%s: Secret %s not found in namespace %s", field, name, namespace)}
		}
		return nil, &sinkError{msg: fmt.Sprintf("%s: reading Secret %s: %v", field, name, err), cause: err}
	}
	_, _ = fp.Write([]byte(sec.Name + "@" + sec.ResourceVersion + ";"))
	return sec, nil
}

// mayGet checks that the subscription's ServiceAccount may get an object its sink uses. The
// operator reads it with its own rights: without this, whoever may write a subscription
// could have a Secret they may not read sent to a URL of their choice.
func (r *WatchSubscriptionReconciler) mayGet(ctx context.Context, ws *notifyv1.WatchSubscription,
	gvr schema.GroupVersionResource, namespace, name, field string) error {
	if r.Authorizer == nil {
		return nil
	}
	sa := cmp.Or(ws.Spec.ServiceAccountName, notifyv1.DefaultServiceAccountName)
	err := r.Authorizer.CheckGet(ctx, ws.Namespace, sa, gvr, namespace, name)
	if err == nil {
		return nil
	}
	if denied, ok := errors.AsType[*authz.DeniedError](err); ok {
		return &sinkError{msg: field + ": " + denied.Error(), denied: true}
	}
	return &sinkError{msg: fmt.Sprintf("%s: checking that ServiceAccount %s/%s may get %s %s: %v", field,
		ws.Namespace, sa, gvr.Resource, name, err), cause: err}
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
