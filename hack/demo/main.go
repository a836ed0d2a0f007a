// Command demo runs the operator end to end on a laptop, with no cluster and no image: it
// starts a local control plane (etcd, kube-apiserver), the operator in-process and a small
// CloudEvents receiver, applies config/samples/configmaps-to-webhook.yaml and shows the
// events a ConfigMap's life produces. `make demo` runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/operator"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

const (
	namespace     = "default"
	sampleFile    = "configmaps-to-webhook.yaml"
	configMapName = "demo-settings"
	eventTypeBase = "io.dynamicnotifier.resource."
)

type options struct {
	// Port of the CloudEvents receiver on 127.0.0.1; 0 picks a free one.
	Port int
	// Once stops everything after the scripted part instead of waiting for a signal.
	Once bool
	// Verbose shows every info log line, not only errors and the log sink's events.
	Verbose bool
	// LogOutput receives the operator's logs; nil means the same writer as the output.
	LogOutput io.Writer
	// ReadyTimeout bounds the wait for Ready=True, EventTimeout the wait for each event.
	ReadyTimeout, EventTimeout time.Duration
}

func main() {
	opts := options{LogOutput: os.Stderr}
	flag.IntVar(&opts.Port, "port", 8099, "port of the CloudEvents receiver on 127.0.0.1 (0: any free port)")
	flag.BoolVar(&opts.Once, "once", false, "exit after the scripted demo instead of running until Ctrl-C")
	flag.BoolVar(&opts.Verbose, "v", false, "show all operator logs, not only errors and log-sink events")
	flag.Parse()

	// Signals stay captured until run has cleaned up, so an impatient second Ctrl-C cannot
	// kill the demo and orphan etcd and kube-apiserver (they run in their own process group).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, opts, os.Stdout)
	interrupted := ctx.Err() != nil
	stop()
	switch {
	case err == nil:
	case interrupted && errors.Is(err, context.Canceled):
		_, _ = fmt.Fprintln(os.Stderr, "demo interrupted")
		os.Exit(130)
	default:
		_, _ = fmt.Fprintf(os.Stderr, "demo failed: %v\n", err)
		os.Exit(1)
	}
}

// run performs the demo and stops everything it started before returning, on success,
// failure and cancellation alike.
func run(ctx context.Context, opts options, out io.Writer) (err error) {
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 60 * time.Second
	}
	if opts.EventTimeout == 0 {
		opts.EventTimeout = 30 * time.Second
	}
	out = &syncWriter{w: out} // the receiver and the loggers print from other goroutines
	if opts.LogOutput == nil {
		opts.LogOutput = out
	}
	setupLogging(opts)

	tmp, err := os.MkdirTemp("", "dynamic-notifier-demo-")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(tmp)) }()

	// The receiver first: a busy port fails in a moment, not after the control plane.
	rcv, err := startReceiver(opts.Port, out)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, rcv.close()) }()
	_, _ = fmt.Fprintf(out, "CloudEvents receiver listening on http://%s\n", rcv.addr)

	_, _ = fmt.Fprintln(out, "starting the control plane (etcd, kube-apiserver)...")
	env, cfg, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() {
		_, _ = fmt.Fprintln(out, "stopping the control plane")
		if stopErr := env.Stop(); stopErr != nil {
			err = errors.Join(err, fmt.Errorf("stopping the control plane: %w", stopErr))
		}
	}()
	kubeconfig, err := testenv.WriteKubeconfig(env, tmp)
	if err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}
	_, _ = fmt.Fprintf(out, "control plane at %s, kubeconfig %s\n", cfg.Host, kubeconfig)

	// A manager failure cancels the steps below with its error as the cause.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopOperator, err := startOperator(cfg, cancel)
	if err != nil {
		return err
	}
	// Deferred last, so it runs first: the operator stops while the API server is still up.
	defer func() { err = errors.Join(err, stopOperator()) }()
	_, _ = fmt.Fprintln(out, "operator started")

	c, err := client.New(cfg, client.Options{Scheme: newScheme()})
	if err != nil {
		return err
	}
	sub, err := applySample(ctx, c, rcv.addr)
	if err != nil {
		return err
	}
	_, _ = fmt.Fprintf(out, "applied WatchSubscription %s/%s (config/samples/%s), sink %s\n",
		sub.Namespace, sub.Name, sampleFile, sub.Spec.Sink.Webhook.URL)
	if err := waitReady(ctx, c, sub, opts.ReadyTimeout); err != nil {
		return err
	}
	_, _ = fmt.Fprintf(out, "WatchSubscription %s/%s is Ready (%s)\n", sub.Namespace, sub.Name, notifyv1.ReasonWatching)

	if err := configMapLifecycle(ctx, c, rcv, sub, opts.EventTimeout, out); err != nil {
		return err
	}

	_, _ = fmt.Fprintf(out, "\n$ kubectl --kubeconfig %s get watchsubscriptions -A -o wide\n", kubeconfig)
	table, err := kubectl(ctx, kubeconfig, tmp, "get", "watchsubscriptions", "-A", "-o", "wide")
	if err != nil {
		return err
	}
	_, _ = fmt.Fprintf(out, "%s\n", table)

	if opts.Once {
		return nil
	}
	_, _ = fmt.Fprintf(out, `
The control plane, the operator and the receiver keep running. In another shell:

  export KUBECONFIG=%s
  kubectl apply -n default -f config/samples/namespaces-to-log.yaml   # events in this log
  kubectl create namespace team-a
  kubectl create configmap hello -n default                           # events to the receiver

`, kubeconfig)
	if rcv.addr != "127.0.0.1:8099" {
		_, _ = fmt.Fprintf(out, "The samples post to 127.0.0.1:8099; this receiver is http://%s/events.\n", rcv.addr)
	}
	_, _ = fmt.Fprintln(out, "Press Ctrl-C to stop.")
	<-ctx.Done()
	if cause := context.Cause(ctx); !errors.Is(cause, context.Canceled) {
		return cause // the manager failed
	}
	_, _ = fmt.Fprintln(out, "\nshutting down")
	return nil
}

// setupLogging keeps the demo's output readable: errors, plus the info lines of the log
// sink (loggers named "...sink..."), which are events the demo wants to show.
func setupLogging(opts options) {
	base := zap.New(
		zap.WriteTo(opts.LogOutput),
		zap.ConsoleEncoder(func(ec *zapcore.EncoderConfig) {
			ec.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		}),
		zap.StacktraceLevel(zapcore.PanicLevel), // stack traces would drown the demo
	)
	logger := base
	if !opts.Verbose {
		logger = logr.New(quietSink{LogSink: base.GetSink()})
	}
	ctrl.SetLogger(logger)
	klog.SetLogger(logger) // client-go's own lines get the same filter
}

// quietSink passes errors and the info lines of loggers whose name mentions "sink".
type quietSink struct {
	logr.LogSink
	keep bool
}

func (q quietSink) Enabled(level int) bool { return q.keep && q.LogSink.Enabled(level) }

func (q quietSink) WithName(name string) logr.LogSink {
	return quietSink{q.LogSink.WithName(name), q.keep || strings.Contains(name, "sink")}
}

func (q quietSink) WithValues(kv ...any) logr.LogSink {
	return quietSink{q.LogSink.WithValues(kv...), q.keep}
}

// WithCallDepth keeps the caller annotation pointing at the operator, not at this wrapper.
func (q quietSink) WithCallDepth(depth int) logr.LogSink {
	if cd, ok := q.LogSink.(logr.CallDepthLogSink); ok {
		return quietSink{cd.WithCallDepth(depth), q.keep}
	}
	return q
}

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = notifyv1.AddToScheme(s)
	return s
}

// startOperator runs a manager with the operator in the background. The returned function
// stops it and waits until it has stopped. A manager that fails on its own calls fail.
func startOperator(cfg *rest.Config, fail context.CancelCauseFunc) (func() error, error) {
	mgr, err := operator.NewEmbeddedManager(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating the manager: %w", err)
	}
	// As in production: each subscription acts as its ServiceAccount.
	if _, err := operator.Setup(mgr, operator.Options{StatusInterval: time.Second,
		Authorization: operator.AuthorizationSubjectAccessReview}); err != nil {
		return nil, fmt.Errorf("setting up the operator: %w", err)
	}
	// Not derived from run's context: the operator must outlive a Ctrl-C until run's
	// deferred cleanup stops it, before the control plane goes away.
	mgrCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		err := mgr.Start(mgrCtx)
		if err != nil && mgrCtx.Err() == nil {
			fail(fmt.Errorf("operator stopped: %w", err))
		}
		done <- err
	}()
	return func() error {
		stop()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("operator: %w", err)
		}
		return nil
	}, nil
}

// grantReadConfigMaps lets the demo namespace's default ServiceAccount list and watch
// ConfigMaps there, as a user granting their subscription what it needs would.
func grantReadConfigMaps(ctx context.Context, c client.Client) error {
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "watch-configmaps"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"},
			Verbs: []string{"list", "watch"}}}}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "watch-configmaps"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: namespace, Name: "default"}}}
	if err := c.Create(ctx, role); err != nil {
		return err
	}
	return c.Create(ctx, binding)
}

// applySample creates the sample subscription in the demo namespace, posting to addr.
func applySample(ctx context.Context, c client.Client, addr string) (*notifyv1.WatchSubscription, error) {
	if err := grantReadConfigMaps(ctx, c); err != nil {
		return nil, fmt.Errorf("granting the subscription's ServiceAccount read access: %w", err)
	}
	path := filepath.Join(testenv.RepoRoot(), "config", "samples", sampleFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sub := &notifyv1.WatchSubscription{}
	if err := yaml.UnmarshalStrict(data, sub); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if sub.Spec.Sink.Webhook == nil {
		return nil, fmt.Errorf("%s: expected a webhook sink", path)
	}
	// Keep the sample's path, point it at our receiver (whose port may be random).
	u, err := url.Parse(sub.Spec.Sink.Webhook.URL)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	u.Host = addr
	sub.Spec.Sink.Webhook.URL = u.String()
	sub.Namespace = namespace
	if err := c.Create(ctx, sub); err != nil {
		return nil, fmt.Errorf("creating WatchSubscription %s/%s: %w", sub.Namespace, sub.Name, err)
	}
	return sub, nil
}

// waitReady polls until the subscription reports Ready=True for its current generation.
func waitReady(ctx context.Context, c client.Client, sub *notifyv1.WatchSubscription, timeout time.Duration) error {
	key := client.ObjectKeyFromObject(sub)
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		cur := &notifyv1.WatchSubscription{}
		if err := c.Get(ctx, key, cur); err != nil {
			return false, nil // transient; the timeout message shows the last status
		}
		return cur.Status.ObservedGeneration == cur.Generation &&
			meta.IsStatusConditionTrue(cur.Status.Conditions, notifyv1.ConditionReady), nil
	})
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			return cause
		}
		return fmt.Errorf("WatchSubscription %s not Ready within %s; %s", key, timeout, describe(c, key))
	}
	return nil
}

// describe summarizes a subscription's status for error messages.
func describe(c client.Client, key client.ObjectKey) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cur := &notifyv1.WatchSubscription{}
	if err := c.Get(ctx, key, cur); err != nil {
		return "status unavailable: " + err.Error()
	}
	s := cur.Status
	ready := "Ready condition absent"
	if cond := meta.FindStatusCondition(s.Conditions, notifyv1.ConditionReady); cond != nil {
		ready = fmt.Sprintf("Ready=%s reason=%s message=%q", cond.Status, cond.Reason, cond.Message)
	}
	return fmt.Sprintf("status: %s generation=%d observedGeneration=%d observed=%d delivered=%d failed=%d",
		ready, cur.Generation, s.ObservedGeneration, s.EventsObserved, s.EventsDelivered, s.EventsFailed)
}

// configMapLifecycle creates, updates and deletes a ConfigMap, waiting after each step for
// its event, so the events arrive, and print, in order.
func configMapLifecycle(ctx context.Context, c client.Client, rcv *receiver, sub *notifyv1.WatchSubscription,
	timeout time.Duration, out io.Writer) error {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: configMapName, Namespace: namespace},
		Data:       map[string]string{"greeting": "hello"},
	}
	subject := fmt.Sprintf("/api/v1/namespaces/%s/configmaps/%s", namespace, configMapName)
	steps := []struct {
		verb, event string
		do          func() error
	}{
		{"creating", "added", func() error { return c.Create(ctx, cm) }},
		{"updating", "updated", func() error {
			cm.Data["greeting"] = "hello again"
			return c.Update(ctx, cm)
		}},
		{"deleting", "deleted", func() error { return c.Delete(ctx, cm) }},
	}
	next := 0 // events before this index are already accounted for
	for _, s := range steps {
		// Printed first: the event may well arrive before the API call returns.
		_, _ = fmt.Fprintf(out, "%s ConfigMap %s/%s\n", s.verb, namespace, configMapName)
		if err := s.do(); err != nil {
			return fmt.Errorf("%s ConfigMap %s/%s: %w", s.verb, namespace, configMapName, err)
		}
		i, err := rcv.waitFor(ctx, next, eventTypeBase+s.event, subject, timeout)
		if err != nil {
			if cause := context.Cause(ctx); cause != nil {
				return cause
			}
			return fmt.Errorf("no %s event for %s within %s (received so far: %s); WatchSubscription %s",
				s.event, subject, timeout, rcv.summary(), describe(c, client.ObjectKeyFromObject(sub)))
		}
		next = i + 1
	}
	return nil
}

// kubectl runs the real kubectl against the demo's control plane, with its discovery cache
// in the demo's temp dir rather than ~/.kube.
func kubectl(ctx context.Context, kubeconfig, tmp string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECACHEDIR="+filepath.Join(tmp, "kube-cache"))
	b, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	return strings.TrimRight(string(b), "\n"), nil
}

// receiver is a CloudEvents (HTTP binary mode) sink that prints and records what it gets.
type receiver struct {
	addr string
	srv  *http.Server
	out  io.Writer

	mu     sync.Mutex
	events []receivedEvent
}

type receivedEvent struct{ typ, subject, id string }

func startReceiver(port int, out io.Writer) (*receiver, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", fmt.Sprint(port)))
	if err != nil {
		return nil, fmt.Errorf("CloudEvents receiver: %w (try -port 0)", err)
	}
	r := &receiver{addr: ln.Addr().String(), out: out}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.srv.Serve(ln) }() // returns ErrServerClosed on close
	return r, nil
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	ev, err := cehttp.NewEventFromHTTPRequest(req)
	if err != nil {
		_, _ = fmt.Fprintf(r.out, "receiver: rejected %s %s: %v\n", req.Method, req.URL.Path, err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// Record and print under one lock so the printed order is the recorded order.
	r.mu.Lock()
	r.events = append(r.events, receivedEvent{ev.Type(), ev.Subject(), ev.ID()})
	_, _ = fmt.Fprintf(r.out, "received  %s  %s  id=%s\n", ev.Type(), ev.Subject(), ev.ID())
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// waitFor polls for an event of type typ about subject at index from or later and returns
// its index.
func (r *receiver) waitFor(ctx context.Context, from int, typ, subject string, timeout time.Duration) (int, error) {
	found := -1
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		for i := from; i < len(r.events); i++ {
			if r.events[i].typ == typ && r.events[i].subject == subject {
				found = i
				return true, nil
			}
		}
		return false, nil
	})
	return found, err
}

func (r *receiver) summary() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) == 0 {
		return "nothing"
	}
	parts := make([]string, len(r.events))
	for i, e := range r.events {
		parts[i] = strings.TrimPrefix(e.typ, eventTypeBase) + " " + e.subject
	}
	return strings.Join(parts, ", ")
}

func (r *receiver) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("stopping the receiver: %w", err)
	}
	return nil
}

// syncWriter serializes writes from the receiver, the loggers and run.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
