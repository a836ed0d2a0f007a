/*
Copyright 2026.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"os"
	"time"

	// Import all Kubernetes client auth plugins (e.g. Azure, GCP, OIDC, etc.)
	// to ensure that exec-entrypoint and run can make use of them.
	_ "k8s.io/client-go/plugin/pkg/client/auth"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	notifyv1alpha1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/checkpoint"
	"github.com/dynamic-notifier/dynamic-notifier/internal/operator"
	"github.com/dynamic-notifier/dynamic-notifier/internal/sink"
	// +kubebuilder:scaffold:imports
)

var (
	scheme   = runtime.NewScheme()
	setupLog = ctrl.Log.WithName("setup")
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))

	utilruntime.Must(notifyv1alpha1.AddToScheme(scheme))
	// +kubebuilder:scaffold:scheme
}

func main() {
	var metricsAddr string
	var metricsCertPath, metricsCertName, metricsCertKey string
	var enableLeaderElection bool
	var probeAddr string
	var secureMetrics bool
	var enableHTTP2 bool
	var sinkDenyCIDRs, subscriptionAuthz string
	var sinkUseProxy, sinkFollowRedirects bool
	var memoryBudget string
	var checkpointNamespace string
	var authzInterval, checkpointInterval, shutdownGrace time.Duration
	var statusCounterRate float64
	var concurrentReconciles int
	var leaseDuration, renewDeadline, retryPeriod time.Duration
	var sharding, replicaName string
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", "The address the metrics endpoint binds to. "+
		"Use :8443 for HTTPS or :8080 for HTTP, or leave as 0 to disable the metrics service.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "The address the probe endpoint binds to.")
	flag.BoolVar(&enableLeaderElection, "leader-elect", false,
		"Enable leader election for controller manager. "+
			"Enabling this will ensure there is only one active controller manager.")
	flag.BoolVar(&secureMetrics, "metrics-secure", true,
		"If set, the metrics endpoint is served securely via HTTPS. Use --metrics-secure=false to use HTTP instead.")
	flag.StringVar(&metricsCertPath, "metrics-cert-path", "",
		"The directory that contains the metrics server certificate.")
	flag.StringVar(&metricsCertName, "metrics-cert-name", "tls.crt", "The name of the metrics server certificate file.")
	flag.StringVar(&metricsCertKey, "metrics-cert-key", "tls.key", "The name of the metrics server key file.")
	flag.StringVar(&sinkDenyCIDRs, "sink-deny-cidrs", sink.FormatCIDRs(sink.DefaultDeny),
		"Comma-separated address ranges sinks may never reach (the default: cloud metadata services, "+
			"link-local and unspecified addresses), checked on the URL and after DNS resolution when dialing. "+
			"Empty denies nothing.")
	flag.BoolVar(&sinkUseProxy, "sink-use-proxy", false,
		"Send sink requests through the proxy in HTTP_PROXY, HTTPS_PROXY and NO_PROXY. The deny list then "+
			"checks only addresses written in sink URLs and the proxy's own address, not where the proxy connects.")
	flag.BoolVar(&sinkFollowRedirects, "sink-follow-redirects", false,
		"Follow up to 3 redirects a sink answers, only those keeping the method (307, 308) and the scheme, host "+
			"and port, without headersFrom or signature headers. Off, a redirect fails the delivery.")
	flag.StringVar(&memoryBudget, "delivery-memory-budget", "",
		"Bytes of events all subscriptions together may hold for delivery (a quantity: 512Mi). Over it, the "+
			"subscriptions holding more than their fair share drop their oldest events. Empty: a quarter of the "+
			"memory limit (GOMEMLIMIT, or 90% of the container's limit, $CONTAINER_MEMORY_LIMIT or its cgroup's, "+
			"which then becomes GOMEMLIMIT), 256Mi without one; 0: no budget.")
	flag.StringVar(&subscriptionAuthz, "subscription-authorization", string(operator.DefaultAuthorization),
		"How a subscription's right to watch is checked: SubjectAccessReview (its spec.serviceAccountName must "+
			"be allowed to list and watch what it subscribes to) or None (single-tenant clusters).")
	flag.DurationVar(&authzInterval, "subscription-authorization-interval", operator.DefaultAuthorizationInterval,
		"How long an answer of the subscription authorization check is trusted: a grant or a revocation takes "+
			"effect within it.")
	flag.BoolVar(&enableHTTP2, "enable-http2", false,
		"If set, HTTP/2 will be enabled for the metrics server")
	flag.StringVar(&checkpointNamespace, "checkpoint-namespace", os.Getenv("POD_NAMESPACE"),
		"Namespace of the ConfigMaps "+checkpoint.DefaultName+"-* that keep where each subscription's delivery "+
			"has come to, and of the leader-election Lease. Defaults to $POD_NAMESPACE; empty disables checkpoints.")
	flag.DurationVar(&checkpointInterval, "checkpoint-interval", operator.DefaultCheckpointInterval,
		"How often checkpoints are saved while they change.")
	flag.Float64Var(&statusCounterRate, "status-counter-rate", operator.DefaultStatusCounterRate,
		"Status writes per second, over all subscriptions, that only update counters (eventsDelivered and the "+
			"like; each subscription at most every 2s). Many busy subscriptions then refresh their counters less "+
			"often; condition changes are never held back. 0: no bound.")
	flag.IntVar(&concurrentReconciles, "concurrent-reconciles", operator.DefaultConcurrentReconciles,
		"How many subscriptions are reconciled at once. Each reconcile mostly waits on its status write.")
	flag.DurationVar(&shutdownGrace, "shutdown-grace", operator.DefaultShutdownGrace,
		"On SIGTERM, how long stopping the watches and finishing queued and in-flight deliveries may take "+
			"before the last checkpoint is saved. The process exits at most "+operator.ShutdownSlack.String()+
			" after it.")
	flag.DurationVar(&leaseDuration, "leader-elect-lease-duration", 15*time.Second,
		"How long a standby waits before taking over a leader that stopped renewing. With --sharding=Leases: "+
			"how long a replica that stopped renewing its member Lease stays a member; its work moves after it.")
	flag.DurationVar(&renewDeadline, "leader-elect-renew-deadline", 10*time.Second,
		"How long the leader (with --sharding=Leases, any replica) keeps trying to renew its Lease before it "+
			"steps down (stops and exits).")
	flag.DurationVar(&retryPeriod, "leader-elect-retry-period", 2*time.Second,
		"How often leader election is attempted; with --sharding=Leases, how often member Leases are renewed "+
			"and read.")
	flag.StringVar(&sharding, "sharding", string(operator.ShardingNone),
		"How replicas share the work. None: one replica (with --leader-elect, the leader) watches and delivers "+
			"for every subscription. Leases: every replica holds a member Lease in --checkpoint-namespace and "+
			"serves the resources that rendezvous hashing over the live members gives it; handovers drain and "+
			"checkpoint first. Not together with --leader-elect.")
	flag.StringVar(&replicaName, "replica-name", cmp.Or(os.Getenv("POD_NAME"), hostname()),
		"This replica's name among the others with --sharding=Leases (its member Lease, status.replica). "+
			"Defaults to $POD_NAME, else the host name.")
	// Production logging: JSON at info level; the --zap-* flags change it.
	opts := zap.Options{Development: false}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	if concurrentReconciles < 1 {
		setupLog.Error(errors.New("must be at least 1"), "Invalid --concurrent-reconciles", "value", concurrentReconciles)
		os.Exit(1)
	}
	memoryLimit := operator.UseContainerMemoryLimit()
	budget := operator.DefaultDeliveryMemoryBudget(memoryLimit)
	if memoryBudget != "" {
		q, err := resource.ParseQuantity(memoryBudget)
		if err != nil {
			setupLog.Error(err, "Invalid --delivery-memory-budget")
			os.Exit(1)
		}
		if budget = q.Value(); budget == 0 {
			budget = -1 // no budget
		}
	}
	setupLog.Info("Memory", "limit", memoryLimit, "deliveryBudget", budget)

	// HTTP/2 stays off unless asked for: it exposes the metrics server to the HTTP/2 Stream
	// Cancellation and Rapid Reset CVEs (GHSA-qppj-fm5r-hxr3, GHSA-4374-p667-p6c8).
	var tlsOpts []func(*tls.Config)
	if !enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsServerOptions := metricsserver.Options{
		BindAddress:   metricsAddr,
		SecureServing: secureMetrics,
		TLSOpts:       tlsOpts,
	}
	if secureMetrics {
		// Only callers allowed to get /metrics (a TokenReview and SubjectAccessReview per
		// scrape) may read the metrics.
		metricsServerOptions.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	// Without a certificate, controller-runtime serves a self-signed one.
	if len(metricsCertPath) > 0 {
		metricsServerOptions.CertDir = metricsCertPath
		metricsServerOptions.CertName = metricsCertName
		metricsServerOptions.KeyName = metricsCertKey
	}

	if operator.Sharding(sharding) == operator.ShardingLeases && enableLeaderElection {
		setupLog.Error(nil, "--sharding=Leases and --leader-elect exclude each other: with Leases every replica works")
		os.Exit(1)
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Cache:                   operator.CacheOptions(),
		Scheme:                  scheme,
		Metrics:                 metricsServerOptions,
		HealthProbeBindAddress:  probeAddr,
		LeaderElection:          enableLeaderElection,
		LeaderElectionID:        "5b45345f.dynamicnotifier.io",
		LeaderElectionNamespace: checkpointNamespace,
		LeaseDuration:           &leaseDuration,
		RenewDeadline:           &renewDeadline,
		RetryPeriod:             &retryPeriod,
		// The process ends right after the manager, and the checkpoints are drained and
		// saved by then: stepping down at once lets the standby start sooner.
		LeaderElectionReleaseOnCancel: true,
		// The drain and the last checkpoint must fit.
		GracefulShutdownTimeout: new(shutdownGrace + operator.ShutdownSlack/2),
	})
	if err != nil {
		setupLog.Error(err, "Failed to start manager")
		os.Exit(1)
	}

	deny, err := sink.ParseCIDRs(sinkDenyCIDRs)
	if err != nil {
		setupLog.Error(err, "Invalid --sink-deny-cidrs")
		os.Exit(1)
	}
	if _, err := operator.Setup(mgr, operator.Options{SinkDeny: deny, SinkUseProxy: sinkUseProxy,
		SinkFollowRedirects: sinkFollowRedirects, Authorization: operator.Authorization(subscriptionAuthz),
		DeliveryMemoryBudget:  budget,
		AuthorizationInterval: authzInterval, CheckpointNamespace: checkpointNamespace,
		CheckpointInterval: checkpointInterval, ShutdownGrace: shutdownGrace, ConcurrentReconciles: concurrentReconciles,
		StatusCounterRate: counterRate(statusCounterRate), Sharding: operator.Sharding(sharding),
		ReplicaName: replicaName, MemberLeaseDuration: leaseDuration,
		MemberRenewDeadline: renewDeadline, MemberRetryPeriod: retryPeriod}); err != nil {
		setupLog.Error(err, "Failed to set up the operator")
		os.Exit(1)
	}

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		setupLog.Error(err, "Failed to set up health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		setupLog.Error(err, "Failed to set up ready check")
		os.Exit(1)
	}

	ctx := ctrl.SetupSignalHandler()
	go exitIfShutdownHangs(ctx, shutdownGrace+operator.ShutdownSlack)
	setupLog.Info("Starting manager")
	if err := mgr.Start(ctx); err != nil {
		setupLog.Error(err, "Failed to run manager")
		os.Exit(1)
	}
}

func hostname() string {
	name, _ := os.Hostname()
	return name
}

// exitIfShutdownHangs ends the process when it is still running limit after ctx ended: a
// step that waits on an API server that no longer answers (its etcd gone) must not keep a
// terminating pod alive until the kubelet kills it.
func exitIfShutdownHangs(ctx context.Context, limit time.Duration) {
	<-ctx.Done()
	time.Sleep(limit)
	setupLog.Info("Shutdown did not finish in time; exiting now", "limit", limit)
	os.Exit(1)
}

// counterRate maps the flag's 0 (no bound) to the option's negative; the option's 0 is the
// default.
func counterRate(flagValue float64) float64 {
	if flagValue <= 0 {
		return -1
	}
	return flagValue
}
