// Package operator assembles the manager's parts (resolver, watch registry, reconciler) so
// the binary, the demo and the tests run the same wiring.
package operator

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/authz"
	"github.com/dynamic-notifier/dynamic-notifier/internal/checkpoint"
	"github.com/dynamic-notifier/dynamic-notifier/internal/controller"
	"github.com/dynamic-notifier/dynamic-notifier/internal/metrics"
	"github.com/dynamic-notifier/dynamic-notifier/internal/resolve"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

// Authorization is how a subscription's right to watch what it names is checked.
type Authorization string

const (
	// AuthorizationSubjectAccessReview asks the API server whether the subscription's
	// ServiceAccount may list and watch each namespace it covers. The binary's default.
	AuthorizationSubjectAccessReview Authorization = "SubjectAccessReview"
	// AuthorizationNone trusts every subscription (single-tenant clusters).
	AuthorizationNone Authorization = "None"
)

// ParseCIDRs reads a comma-separated list of address ranges; empty gives an empty list.
func ParseCIDRs(list string) ([]netip.Prefix, error) {
	out := []netip.Prefix{}
	for part := range strings.SplitSeq(list, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// FormatCIDRs writes ranges as ParseCIDRs reads them.
func FormatCIDRs(prefixes []netip.Prefix) string {
	parts := make([]string, len(prefixes))
	for i, p := range prefixes {
		parts[i] = p.String()
	}
	return strings.Join(parts, ",")
}

// Options tune the operator; zero values take the defaults.
type Options struct {
	// StatusInterval bounds how often counters alone cause a status write (default 2s).
	StatusInterval time.Duration
	// DeliveryTimeout bounds one delivery attempt (default 10s).
	DeliveryTimeout time.Duration
	// SinkDeny are address ranges sinks may not reach, checked on the URL's host and when
	// dialing. Nil means sink.DefaultDeny; an empty, non-nil slice denies nothing.
	SinkDeny []netip.Prefix
	// SinkUseProxy sends sink requests through HTTP_PROXY and HTTPS_PROXY. Off by default:
	// the deny list then sees only the proxy's address and addresses written in URLs.
	SinkUseProxy bool
	// SinkFollowRedirects follows up to 3 redirects to the same scheme, host and port,
	// without custom or signature headers. Off by default: a redirect fails the delivery.
	SinkFollowRedirects bool
	// Authorization of subscriptions; empty means None (tests and embedded use), the
	// binary passes SubjectAccessReview unless told otherwise.
	Authorization Authorization
	// AuthorizationInterval is how long an authorization answer is trusted (default 1m).
	AuthorizationInterval time.Duration
	// CheckpointNamespace holds the checkpoints ConfigMap; empty disables checkpoints (a
	// restart then delivers only changes made after it).
	CheckpointNamespace string
	// CheckpointInterval is how often changed checkpoints are saved (default 5s).
	CheckpointInterval time.Duration
	// ShutdownGrace bounds the drain of deliveries on shutdown (default 20s).
	ShutdownGrace time.Duration
}

// CacheOptions are the manager cache settings the operator is built for: cached objects
// (subscriptions, CRD and Secret metadata) without managedFields, which are often larger
// than the rest and never read.
func CacheOptions() cache.Options {
	return cache.Options{DefaultTransform: cache.TransformStripManagedFields()}
}

// NewEmbeddedManager builds a manager for running the operator inside another program (the
// demo, tests, benchmarks): no metrics or probe listeners, no leader election, and
// controller names that may be registered again in the same process.
func NewEmbeddedManager(cfg *rest.Config) (ctrl.Manager, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return ctrl.NewManager(cfg, ctrl.Options{
		Cache:                  CacheOptions(),
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: new(true)},
	})
}

// Operator gives tests a view of the running parts.
type Operator struct {
	Registry *watch.Registry
}

// Setup adds the operator to mgr. The manager's scheme gains the types it needs.
func Setup(mgr ctrl.Manager, opts Options) (*Operator, error) {
	if err := notifyv1.AddToScheme(mgr.GetScheme()); err != nil {
		return nil, err
	}
	if err := apiextensionsv1.AddToScheme(mgr.GetScheme()); err != nil {
		return nil, err
	}
	dyn, err := watch.NewClient(mgr.GetConfig(), mgr.GetHTTPClient())
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	disco, err := discovery.NewDiscoveryClientForConfigAndClient(mgr.GetConfig(), mgr.GetHTTPClient())
	if err != nil {
		return nil, fmt.Errorf("discovery client: %w", err)
	}
	log := ctrl.Log.WithName("watchsubscription")
	r := &controller.WatchSubscriptionReconciler{
		Client:          mgr.GetClient(),
		APIReader:       mgr.GetAPIReader(),
		Recorder:        mgr.GetEventRecorder("dynamic-notifier"),
		Resolver:        resolve.New(disco, 250*time.Millisecond),
		HTTPClients:     sink.NewClients(sinkClientOptions(opts)),
		StatusInterval:  opts.StatusInterval,
		DeliveryTimeout: opts.DeliveryTimeout,
		Log:             log,
	}
	if opts.Authorization == AuthorizationSubjectAccessReview {
		r.Authorizer = &authz.Checker{Client: mgr.GetClient(), Interval: opts.AuthorizationInterval}
	}
	r.Registry = watch.New(dyn, ctrl.Log.WithName("watch"), r.InformerChanged)
	if opts.CheckpointNamespace != "" {
		store := &checkpoint.ConfigMap{Reader: mgr.GetAPIReader(), Writer: mgr.GetClient(), Namespace: opts.CheckpointNamespace}
		r.Registry.Checkpointing(store, orDefault(opts.CheckpointInterval, 5*time.Second),
			orDefault(opts.ShutdownGrace, 20*time.Second))
	}
	metrics.Track(r.Registry)
	if err := mgr.Add(r.Registry); err != nil {
		return nil, err
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	return &Operator{Registry: r.Registry}, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func sinkClientOptions(opts Options) sink.ClientOptions {
	out := sink.ClientOptions{Deny: opts.SinkDeny, FollowRedirects: opts.SinkFollowRedirects}
	if opts.SinkUseProxy {
		out.Proxy = http.ProxyFromEnvironment
	}
	return out
}
