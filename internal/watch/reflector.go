package watch

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	apiwatch "k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// start runs a reflector that lists and watches the informer's scope into its view (see
// view.go), until the informer stops.
func (i *informer) start() {
	ctx := i.ctx
	ri := i.reg.client.Resource(i.key.GVR).Namespace(i.key.Namespace)
	// The lister streams its list into the view page by page (list.go) and hands the
	// reflector an empty list carrying the list's resourceVersion; the reflector's Replace
	// call then finishes the streamed list, and it watches from there. The lister opts out
	// of the streaming list (WatchList), which would gather every object before handing
	// them over, and could not resume from a checkpoint either.
	lister := listThenWatch{&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, _ metav1.ListOptions) (runtime.Object, error) {
			rv, err := i.listStreamed(ctx, ri)
			i.observe(ctx, err)
			if err != nil {
				return nil, err
			}
			list := &unstructured.UnstructuredList{}
			list.SetResourceVersion(rv)
			return list, nil
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (apiwatch.Interface, error) {
			opts.ResourceVersion = i.watchFrom(opts.ResourceVersion)
			w, err := retryBriefly(ctx, func() (apiwatch.Interface, error) { return ri.Watch(ctx, opts) })
			i.observe(ctx, err)
			return w, err
		},
	}}
	reflector := cache.NewReflectorWithOptions(lister, &unstructured.Unstructured{}, i,
		cache.ReflectorOptions{Name: i.stream, Backoff: &reconnectBackoff})
	// The reflector retries failures with backoff and reports each through klog. Those
	// failures are already in the subscription's status, so keep them out of error logs.
	quietLog := logr.Discard()
	if sink := i.log.GetSink(); sink != nil {
		quietLog = logr.New(demoteErrors{sink})
	}
	quiet := klog.NewContext(ctx, quietLog)
	i.reg.wg.Go(func() {
		defer close(i.done)
		reflector.RunWithContext(quiet)
	})
}

// reconnectBackoff paces an informer's retries after its watch fails: at most about 7.5s
// (5s plus jitter) rather than client-go's 30s plus as much again, so changes flow again
// soon after an API server outage; the jitter keeps many informers from retrying in step.
var reconnectBackoff = wait.Backoff{Duration: 500 * time.Millisecond, Cap: 5 * time.Second, Steps: 100,
	Factor: 2, Jitter: 0.5}

// listThenWatch opts out of the streaming list, so the reflector lists and then watches.
type listThenWatch struct{ *cache.ListWatch }

func (listThenWatch) IsWatchListSemanticsUnSupported() bool { return true }

// demoteErrors turns the reflector's error logs into debug lines: its failures are reported
// through State and status instead, and a CRD deleted under a running watch must not fill
// the log with 404s.
type demoteErrors struct{ logr.LogSink }

func (d demoteErrors) Error(err error, msg string, kv ...any) {
	if d.Enabled(1) {
		d.Info(1, msg, append(kv, "error", err)...)
	}
}

func (d demoteErrors) WithValues(kv ...any) logr.LogSink {
	return demoteErrors{d.LogSink.WithValues(kv...)}
}

func (d demoteErrors) WithName(name string) logr.LogSink {
	return demoteErrors{d.LogSink.WithName(name)}
}
