package subscription

import (
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/delivery"
	"github.com/dynamic-notifier/dynamic-notifier/internal/filter"
	"github.com/dynamic-notifier/dynamic-notifier/internal/template"
	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

func planned(mutate func(*notifyv1.WatchSubscriptionSpec)) *notifyv1.WatchSubscription {
	ws := &notifyv1.WatchSubscription{ObjectMeta: metav1.ObjectMeta{Namespace: "home", Name: "sub", UID: "u1"},
		Spec: notifyv1.WatchSubscriptionSpec{
			Resource: notifyv1.ResourceRef{Version: "v1", Resource: "configmaps"},
			Sink:     &notifyv1.Sink{Log: &notifyv1.LogSink{}},
		}}
	if mutate != nil {
		mutate(&ws.Spec)
	}
	return ws
}

func dur(s string) *notifyv1.Duration { d := notifyv1.Duration(s); return &d }

func TestPlanStreams(t *testing.T) {
	withNamespaces := func(namespaces ...notifyv1.NamespaceName) *notifyv1.WatchSubscription {
		return planned(func(s *notifyv1.WatchSubscriptionSpec) { s.Namespaces = namespaces })
	}
	cases := []struct {
		name       string
		ws         *notifyv1.WatchSubscription
		namespaced bool
		want       []string
	}{
		{"own namespace by default", withNamespaces(), true, []string{"home"}},
		{"all namespaces", withNamespaces("*"), true, []string{""}},
		{"listed, sorted, unique", withNamespaces("b", "a", "b"), true, []string{"a", "b"}},
		{"cluster-scoped ignores the list", withNamespaces("a", "b"), false, []string{""}},
		{"cluster-scoped default", withNamespaces(), false, []string{""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Compile(tc.ws, Options{})
			if err != nil {
				t.Fatal(err)
			}
			got := p.Streams(tc.namespaced)
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want namespaces %q", got, tc.want)
			}
			for i, k := range got {
				if k != (watch.Key{GVR: p.GVR, Namespace: tc.want[i]}) {
					t.Fatalf("got %v, want namespaces %q", got, tc.want)
				}
			}
		})
	}
}

func TestPlanDefaultsAndDelivery(t *testing.T) {
	defaults := DeliverySettings{QueueSize: notifyv1.DefaultMaxQueueSize, Parallelism: notifyv1.DefaultParallelism,
		Timeout: notifyv1.DefaultTimeout, Retry: delivery.Retry{MaxAttempts: notifyv1.DefaultMaxAttempts,
			Backoff: notifyv1.DefaultBackoff, MaxBackoff: notifyv1.DefaultMaxBackoff}}
	cases := []struct {
		name    string
		spec    func(*notifyv1.WatchSubscriptionSpec)
		opts    Options
		want    func(d *DeliverySettings)
		wantErr string
	}{
		{name: "all defaults", want: func(*DeliverySettings) {}},
		{name: "the operator's timeout when the spec has none", opts: Options{DeliveryTimeout: 3 * time.Second},
			want: func(d *DeliverySettings) { d.Timeout = 3 * time.Second }},
		{name: "everything set", spec: func(s *notifyv1.WatchSubscriptionSpec) {
			s.Delivery = &notifyv1.DeliverySpec{Timeout: dur("2.5s"), MaxQueueSize: new(int32(5)), Parallelism: new(int32(2)),
				Retry: &notifyv1.RetryPolicy{MaxAttempts: new(int32(3)), Backoff: dur("100ms"), MaxBackoff: dur("2m")}}
		}, want: func(d *DeliverySettings) {
			*d = DeliverySettings{QueueSize: 5, Parallelism: 2, Timeout: 2500 * time.Millisecond,
				Retry: delivery.Retry{MaxAttempts: 3, Backoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Minute}}
		}},
		{name: "a cap below the default first wait lowers it", spec: func(s *notifyv1.WatchSubscriptionSpec) {
			s.Delivery = &notifyv1.DeliverySpec{Retry: &notifyv1.RetryPolicy{MaxBackoff: dur("200ms")}}
		}, want: func(d *DeliverySettings) {
			d.Retry.Backoff, d.Retry.MaxBackoff = 200*time.Millisecond, 200*time.Millisecond
		}},
		{name: "a backoff stored by a looser schema", spec: func(s *notifyv1.WatchSubscriptionSpec) {
			s.Delivery = &notifyv1.DeliverySpec{Retry: &notifyv1.RetryPolicy{Backoff: dur("9999999h")}}
		}, wantErr: "spec.delivery.retry.backoff"},
		{name: "a max backoff stored by a looser schema", spec: func(s *notifyv1.WatchSubscriptionSpec) {
			s.Delivery = &notifyv1.DeliverySpec{Retry: &notifyv1.RetryPolicy{MaxBackoff: dur("99999999999999999999s")}}
		}, wantErr: "spec.delivery.retry.maxBackoff"},
		{name: "a zero timeout", spec: func(s *notifyv1.WatchSubscriptionSpec) {
			s.Delivery = &notifyv1.DeliverySpec{Timeout: dur("0s")}
		}, wantErr: "spec.delivery.timeout"},
		{name: "coalescing and a rate limit", spec: func(s *notifyv1.WatchSubscriptionSpec) {
			s.Delivery = &notifyv1.DeliverySpec{Coalesce: notifyv1.CoalesceSpec{Window: "1.5s"},
				RateLimit: notifyv1.RateLimitSpec{EventsPerSecond: 5, Burst: 20}}
		}, want: func(d *DeliverySettings) {
			d.CoalesceWindow, d.RateLimit = 1500*time.Millisecond, delivery.RateLimit{PerSecond: 5, Burst: 20}
		}},
		{name: "a rate limit's burst defaults to its rate", spec: func(s *notifyv1.WatchSubscriptionSpec) {
			s.Delivery = &notifyv1.DeliverySpec{RateLimit: notifyv1.RateLimitSpec{EventsPerSecond: 7}}
		}, want: func(d *DeliverySettings) { d.RateLimit = delivery.RateLimit{PerSecond: 7, Burst: 7} }},
		{name: "a window stored by a looser schema", spec: func(s *notifyv1.WatchSubscriptionSpec) {
			s.Delivery = &notifyv1.DeliverySpec{Coalesce: notifyv1.CoalesceSpec{Window: "soon"}}
		}, wantErr: "spec.delivery.coalesce.window"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Compile(planned(tc.spec), tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := defaults
			tc.want(&want)
			if p.Delivery != want {
				t.Errorf("delivery = %+v, want %+v", p.Delivery, want)
			}
		})
	}
}

func TestPlanIdentityAndShape(t *testing.T) {
	p, err := Compile(planned(nil), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.ServiceAccount != "home/default" || p.Checkpoint != "home/sub/u1" {
		t.Errorf("identity = %q, checkpoint = %q", p.ServiceAccount, p.Checkpoint)
	}
	secrets, err := Compile(planned(func(s *notifyv1.WatchSubscriptionSpec) {
		s.Resource.Resource = "secrets"
		s.ServiceAccountName = "robot"
		s.Payload = &notifyv1.PayloadSpec{IncludeOldObject: true}
	}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if secrets.ServiceAccount != "home/robot" || !secrets.Shape.RedactSecrets || !secrets.Shape.NeedsOldObject() {
		t.Errorf("secrets plan = %+v", secrets)
	}
	_, err = Compile(planned(func(s *notifyv1.WatchSubscriptionSpec) { s.Filter = "object." }), Options{})
	if !errors.Is(err, filter.ErrInvalidFilter) {
		t.Errorf("a filter that does not compile: err = %v, want ErrInvalidFilter", err)
	}
}

func TestPlanTemplate(t *testing.T) {
	p, err := Compile(planned(func(s *notifyv1.WatchSubscriptionSpec) {
		s.Payload = &notifyv1.PayloadSpec{Template: `{"text": oldObject.metadata.name}`}
	}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Shape.Template == nil || !p.Shape.NeedsOldObject() || p.Shape.Plain() {
		t.Errorf("a template's shape: %+v", p.Shape)
	}
	_, err = Compile(planned(func(s *notifyv1.WatchSubscriptionSpec) {
		s.Payload = &notifyv1.PayloadSpec{Template: `{"text": }`}
	}), Options{})
	if !errors.Is(err, template.ErrInvalidTemplate) {
		t.Errorf("a template that does not compile: err = %v, want ErrInvalidTemplate", err)
	}
}

func TestSinkDefaultsCompleteTheSubscription(t *testing.T) {
	ws := planned(func(s *notifyv1.WatchSubscriptionSpec) {
		s.Delivery = &notifyv1.DeliverySpec{Parallelism: new(int32(2)), Retry: &notifyv1.RetryPolicy{MaxAttempts: new(int32(3))}}
	})
	clusterSource := SecretSource{Namespace: "operator"}
	target := Target{Source: clusterSource,
		Delivery: &notifyv1.DeliverySpec{Parallelism: new(int32(8)), MaxQueueSize: new(int32(50)),
			Retry:          &notifyv1.RetryPolicy{MaxAttempts: new(int32(9)), Backoff: dur("2s")},
			DeadLetterSink: &notifyv1.Sink{Log: &notifyv1.LogSink{}},
			Coalesce:       notifyv1.CoalesceSpec{Window: "5s"}, RateLimit: notifyv1.RateLimitSpec{EventsPerSecond: 1}},
		Payload: &notifyv1.PayloadSpec{Template: `"x"`}}
	got, deadLetterSource := WithSinkDefaults(ws, target)
	d := got.Spec.Delivery
	switch {
	case *d.Parallelism != 2, *d.Retry.MaxAttempts != 3:
		t.Errorf("the subscription's own fields win: %+v", d)
	case *d.MaxQueueSize != 50, *d.Retry.Backoff != "2s", d.DeadLetterSink == nil, d.Coalesce.Window != "5s",
		d.RateLimit.EventsPerSecond != 1:
		t.Errorf("the sink's defaults fill the rest: %+v", d)
	case got.Spec.Payload == nil || got.Spec.Payload.Template != `"x"`:
		t.Errorf("the sink's payload when the subscription sets none: %+v", got.Spec.Payload)
	case deadLetterSource.Namespace != "operator":
		t.Errorf("a dead-letter sink from a ClusterWatchSink reads its Secrets where the sink does: %+v", deadLetterSource)
	case ws.Spec.Delivery.MaxQueueSize != nil:
		t.Errorf("the subscription itself is not changed")
	}
	own, ownSource := WithSinkDefaults(ws, Target{})
	if own != ws || ownSource.Namespace != "home" {
		t.Errorf("without defaults, the subscription as it is")
	}
}
