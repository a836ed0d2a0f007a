// Package testenv starts the envtest control plane (etcd and kube-apiserver built from
// source by hack/controlplane.sh) with the project's CRDs installed. One per test package.
// It also holds the few helpers that test packages and the demo share.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// RepoRoot is the repository's top directory, found from this file's location.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// AssetsDir returns the directory with etcd and kube-apiserver: KUBEBUILDER_ASSETS when set,
// otherwise whatever hack/controlplane.sh prints (building into the cache on first use).
func AssetsDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	cmd := exec.Command(filepath.Join(RepoRoot(), "hack", "controlplane.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/controlplane.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Start starts a control plane with the CRDs under config/crd/bases installed. Extra CRD
// directories (test fixtures) may be given.
func Start(extraCRDDirs ...string) (*envtest.Environment, *rest.Config, error) {
	return StartWith(nil, extraCRDDirs...)
}

// UncachedPodTemplates are API server flags that serve podtemplates from etcd instead of
// the watch cache, so a test that compacts etcd gets the 410 Gone a long outage gives.
var UncachedPodTemplates = map[string]string{"watch-cache-sizes": "podtemplates#0"}

// StartWith is Start with extra kube-apiserver flags.
func StartWith(apiServerFlags map[string]string, extraCRDDirs ...string) (*envtest.Environment, *rest.Config, error) {
	env := &envtest.Environment{CRDDirectoryPaths: extraCRDDirs}
	args := env.ControlPlane.GetAPIServer().Configure()
	for k, v := range apiServerFlags {
		args.Set(k, v)
	}
	cfg, err := StartEnv(env)
	if err != nil {
		return nil, nil, err
	}
	return env, cfg, nil
}

// StartEnv starts a control plane the caller has set up (the API server's certificate
// directory or output, say), adding the CRDs under config/crd/bases and the binaries of
// AssetsDir.
func StartEnv(env *envtest.Environment) (*rest.Config, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	env.CRDDirectoryPaths = append([]string{filepath.Join(RepoRoot(), "config", "crd", "bases")}, env.CRDDirectoryPaths...)
	env.ErrorIfCRDPathMissing = true
	env.BinaryAssetsDirectory = assets
	if env.ControlPlaneStartTimeout == 0 && os.Getenv("KUBEBUILDER_CONTROLPLANE_START_TIMEOUT") == "" {
		// envtest's 20s is short for a kube-apiserver starting on two busy cores, where
		// several test binaries start theirs at once.
		env.ControlPlaneStartTimeout = 2 * time.Minute
	}
	cfg, err := env.Start()
	if err != nil {
		_ = env.Stop() // whatever did start (etcd, kube-apiserver) must not outlive us
		return nil, fmt.Errorf("starting envtest: %w", err)
	}
	// Tests create many objects quickly; the default client limits would serialize them.
	cfg.QPS, cfg.Burst = 500, 1000
	return cfg, nil
}

// CompactEtcd drops etcd's history up to its current revision, as its periodic compaction
// does: watches and paged lists from before it are answered 410 Gone.
func CompactEtcd(env *envtest.Environment) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{env.ControlPlane.Etcd.URL.String()}, DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer func() { _ = cli.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "compact-probe")
	if err != nil {
		return err
	}
	_, err = cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical())
	return err
}

// Buffer collects what goroutines (loggers) write while a test reads it.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// WriteKubeconfig writes an admin kubeconfig for env into dir and returns its path, so tests
// can drive the API server with kubectl as a user would.
func WriteKubeconfig(env *envtest.Environment, dir string) (string, error) {
	user, err := env.AddUser(envtest.User{Name: "test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", err
	}
	data, err := user.KubeConfig()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "kubeconfig")
	return path, os.WriteFile(path, data, 0o600)
}

// Main is a test package's TestMain: it starts one control plane, hands it to setup, runs
// the tests, stops the control plane and exits with the tests' result.
func Main(m *testing.M, setup func(env *envtest.Environment, cfg *rest.Config) error) {
	MainWith(m, nil, setup)
}

// MainWith is Main with extra kube-apiserver flags.
func MainWith(m *testing.M, apiServerFlags map[string]string, setup func(env *envtest.Environment, cfg *rest.Config) error) {
	env, cfg, err := StartWith(apiServerFlags)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := 1
	if err := setup(env, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "test setup:", err)
	} else {
		code = m.Run()
	}
	_ = env.Stop()
	os.Exit(code)
}

// RunManager runs mgr until the test ends, failing the test if it stops with an error.
func RunManager(t testing.TB, mgr manager.Manager) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager stopped: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}
