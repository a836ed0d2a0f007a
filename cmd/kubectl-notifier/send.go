package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/uuid"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
	"github.com/dynamic-notifier/dynamic-notifier/internal/resolve"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
	"github.com/dynamic-notifier/dynamic-notifier/internal/subscription"
)

// testEventType is the CloudEvents type of what `send` sends.
const testEventType = event.TestCloudEventType

// sendOptions are the flags of `send`.
type sendOptions struct {
	files                     []string
	object, url, deny, output string
	deadLetter                bool
	timeout                   time.Duration
	maxBody                   int
}

func newSendCommand(o *options) *cobra.Command {
	so := &sendOptions{deny: sink.FormatCIDRs(sink.DefaultDeny)}
	cmd := &cobra.Command{
		Use:   "send (NAME | -f FILE)",
		Short: "Send one test event through a subscription's sink and show the answer",
		Long: `Send one test event through a subscription's sink, as the operator would send it, and show the answer.

The event's type is ` + testEventType + `, so receivers can tell it from a change; its id is
<uid>:0:Test and its data is the subscription's payload (mode, template, redaction) of a
synthetic object of the subscription's resource, or of a live one with --object.

The sink is built by the operator's code: its TLS settings, headers, signature, content mode
and the deny list of addresses (--sink-deny-cidrs, the operator's default). The Secrets it
names (URL, headers, signing key, CA, client certificate) are read with YOUR credentials:
you must be allowed to get them. The operator reads them as the subscription's
ServiceAccount (or, for a ClusterWatchSink, with its own rights), so a send that works
does not prove the operator may; kubectl notifier test checks that.

One attempt, no retries; redirects are not followed (the operator's default).`,
		Example: `  kubectl notifier send configmaps-to-webhook
  kubectl notifier send -f config/samples/configmaps-to-webhook.yaml --object default/settings`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			if (name == "") == (len(so.files) == 0) {
				return errors.New("name a subscription, or give its file with -f")
			}
			return runSend(cmd.Context(), o, so, name)
		},
	}
	cmd.Flags().StringArrayVarP(&so.files, "filename", "f", nil, "a file with the WatchSubscription and the sink "+
		"object it names (- for stdin); repeat for more files")
	cmd.Flags().StringVar(&so.object, "object", "", "send this live object's payload, [NAMESPACE/]NAME, instead of a "+
		"synthetic one")
	cmd.Flags().BoolVar(&so.deadLetter, "dead-letter-sink", false, "send to the subscription's dead-letter sink instead")
	cmd.Flags().StringVar(&so.url, "url", "", "post to this URL instead of the sink's (a Service sink, through kubectl "+
		"port-forward), keeping its headers, signature and TLS settings")
	cmd.Flags().StringVar(&so.deny, "sink-deny-cidrs", so.deny, "address ranges no sink may reach, as the operator's flag")
	cmd.Flags().DurationVar(&so.timeout, "timeout", 0, "how long the attempt may take (default: the subscription's "+
		"spec.delivery.timeout, else 10s)")
	cmd.Flags().IntVar(&so.maxBody, "max-body", 1024, "show at most this many bytes of the answer's body")
	cmd.Flags().StringVarP(&so.output, "output", "o", "", "output format: text, json or yaml")
	return cmd
}

// sendResult is what `send` sent and what came back.
type sendResult struct {
	Sink    string `json:"sink"`
	URL     string `json:"url,omitempty"`
	Mode    string `json:"mode,omitempty"`
	ID      string `json:"id"`
	Status  string `json:"status,omitempty"`
	Latency string `json:"latency"`
	// Body is the start of the answer's body; BodyBytes its length as far as it was read.
	Body      string `json:"body,omitempty"`
	BodyBytes int    `json:"bodyBytes,omitempty"`
	Error     string `json:"error,omitempty"`
	// Log is the log sink's line.
	Log string `json:"log,omitempty"`
}

// sendTarget is the subscription send tries, the sink it sends to (its dead-letter sink with
// --dead-letter-sink) and its compiled plan.
func (o *options) sendTarget(ctx context.Context, cl *clients, so *sendOptions,
	name string) (*notifyv1.WatchSubscription, subscription.Target, subscription.Plan, error) {
	fail := func(err error) (*notifyv1.WatchSubscription, subscription.Target, subscription.Plan, error) {
		return nil, subscription.Target{}, subscription.Plan{}, err
	}
	ws, sinks, err := o.subscriptionToSend(ctx, cl, so.files, name)
	if err != nil {
		return fail(err)
	}
	target, err := subscription.ResolveSink(ctx, sinks, ws, o.operatorNamespace)
	if err != nil {
		return fail(fmt.Errorf("WatchSubscription %s/%s: %w", ws.Namespace, ws.Name, err))
	}
	effective, deadLetterSource := subscription.WithSinkDefaults(ws, target)
	p, err := subscription.Compile(effective, subscription.Options{})
	if err != nil {
		return fail(fmt.Errorf("WatchSubscription %s/%s: %w", ws.Namespace, ws.Name, err))
	}
	if so.deadLetter {
		d := effective.Spec.Delivery
		if d == nil || d.DeadLetterSink == nil {
			return fail(fmt.Errorf("WatchSubscription %s/%s has no dead-letter sink", ws.Namespace, ws.Name))
		}
		target = subscription.Target{Sink: *d.DeadLetterSink, Source: deadLetterSource,
			Field: "spec.delivery.deadLetterSink", Described: "dead-letter sink, " + subscription.SinkKind(*d.DeadLetterSink)}
	}
	return ws, target, p, nil
}

func runSend(ctx context.Context, o *options, so *sendOptions, name string) error {
	if err := outputFormat(so.output); err != nil {
		return err
	}
	deny, err := sink.ParseCIDRs(so.deny)
	if err != nil {
		return fmt.Errorf("--sink-deny-cidrs: %w", err)
	}
	cl, err := o.clients()
	if err != nil {
		return err
	}
	ws, target, p, err := o.sendTarget(ctx, cl, so, name)
	if err != nil {
		return err
	}

	obj, err := testObjectFor(ctx, cl, ws, p, so.object)
	if err != nil {
		return err
	}
	ev := event.New(event.Test, p.GVR, obj)
	msg, err := p.Message(ev)
	if err != nil {
		return fmt.Errorf("shaping the payload of %s: %w", describeObject(obj, so.object), err)
	}

	var logLine string
	// The operator's defaults: the deny list, no proxy, no redirects followed.
	builder := &subscription.Sinks{Secrets: cl.client, Clients: sink.NewClients(sink.ClientOptions{Deny: deny}),
		Brokers: sink.NewBrokers(sink.ClientOptions{Deny: deny}),
		Log:     funcr.NewJSON(func(obj string) { logLine = obj }, funcr.Options{})}
	prepared, err := builder.Build(ctx, target.Sink, target.Source, target.Field, io.Discard)
	if err != nil {
		return explainBuildError(err, target)
	}
	built, err := prepared.Open()
	if err != nil {
		return err
	}
	if c, ok := built.(io.Closer); ok {
		defer func() { _ = c.Close() }()
	}
	res := sendResult{Sink: target.Described, ID: ev.ID()}
	rec := &recorder{max: so.maxBody}
	if wh, ok := built.(*sink.Webhook); ok {
		if so.url != "" {
			wh.URL, wh.DisplayURL = so.url, ""
		}
		res.URL, res.Mode = cmp.Or(wh.DisplayURL, sink.MaskURL(wh.URL)), string(wh.Mode())
		hc := *wh.Client
		hc.Transport = &recordingTransport{next: wh.Client.Transport, rec: rec}
		wh.Client = &hc
	} else if so.url != "" {
		return fmt.Errorf("--url applies to webhook and Service sinks, not to a %s sink", subscription.SinkKind(target.Sink))
	} else if kind := subscription.SinkKind(target.Sink); kind == subscription.KindKafka ||
		kind == subscription.KindNATS {
		res.URL, res.Mode = sinkURL(target.Source, target.Sink), kind+" "+string(describeSink(target).Mode)
	}

	timeout := cmp.Or(so.timeout, p.Delivery.Timeout) // the spec's, or the operator's default
	sendCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	err = built.Send(sendCtx, msg)
	res.Latency = time.Since(start).Round(time.Millisecond).String()
	res.Status, res.Body, res.BodyBytes = rec.answer()
	if _, broker := built.(io.Closer); broker && err == nil {
		res.Status = "acknowledged"
	}
	res.Log = logLine
	if err != nil {
		res.Error = explainSendError(err, sendCtx.Err() != nil, timeout, target, so.url)
	}
	if structured(so.output) {
		if perr := printStructured(o.streams.Out, so.output, res); perr != nil {
			return perr
		}
	} else {
		printSendResult(o.streams.Out, res)
	}
	if err != nil {
		return errors.New("the sink did not accept the test event")
	}
	return nil
}

// subscriptionToSend reads the subscription from its files or from the cluster, and
// returns where its sink object is read: the files first, then the cluster.
func (o *options) subscriptionToSend(ctx context.Context, cl *clients, paths []string,
	name string) (*notifyv1.WatchSubscription, client.Reader, error) {
	if len(paths) > 0 {
		in, err := o.load(paths)
		if err != nil {
			return nil, nil, err
		}
		if len(in.subs) != 1 {
			return nil, nil, fmt.Errorf("%s hold %d WatchSubscriptions; send takes one", strings.Join(paths, ", "),
				len(in.subs))
		}
		return in.subs[0].sub, in.reader(cl.client), nil
	}
	ns, _, err := o.namespace()
	if err != nil {
		return nil, nil, err
	}
	ws := &notifyv1.WatchSubscription{}
	if err := cl.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ws); err != nil {
		return nil, nil, err
	}
	return ws, cl.client, nil
}

// liveObject gets the object --object names, [NAMESPACE/]NAME, in namespace when it names
// none, without its managedFields (as the operator's events carry it).
func liveObject(ctx context.Context, cl *clients, res resolve.Resource,
	object, namespace string) (*unstructured.Unstructured, error) {
	ns, name, ok := strings.Cut(object, "/")
	if !ok {
		ns, name = namespace, object
	}
	if !res.Namespaced {
		ns = ""
	}
	u, err := cl.dynamic.Resource(res.GVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	u.SetManagedFields(nil)
	return u, nil
}

// testObjectFor is the object the test event carries: a live one, or a synthetic object
// of the subscription's resource, named so that nobody takes it for a real one.
func testObjectFor(ctx context.Context, cl *clients, ws *notifyv1.WatchSubscription, p subscription.Plan,
	object string) (*unstructured.Unstructured, error) {
	res, err := cl.resolver.Resolve(p.GVR)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", describeGVR(p), err)
	}
	if object != "" {
		return liveObject(ctx, cl, res, object, ws.Namespace)
	}
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(res.GVR.GroupVersion().String())
	u.SetKind(res.Kind)
	u.SetName("dynamic-notifier-test")
	if res.Namespaced {
		u.SetNamespace(ws.Namespace)
	}
	u.SetUID(uuid.NewUUID())
	u.SetResourceVersion("0")
	u.SetCreationTimestamp(metav1.Now())
	u.SetLabels(map[string]string{"app.kubernetes.io/managed-by": pluginName})
	return u, nil
}

func describeObject(u *unstructured.Unstructured, object string) string {
	if object == "" {
		return "the synthetic " + u.GetKind() + " (a template reading fields it lacks fails on it: pass --object)"
	}
	return u.GetKind() + " " + event.KeyOf(u)
}

func describeGVR(p subscription.Plan) string {
	return strings.TrimPrefix(p.GVR.Group+"/", "/") + p.GVR.Version + "/" + p.GVR.Resource
}

// explainSendError is the error of a send, with what the user can do about it.
func explainSendError(err error, timedOut bool, timeout time.Duration, target subscription.Target, url string) string {
	msg := err.Error()
	if errors.Is(err, context.DeadlineExceeded) || timedOut {
		msg += fmt.Sprintf(" (no answer within %s)", timeout)
	}
	if target.Sink.Service != nil && url == "" && strings.Contains(err.Error(), "no such host") {
		msg += "; a Service sink resolves only inside the cluster: run kubectl port-forward to the " +
			"Service and pass --url http://127.0.0.1:PORT" + target.Sink.Service.Path
	}
	return msg
}

// explainBuildError says why the sink could not be built: send reads the Secrets with the
// user's own credentials.
func explainBuildError(err error, target subscription.Target) error {
	var se *subscription.SinkError
	if errors.As(err, &se) && se.Cause != nil && apierrors.IsForbidden(se.Cause) {
		who := "the subscription's ServiceAccount"
		if target.Source.Account == nil {
			who = "the operator (a ClusterWatchSink's Secrets are the platform team's)"
		}
		return fmt.Errorf("%w\nsend reads the sink's Secrets with your own credentials, and you may not get this "+
			"one; the operator reads it as %s. Ask for get on the Secret, or have someone who may run send", err, who)
	}
	return err
}

// recorder keeps the status and the start of the body of the answer a sink gave.
type recorder struct {
	max    int
	mu     sync.Mutex
	status string
	body   bytes.Buffer
	read   int
}

func (r *recorder) answer() (status, body string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status, r.body.String(), r.read
}

// recordingTransport records each answer's status and the start of its body as the sink
// reads it (the webhook reads up to 64 KiB and discards it).
type recordingTransport struct {
	next http.RoundTripper
	rec  *recorder
}

func (t *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	t.rec.mu.Lock()
	t.rec.status, t.rec.read = resp.Status, 0
	t.rec.body.Reset()
	t.rec.mu.Unlock()
	resp.Body = &recordingBody{ReadCloser: resp.Body, rec: t.rec}
	return resp, nil
}

type recordingBody struct {
	io.ReadCloser
	rec *recorder
}

func (b *recordingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.rec.mu.Lock()
	b.rec.read += n
	if room := b.rec.max - b.rec.body.Len(); room > 0 {
		b.rec.body.Write(p[:min(n, room)])
	}
	b.rec.mu.Unlock()
	return n, err
}

func printSendResult(w io.Writer, r sendResult) {
	p := func(format string, args ...any) { _, _ = fmt.Fprintf(w, format, args...) }
	if r.Log != "" {
		p("sink %s: the operator writes events to its log; this is the line it would write (nothing was sent):\n%s\n",
			r.Sink, r.Log)
		return
	}
	p("sent %s, id %s, to %s (%s, %s mode)\n", testEventType, r.ID, r.URL, r.Sink, r.Mode)
	if r.Status != "" {
		p("answer: %s in %s\n", r.Status, r.Latency)
	} else {
		p("no answer after %s\n", r.Latency)
	}
	if r.Status != "" {
		switch {
		case r.BodyBytes == 0:
			p("body: empty\n")
		case len(r.Body) < r.BodyBytes:
			p("body (first %d of %d bytes):\n%s\n", len(r.Body), r.BodyBytes, r.Body)
		default:
			p("body (%d bytes):\n%s\n", r.BodyBytes, r.Body)
		}
	}
	if r.Error != "" {
		p("error: %s\n", r.Error)
	}
}
