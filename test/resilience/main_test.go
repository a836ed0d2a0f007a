// Package resilience injects faults into a real control plane and a real manager process
// (issue 10): the manager is SIGKILLed mid-stream, loses its leadership, sees the API server
// restart and its checkpoint fall out of the watch window, and is stopped with SIGTERM while
// a slow sink has events queued. Every test asserts the exact set of CloudEvent ids a sink on
// 127.0.0.1 received against the changes the test wrote.
//
// The control plane is envtest's etcd and kube-apiserver, started once for the package with
// a certificate directory of our own, so the API server can be stopped and started again on
// the same port with the same serving and client certificates (envtest deletes and
// regenerates a temporary one). The manager is the binary of ./cmd, built once per run.
package resilience

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

var (
	env        *envtest.Environment
	cfg        *rest.Config
	k8s        client.Client
	clientset  *kubernetes.Clientset
	kubeconfig string // admin kubeconfig the managers use
	managerBin string // the manager binary built from ./cmd
	apiLog     *lineLog
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	// The tests' own clients log nothing; without a logger controller-runtime complains
	// with a stack trace when one is created 30s into the run.
	ctrllog.SetLogger(logr.Discard())
	tmp, err := os.MkdirTemp("", "resilience-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(tmp) }()

	// Build the manager while the control plane starts: both take seconds on two cores.
	// RESILIENCE_MANAGER_BIN runs a binary built elsewhere instead (another revision, say).
	managerBin = filepath.Join(tmp, "manager")
	built := make(chan error, 1)
	if bin := os.Getenv("RESILIENCE_MANAGER_BIN"); bin != "" {
		managerBin = bin
		built <- nil
	} else {
		go build(built)
	}

	started := time.Now()
	if err := startControlPlane(filepath.Join(tmp, "apiserver")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if env != nil {
			_ = env.Stop()
		}
		if err := <-built; err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		return 1
	}
	defer func() { _ = env.Stop() }()
	if err := <-built; err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if kubeconfig, err = testenv.WriteKubeconfig(env, tmp); err != nil {
		fmt.Fprintln(os.Stderr, "kubeconfig:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "resilience: control plane and manager binary ready in %s\n",
		time.Since(started).Round(time.Millisecond))
	return m.Run()
}

// build builds ./cmd into managerBin.
func build(done chan<- error) {
	cmd := exec.Command("go", "build", "-o", managerBin, "./cmd")
	cmd.Dir = testenv.RepoRoot()
	out, err := cmd.CombinedOutput()
	if err != nil {
		err = fmt.Errorf("go build ./cmd: %w\n%s", err, out)
	}
	done <- err
}

// startControlPlane is testenv.Start with the API server's certificate directory set, so
// that restartAPIServer keeps the port, the serving certificate and the client CA.
func startControlPlane(certDir string) error {
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return err
	}
	apiLog = &lineLog{}
	env = &envtest.Environment{
		ControlPlane: envtest.ControlPlane{
			APIServer: &envtest.APIServer{CertDir: certDir, Out: apiLog, Err: apiLog},
		},
		// kube-apiserver does not exit on SIGTERM while watches are open (envtest waits 20s,
		// then kills it): a shorter grace keeps the restart test quick.
		ControlPlaneStopTimeout: apiServerStopGrace,
	}
	var err error
	if cfg, err = testenv.StartEnv(env); err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = apiextensionsv1.AddToScheme(scheme)
	_ = notifyv1.AddToScheme(scheme)
	if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	clientset, err = kubernetes.NewForConfig(cfg)
	return err
}

// apiServerStopGrace is how long kube-apiserver gets to exit after SIGTERM before envtest
// sends SIGKILL, like a kubelet with a short termination grace period.
const apiServerStopGrace = 5 * time.Second

// apiServerMu serialises restarts (tests run one after another anyway).
var apiServerMu sync.Mutex

// restartAPIServer stops the kube-apiserver process (SIGTERM, as envtest does), runs whileDown
// and starts it again on the same port with the same certificates. etcd keeps running. It
// returns how long the API server was unavailable, from SIGTERM until it serves again.
func restartAPIServer(t *testing.T, whileDown func()) time.Duration {
	t.Helper()
	return restartAPIServerWith(t, nil, whileDown)
}

// uncachedConfigMaps serves ConfigMaps from etcd rather than the watch cache. A restarted API
// server's watch cache starts at the present: a watch from before the restart is answered
// 410 Gone and every client re-lists, which folds the changes made meanwhile into final
// states. From etcd, the watch goes on from where the client was, as an API server that
// kept running (an HA peer) would serve it.
var uncachedConfigMaps = map[string]string{"watch-cache-sizes": "configmaps#0"}

// restartAPIServerWith is restartAPIServer with kube-apiserver flags changed for the new
// process and the later ones: a value sets a flag, "" drops it.
func restartAPIServerWith(t *testing.T, flags map[string]string, whileDown func()) time.Duration {
	t.Helper()
	apiServerMu.Lock()
	defer apiServerMu.Unlock()
	api := env.ControlPlane.GetAPIServer()
	stopped := time.Now()
	if err := api.Stop(); err != nil {
		if !strings.Contains(err.Error(), "timeout waiting for process kube-apiserver to stop") {
			t.Fatalf("stopping kube-apiserver: %v", err)
		}
		// envtest sent SIGKILL after the grace; it has stopped listening already.
		t.Logf("kube-apiserver still serving open watches %s after SIGTERM: killed", apiServerStopGrace)
	}
	waitPortClosed(t, api.HostPort())
	t.Logf("kube-apiserver down %s after SIGTERM", time.Since(stopped).Round(time.Millisecond))
	started := false
	defer func() {
		if !started { // whileDown failed the test: later tests still need an API server
			_ = api.Start()
		}
	}()
	if whileDown != nil {
		whileDown()
	}
	for flag, value := range flags {
		if value == "" {
			api.Configure().Disable(flag)
		} else {
			api.Configure().Set(flag, value)
		}
	}
	start := time.Now()
	started = true
	if err := api.Start(); err != nil {
		t.Fatalf("starting kube-apiserver again: %v\n%s", err, apiLog.tail(60))
	}
	t.Logf("kube-apiserver serving again after %s", time.Since(start).Round(time.Millisecond))
	// Wait until the API server serves our kinds again, as clients would see it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		err := k8s.List(ctx, &notifyv1.WatchSubscriptionList{}, client.Limit(1))
		if err == nil {
			if err = k8s.List(ctx, &corev1.ConfigMapList{}, client.Limit(1)); err == nil {
				return time.Since(stopped)
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("kube-apiserver restarted but does not serve WatchSubscriptions and ConfigMaps: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitPortClosed waits until nothing accepts connections on addr any more.
func waitPortClosed(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		_ = conn.Close()
		if time.Now().After(deadline) {
			t.Fatalf("%s still accepts connections after the API server was stopped", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// etcdCall posts a request to etcd's JSON gateway (enabled by default on the client URL),
// which saves the package a dependency on the etcd client.
func etcdCall(path string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	u := env.ControlPlane.Etcd.URL.String() + path
	r, err := http.Post(u, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer func() { _ = r.Body.Close() }()
	data, _ := io.ReadAll(r.Body)
	if r.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd %s: %s: %s", path, r.Status, data)
	}
	if resp != nil {
		return json.Unmarshal(data, resp)
	}
	return nil
}

// compactEtcd compacts etcd's history up to its current revision, so nothing older can be
// read or watched from etcd any more (410 Gone). It returns that revision.
func compactEtcd(t *testing.T) int64 {
	t.Helper()
	var status struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	// A range over an absent key just to read the header's current revision.
	if err := etcdCall("/v3/kv/range", map[string]any{"key": "AA=="}, &status); err != nil {
		t.Fatalf("reading etcd's revision: %v", err)
	}
	rev, err := strconv.ParseInt(status.Header.Revision, 10, 64)
	if err != nil {
		t.Fatalf("etcd revision %q: %v", status.Header.Revision, err)
	}
	if err := etcdCall("/v3/kv/compaction", map[string]any{"revision": rev, "physical": true}, nil); err != nil {
		t.Fatalf("compacting etcd: %v", err)
	}
	return rev
}
