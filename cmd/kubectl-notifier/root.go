package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/resolve"
)

// pluginName is the binary's name, which kubectl runs for `kubectl notifier`.
const pluginName = "kubectl-notifier"

// Output formats besides text.
const (
	formatJSON = "json"
	formatYAML = "yaml"
)

// structured tells whether format is JSON or YAML rather than text.
func structured(format string) bool { return format == formatJSON || format == formatYAML }

// defaultOperatorNamespace is where the install puts the operator, and so the Secrets of
// ClusterWatchSinks (install.md).
const defaultOperatorNamespace = "dynamic-notifier-system"

// options are the flags every command shares and the clients built from them.
type options struct {
	flags   *genericclioptions.ConfigFlags
	streams genericiooptions.IOStreams
	// operatorNamespace holds the Secrets of ClusterWatchSinks.
	operatorNamespace string
}

func newRootCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &options{flags: genericclioptions.NewConfigFlags(true), streams: streams}
	cmd := &cobra.Command{
		Use:   pluginName,
		Short: "Try, follow and inspect dynamic-notifier WatchSubscriptions",
		Long: `Try, follow and inspect dynamic-notifier WatchSubscriptions.

  test    what a subscription would send for the objects that exist now (nothing is sent)
  send    one test event (type ` + testEventType + `) through a subscription's sink
  tail    follow what a subscription delivers, from its status and Events
  status  a summary per subscription: what it watches, with whom, its sink and deliveries`,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl notifier"},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.SetIn(streams.In)
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)
	o.flags.AddFlags(cmd.PersistentFlags())
	cmd.PersistentFlags().StringVar(&o.operatorNamespace, "operator-namespace", defaultOperatorNamespace,
		"the operator's namespace, which holds the Secrets of ClusterWatchSinks")
	cmd.AddCommand(newTestCommand(o), newSendCommand(o), newTailCommand(o), newStatusCommand(o))
	return cmd
}

// clients are what the commands talk to the API server with, as the user.
type clients struct {
	config    *rest.Config
	client    client.Client
	dynamic   dynamic.Interface
	kube      kubernetes.Interface
	discovery discovery.DiscoveryInterface
	// resolver is the operator's: GVR to kind and scope through discovery.
	resolver *resolve.Resolver
}

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = notifyv1.AddToScheme(s)
	return s
}

func (o *options) clients() (*clients, error) {
	cfg, err := o.flags.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = pluginName
	c, err := client.New(cfg, client.Options{Scheme: newScheme()})
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &clients{config: cfg, client: c, dynamic: dyn, kube: kube, discovery: disco,
		resolver: resolve.New(disco, 0)}, nil
}

// namespace is the namespace of the command: -n, else the kubeconfig context's, else
// default; explicit tells whether -n set it.
func (o *options) namespace() (ns string, explicit bool, err error) {
	ns, explicit, err = o.flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return "", false, err
	}
	if ns == "" {
		ns = "default"
	}
	return ns, explicit, nil
}

// loaded is a WatchSubscription read from a file, placed in its namespace.
type loaded struct {
	sub *notifyv1.WatchSubscription
	// from names where it was read, for messages.
	from string
}

// files are the objects read from -f files: the WatchSubscriptions, and the sink objects
// they may name, which stand in for the cluster's (as if they were applied).
type files struct {
	subs  []loaded
	sinks []client.Object
	// skipped names the other objects.
	skipped []string
}

// load reads the WatchSubscriptions and sink objects of files ("-" is stdin), placing
// namespaced ones in the command's namespace as kubectl apply -n would.
func (o *options) load(paths []string) (*files, error) {
	ns, explicit, err := o.namespace()
	if err != nil {
		return nil, err
	}
	out := &files{}
	for _, path := range paths {
		if err := o.loadFile(path, ns, explicit, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (o *options) loadFile(path, ns string, explicit bool, out *files) error {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(o.streams.In)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for i := 1; ; i++ {
		var raw map[string]any
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("%s: document %d: %w", path, i, err)
		}
		if len(raw) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: raw}
		var obj client.Object
		switch u.GroupVersionKind() {
		case notifyv1.GroupVersion.WithKind("WatchSubscription"):
			obj = &notifyv1.WatchSubscription{}
		case notifyv1.GroupVersion.WithKind("WatchSink"):
			obj = &notifyv1.WatchSink{}
		case notifyv1.GroupVersion.WithKind("ClusterWatchSink"):
			obj = &notifyv1.ClusterWatchSink{}
		default:
			out.skipped = append(out.skipped, fmt.Sprintf("%s %s", describeGVK(u.GroupVersionKind()), u.GetName()))
			continue
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(raw, obj, true); err != nil {
			return fmt.Errorf("%s: %s %s: %w", path, u.GetKind(), u.GetName(), err)
		}
		if _, cluster := obj.(*notifyv1.ClusterWatchSink); !cluster {
			switch {
			case obj.GetNamespace() == "":
				obj.SetNamespace(ns)
			case explicit && obj.GetNamespace() != ns:
				return fmt.Errorf("%s: %s %s is in namespace %s, not %s (-n)", path, u.GetKind(), obj.GetName(),
					obj.GetNamespace(), ns)
			}
		}
		if ws, ok := obj.(*notifyv1.WatchSubscription); ok {
			out.subs = append(out.subs, loaded{sub: ws, from: path})
		} else {
			out.sinks = append(out.sinks, obj)
		}
	}
	return nil
}

// reader reads sink objects from the files first, then from the cluster through c.
func (f *files) reader(c client.Reader) client.Reader {
	if len(f.sinks) == 0 {
		return c
	}
	return &withSinks{Reader: c, sinks: f.sinks}
}

// withSinks is a client.Reader that serves the sink objects of the files.
type withSinks struct {
	client.Reader
	sinks []client.Object
}

func (r *withSinks) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	for _, s := range r.sinks {
		if reflect.TypeOf(s) != reflect.TypeOf(obj) || client.ObjectKeyFromObject(s) != key {
			continue
		}
		reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(s.DeepCopyObject()).Elem())
		return nil
	}
	return r.Reader.Get(ctx, key, obj, opts...)
}

// sinkNames names the sink objects of the files.
func (f *files) sinkNames() []string {
	out := make([]string, len(f.sinks))
	for i, s := range f.sinks {
		if _, ok := s.(*notifyv1.ClusterWatchSink); ok {
			out[i] = "ClusterWatchSink " + s.GetName()
		} else {
			out[i] = "WatchSink " + s.GetNamespace() + "/" + s.GetName()
		}
	}
	return out
}

func describeGVK(gvk schema.GroupVersionKind) string {
	if gvk.Kind == "" {
		return "an object without kind"
	}
	return gvk.Kind
}

// outputFormat checks an -o value: text (the default), json or yaml.
func outputFormat(format string) error {
	switch format {
	case "", "text", formatJSON, formatYAML:
		return nil
	}
	return fmt.Errorf("--output %q: want text, json or yaml", format)
}
