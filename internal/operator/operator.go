// Package operator assembles the manager's parts (resolver, watch registry, reconciler) so
// the binary, the demo and the tests run the same wiring.
package operator

import (
	"cmp"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"runtime/debug"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/authz"
	"github.com/dynamic-notifier/dynamic-notifier/internal/checkpoint"
	"github.com/dynamic-notifier/dynamic-notifier/internal/controller"
	"github.com/dynamic-notifier/dynamic-notifier/internal/delivery"
	"github.com/dynamic-notifier/dynamic-notifier/internal/membership"
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

// Defaults of the operator's settings, in one place: the binary's flags, the Helm chart's
// values (checked by test/install) and the operator that tests and the demo embed all
// start from these.
const (
	DefaultAuthorization         = AuthorizationSubjectAccessReview
	DefaultAuthorizationInterval = authz.DefaultInterval
	DefaultStatusInterval        = 2 * time.Second
	// DefaultStatusCounterRate bounds the status writes that counters alone cause: 10 a
	// second over all subscriptions, a few percent of a core of the API server.
	DefaultStatusCounterRate  = 10.0
	DefaultCheckpointInterval = 5 * time.Second
	// DefaultShutdownGrace bounds the whole shutdown: stopping the watches, draining
	// deliveries and saving checkpoints.
	DefaultShutdownGrace = 20 * time.Second
	// DefaultConcurrentReconciles is how many subscriptions are reconciled at once. A
	// reconcile mostly waits on its status write: with 8, the writes of a burst of 1,000
	// new subscriptions fell 2 s behind their creates (BENCHMARKS.md, convergence).
	DefaultConcurrentReconciles = 16
	// ShutdownSlack is what the process takes beyond the grace period at most: the last
	// checkpoint save and releasing the Lease. After it, the process exits regardless.
	ShutdownSlack = 10 * time.Second
)

// Options tune the operator; zero values take the defaults.
type Options struct {
	// StatusInterval bounds how often counters alone cause a status write.
	StatusInterval time.Duration
	// StatusCounterRate bounds the status writes that counters alone cause, per second
	// over all subscriptions (condition changes are never held back); 0 means
	// DefaultStatusCounterRate, negative means no bound.
	StatusCounterRate float64
	// DeliveryTimeout bounds one delivery attempt when a subscription sets none.
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
	// Authorization of subscriptions; empty means DefaultAuthorization.
	Authorization Authorization
	// AuthorizationInterval is how long an authorization answer is trusted.
	AuthorizationInterval time.Duration
	// DeliveryMemoryBudget bounds the bytes of events held for delivery across every
	// subscription (see delivery.MemoryBudget); 0 means DefaultDeliveryMemoryBudget of the
	// runtime's memory limit, negative means no budget.
	DeliveryMemoryBudget int64
	// OperatorNamespace is the operator's own namespace, where the Secrets of
	// ClusterWatchSinks live; empty means CheckpointNamespace.
	OperatorNamespace string
	// CheckpointNamespace holds the checkpoints ConfigMap; empty disables checkpoints (a
	// restart then delivers only changes made after it).
	CheckpointNamespace string
	// CheckpointInterval is how often changed checkpoints are saved.
	CheckpointInterval time.Duration
	// ShutdownGrace bounds the shutdown: watches stopped, deliveries drained, checkpoints
	// saved.
	ShutdownGrace time.Duration
	// ConcurrentReconciles is how many subscriptions are reconciled at once; 0 means
	// DefaultConcurrentReconciles.
	ConcurrentReconciles int
	// Sharding is how replicas share the work; empty means ShardingNone.
	Sharding Sharding
	// ReplicaName names this replica among the others (its pod name); required with
	// ShardingLeases.
	ReplicaName string
	// MemberLeaseDuration, MemberRenewDeadline and MemberRetryPeriod time the member
	// Leases with ShardingLeases (15s, 10s and 2s when zero).
	MemberLeaseDuration, MemberRenewDeadline, MemberRetryPeriod time.Duration
}

// Sharding is how replicas share the work.
type Sharding string

const (
	// ShardingNone: one replica does all the work (with --leader-elect, the leader; the
	// others wait). The default.
	ShardingNone Sharding = "None"
	// ShardingLeases: every replica holds a member Lease and serves the resources that
	// rendezvous hashing over the live members gives it.
	ShardingLeases Sharding = "Leases"
)

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
	// Budget is the delivery memory budget; nil when there is none.
	Budget *delivery.MemoryBudget
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
		Client:            mgr.GetClient(),
		APIReader:         mgr.GetAPIReader(),
		Recorder:          mgr.GetEventRecorder("dynamic-notifier"),
		Resolver:          resolve.New(disco, 250*time.Millisecond),
		HTTPClients:       sink.NewClients(sinkClientOptions(opts)),
		Brokers:           sink.NewBrokers(sinkClientOptions(opts)),
		Budget:            delivery.NewMemoryBudget(memoryBudget(opts.DeliveryMemoryBudget)),
		OperatorNamespace: cmp.Or(opts.OperatorNamespace, opts.CheckpointNamespace),
		StatusInterval:    cmp.Or(opts.StatusInterval, DefaultStatusInterval),
		StatusCounterRate: cmp.Or(opts.StatusCounterRate, DefaultStatusCounterRate),
		DeliveryTimeout:   opts.DeliveryTimeout,
		Workers:           cmp.Or(opts.ConcurrentReconciles, DefaultConcurrentReconciles),
		Log:               log,
	}
	if r.Authorizer, err = authorizer(mgr, opts); err != nil {
		return nil, err
	}
	r.Registry = watch.New(dyn, ctrl.Log.WithName("watch"), r.InformerChanged)
	sharding := cmp.Or(opts.Sharding, ShardingNone)
	if err := checkSharding(sharding, opts); err != nil {
		return nil, err
	}
	// The registry ends with the manager: through the keeper, after the last checkpoint,
	// when there are checkpoints.
	var owner manager.Runnable = r.Registry
	if opts.CheckpointNamespace != "" {
		uncached, err := client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme(), HTTPClient: mgr.GetHTTPClient()})
		if err != nil {
			return nil, fmt.Errorf("checkpoint client: %w", err)
		}
		store := &checkpoint.ConfigMaps{Client: uncached, Namespace: opts.CheckpointNamespace}
		grace := cmp.Or(opts.ShutdownGrace, DefaultShutdownGrace)
		keeper := checkpoint.NewKeeper(r.Registry, store, cmp.Or(opts.CheckpointInterval, DefaultCheckpointInterval),
			grace, ctrl.Log.WithName("checkpoint"))
		keeper.Drain = r.Drain
		owner = keeper
		if sharding == ShardingLeases {
			if err := setupShards(mgr, r, keeper, store, uncached, opts, grace); err != nil {
				return nil, err
			}
		}
	}
	metrics.Track(r.Registry)
	metrics.TrackBudget(r.Budget)
	if err := mgr.Add(owner); err != nil {
		return nil, err
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	for _, kind := range []notifyv1.SinkKind{notifyv1.SinkKindWatchSink, notifyv1.SinkKindClusterWatchSink} {
		if err := (&controller.SinkStatusReconciler{Client: mgr.GetClient(), Kind: kind, Subscriptions: r}).
			SetupWithManager(mgr); err != nil {
			return nil, err
		}
	}
	return &Operator{Registry: r.Registry, Budget: r.Budget}, nil
}

// authorizer checks subscriptions' access as opts say; nil trusts them.
func authorizer(mgr ctrl.Manager, opts Options) (*authz.Checker, error) {
	switch cmp.Or(opts.Authorization, DefaultAuthorization) {
	case AuthorizationSubjectAccessReview:
		return &authz.Checker{Client: mgr.GetClient(),
			Interval: cmp.Or(opts.AuthorizationInterval, DefaultAuthorizationInterval)}, nil
	case AuthorizationNone:
		return nil, nil
	default:
		return nil, fmt.Errorf("authorization %q: want %s or %s", opts.Authorization,
			AuthorizationSubjectAccessReview, AuthorizationNone)
	}
}

// checkSharding refuses a sharding mode it does not know, or Leases without what they need.
func checkSharding(sharding Sharding, opts Options) error {
	switch sharding {
	case ShardingNone:
		return nil
	case ShardingLeases:
		if opts.CheckpointNamespace == "" || opts.ReplicaName == "" {
			return fmt.Errorf("sharding %s needs the checkpoint namespace (for the Leases and checkpoints) and a "+
				"replica name", ShardingLeases)
		}
		return nil
	default:
		return fmt.Errorf("sharding %q: want %s or %s", opts.Sharding, ShardingNone, ShardingLeases)
	}
}

// setupShards adds the member Lease and the shard coordinator: the keeper saves and loads
// only the streams this replica serves, and after its last save the replica frees its
// claims and leaves.
func setupShards(mgr ctrl.Manager, r *controller.WatchSubscriptionReconciler, keeper *checkpoint.Keeper,
	store *checkpoint.ConfigMaps, uncached client.Client, opts Options, grace time.Duration) error {
	var shards *controller.Shards
	retry := cmp.Or(opts.MemberRetryPeriod, 2*time.Second)
	m := membership.New(membership.Options{Client: uncached, Namespace: opts.CheckpointNamespace,
		Name: opts.ReplicaName, Duration: opts.MemberLeaseDuration, RenewDeadline: opts.MemberRenewDeadline,
		RetryPeriod: retry, LeaveTimeout: grace + ShutdownSlack,
		OnChange: func([]string) { shards.Wake() }, Log: ctrl.Log.WithName("membership")})
	shards = controller.NewShards(m, keeper, grace, retry, mgr.GetCache(), ctrl.Log.WithName("shards"))
	keeper.Owns = shards.Owns
	store.Owns = func(pk watch.PointKey) bool { return shards.Owns(pk.Stream) }
	keeper.AfterShutdown = shards.Finish
	r.Shards = shards
	return mgr.Add(m)
}

func memoryBudget(configured int64) int64 {
	if configured != 0 {
		return configured
	}
	limit := debug.SetMemoryLimit(-1)
	if limit == math.MaxInt64 {
		limit = 0
	}
	return DefaultDeliveryMemoryBudget(limit)
}

func sinkClientOptions(opts Options) sink.ClientOptions {
	out := sink.ClientOptions{Deny: opts.SinkDeny, FollowRedirects: opts.SinkFollowRedirects}
	if opts.SinkUseProxy {
		out.Proxy = http.ProxyFromEnvironment
	}
	return out
}
