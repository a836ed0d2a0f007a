package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

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
		Use:   "kubectl-notifier",
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
	cfg.UserAgent = "kubectl-notifier"
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

// loadSubscriptions reads the WatchSubscriptions of a file ("-" is stdin), placing each
// in the command's namespace as kubectl apply -n would. Other objects (the WatchSinks
// of the samples) are reported in skipped.
func (o *options) loadSubscriptions(path string) (subs []loaded, skipped []string, err error) {
	var data []byte
	if path == "-" {
		data, err = io.ReadAll(o.streams.In)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, nil, err
	}
	ns, explicit, err := o.namespace()
	if err != nil {
		return nil, nil, err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for i := 1; ; i++ {
		var raw map[string]any
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, nil, fmt.Errorf("%s: document %d: %w", path, i, err)
		}
		if len(raw) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: raw}
		gvk := u.GroupVersionKind()
		if gvk != notifyv1.GroupVersion.WithKind("WatchSubscription") {
			skipped = append(skipped, fmt.Sprintf("%s %s", describeGVK(gvk), u.GetName()))
			continue
		}
		ws := &notifyv1.WatchSubscription{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(raw, ws, true); err != nil {
			return nil, nil, fmt.Errorf("%s: WatchSubscription %s: %w", path, u.GetName(), err)
		}
		switch {
		case ws.Namespace == "":
			ws.Namespace = ns
		case explicit && ws.Namespace != ns:
			return nil, nil, fmt.Errorf("%s: WatchSubscription %s is in namespace %s, not %s (-n)", path, ws.Name,
				ws.Namespace, ns)
		}
		subs = append(subs, loaded{sub: ws, from: path})
	}
	return subs, skipped, nil
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
	case "", "text", "json", "yaml":
		return nil
	}
	return fmt.Errorf("--output %q: want text, json or yaml", format)
}
