package controller

import (
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/delivery"
	"github.com/dynamic-notifier/dynamic-notifier/internal/filter"
	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

func planned(mutate func(*notifyv1.WatchSubscriptionSpec)) *notifyv1.WatchSubscription {
	ws := &notifyv1.WatchSubscription{ObjectMeta: metav1.ObjectMeta{Namespace: "home", Name: "sub", UID: "u1"},
		Spec: notifyv1.WatchSubscriptionSpec{
			Resource: notifyv1.ResourceRef{Version: "v1", Resource: "configmaps"},
			Sink:     notifyv1.Sink{Log: &notifyv1.LogSink{}},
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
			p, err := planFor(tc.ws, planOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got := p.streams(tc.namespaced)
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
	defaults := deliverySettings{QueueSize: notifyv1.DefaultMaxQueueSize, Parallelism: notifyv1.DefaultParallelism,
		Timeout: notifyv1.DefaultTimeout, Retry: delivery.Retry{MaxAttempts: notifyv1.DefaultMaxAttempts,
			Backoff: notifyv1.DefaultBackoff, MaxBackoff: notifyv1.DefaultMaxBackoff}}
	cases := []struct {
		name    string
		spec    func(*notifyv1.WatchSubscriptionSpec)
		opts    planOptions
		want    func(d *deliverySettings)
		wantErr string
	}{
		{name: "all defaults", want: func(*deliverySettings) {}},
		{name: "the operator's timeout when the spec has none", opts: planOptions{DeliveryTimeout: 3 * time.Second},
			want: func(d *deliverySettings) { d.Timeout = 3 * time.Second }},
		{name: "everything set", spec: func(s *notifyv1.WatchSubscriptionSpec) {
			s.Delivery = &notifyv1.DeliverySpec{Timeout: dur("2.5s"), MaxQueueSize: new(int32(5)), Parallelism: new(int32(2)),
				Retry: &notifyv1.RetryPolicy{MaxAttempts: new(int32(3)), Backoff: dur("100ms"), MaxBackoff: dur("2m")}}
		}, want: func(d *deliverySettings) {
			*d = deliverySettings{QueueSize: 5, Parallelism: 2, Timeout: 2500 * time.Millisecond,
				Retry: delivery.Retry{MaxAttempts: 3, Backoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Minute}}
		}},
		{name: "a cap below the default first wait lowers it", spec: func(s *notifyv1.WatchSubscriptionSpec) {
			s.Delivery = &notifyv1.DeliverySpec{Retry: &notifyv1.RetryPolicy{MaxBackoff: dur("200ms")}}
		}, want: func(d *deliverySettings) {
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
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := planFor(planned(tc.spec), tc.opts)
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
	p, err := planFor(planned(nil), planOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.ServiceAccount != "home/default" || p.Checkpoint != "home/sub/u1" {
		t.Errorf("identity = %q, checkpoint = %q", p.ServiceAccount, p.Checkpoint)
	}
	secrets, err := planFor(planned(func(s *notifyv1.WatchSubscriptionSpec) {
		s.Resource.Resource = "secrets"
		s.ServiceAccountName = "robot"
		s.Payload = &notifyv1.PayloadSpec{IncludeOldObject: true}
	}), planOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if secrets.ServiceAccount != "home/robot" || !secrets.Shape.RedactSecrets || !secrets.Shape.NeedsOldObject() {
		t.Errorf("secrets plan = %+v", secrets)
	}
	_, err = planFor(planned(func(s *notifyv1.WatchSubscriptionSpec) { s.Filter = "object." }), planOptions{})
	if !errors.Is(err, filter.ErrInvalidFilter) {
		t.Errorf("a filter that does not compile: err = %v, want ErrInvalidFilter", err)
	}
}
